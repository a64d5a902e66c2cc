"""The one error type of user input, raised by library and commands alike.

Library code raises :class:`UserError` saying what is wrong with a value; the commands
(``nas.cli.run``) print it as one line on stderr and exit with code 2.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; its message says what to do."""
