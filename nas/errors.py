"""The one error type of user input, raised by library and commands alike.

Library code raises :class:`UserError` saying what is wrong and, where one setting is at
fault, naming it by its key (``setting="min_distance"``): the library never speaks of
command-line flags. The commands (``nas.cli.run``) print the message as one line on stderr,
prefixed with the setting's flag (``--min-distance``), and exit with code 2; from Python,
``str(error)`` reads ``min_distance: ...``.
"""

from __future__ import annotations


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
