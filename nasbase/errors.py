"""The error types the commands turn into one line: user input (exit 2) and faults (exit 1).

Library code raises :class:`UserError` saying what is wrong and, where one setting is at
fault, naming it by its key (``setting="min_distance"``): the library never speaks of
command-line flags. The commands (``nas.cli.run``) print the message as one line on stderr,
prefixed with the setting's flag (``--min-distance``), and exit with code 2; from Python,
``str(error)`` reads ``min_distance: ...``.

A :class:`Fault` is not the user's input but the machine's state (a full disk, a read-only
folder): one line saying what happened and how to continue, exit code 1. :func:`disk_fault`
recognises the operating-system errors that are such faults.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """An error caused by the user's input; its message says what to do.

    Args:
        message: what is wrong and what to do, without the setting's name.
        setting: the key of the setting at fault (``population``, ``scheduler``, ...), if one is.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.message, self.setting = message, setting

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}" if self.setting else self.message


class Fault(Exception):
    """A fault of the machine, not of the input (exit code 1); the message says what happened
    and the command that continues."""


#: errno values of a write that failed because of where it wrote, not of what it wrote.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
               errno.EIO}
_WHAT = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
         errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
         errno.EPERM: "permission denied", errno.EFBIG: "the file is too large for the device",
         errno.EIO: "an input/output error of the device"}


def disk_fault(exc: BaseException) -> str | None:
    """``"no space left on the device writing runs/x/events.jsonl"`` when ``exc`` is an
    operating-system error of the disk (:data:`DISK_ERRNOS`), else ``None``."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return f"{_WHAT[exc.errno]}{where}"
