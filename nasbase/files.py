"""Atomic file writes: the one implementation every package of the project uses.

A file is written to a temporary name beside its destination (``.<name>.tmp<pid>``), flushed
and fsynced, renamed into place with ``os.replace`` and the folder fsynced, so a reader sees
the old content or the new one, never half a file, and a kill at any instant leaves at most a
temporary file (which a failed write removes itself; :func:`remove_stale_temporaries` removes
those of dead processes). ``defenses`` (which imports nothing of ``nas``) receives the writer
through the training context (``TrainContext.write_file``).

Durability is tested by killing processes at named points: ``NAS_TEST_KILL_AT=<name>`` makes
:func:`kill_point` ``<name>`` SIGKILL its process (read once at import, so production pays
one string comparison per point).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

Writer = Callable[[BinaryIO], None]
_KILL_AT = os.environ.get("NAS_TEST_KILL_AT", "")


def kill_point(name: str) -> None:
    """SIGKILL this process here when ``NAS_TEST_KILL_AT`` names this point (tests only)."""
    if _KILL_AT and _KILL_AT == name:
        os.kill(os.getpid(), signal.SIGKILL)


def temp_name(path: str | os.PathLike[str]) -> Path:
    """The temporary file a write of ``path`` by this process uses: ``.<name>.tmp<pid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike[str], write: Writer, *, kill_name: str = "",
                     before_rename: Callable[[], None] | None = None) -> None:
    """``write(file)`` into :func:`temp_name` of ``path``, fsync, rename, fsync the folder.

    Creates ``path``'s folder and first removes the temporaries of ``path`` that dead
    processes left. On any error (or interrupt) the temporary file is removed and ``path`` is
    untouched. ``kill_name`` names the test kill point ``<kill_name>:before-rename``;
    ``before_rename`` runs at that instant too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([path.parent], of=path.name)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if kill_name:
            kill_point(f"{kill_name}:before-rename")
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # say which file it was
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomically(path: str | os.PathLike[str], text: str, **kw: Any) -> None:
    """:func:`write_atomically` of ``text`` encoded as UTF-8."""
    write_atomically(path, lambda fh: fh.write(text.encode("utf-8")), **kw)


def save_torch_atomically(obj: Any, path: str | os.PathLike[str], **kw: Any) -> None:
    """``torch.save`` through :func:`write_atomically`.

    torch reports a failed write of its zip container as a ``RuntimeError`` ("unexpected
    pos"); when the device is full that is turned into the ``OSError`` it is, so callers see
    one kind of disk error.
    """
    import torch

    try:
        write_atomically(path, lambda fh: torch.save(obj, fh), **kw)
    except RuntimeError as exc:
        if "unexpected pos" not in str(exc) and "failed writing" not in str(exc):
            raise
        code = errno.ENOSPC if _free_bytes(Path(path).parent) < _NEARLY_FULL else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from exc


#: Free bytes under which a failed write is taken for a full device.
_NEARLY_FULL = 64 << 20


def _free_bytes(folder: Path) -> int:
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def remove_stale_temporaries(folders: Iterable[str | os.PathLike[str]], *,
                             of: str | None = None, any_writer: bool = False) -> list[Path]:
    """Remove the ``.<file>.tmp<pid>`` files in ``folders`` (only of the file named ``of``,
    when given) whose writing process no longer runs: writes a kill interrupted.

    ``any_writer``: those of every other process, alive or not (only for a caller that
    holds a lock no other writer of those folders can hold: a run's lock).
    """
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        pattern = f".{of}.tmp*" if of else ".*.tmp*"
        for entry in folder.glob(pattern):
            pid = entry.name.rpartition(".tmp")[2]
            if (pid.isdigit() and int(pid) != os.getpid()
                    and (any_writer or not _alive(int(pid)))):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
