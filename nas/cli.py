"""Shared command-line plumbing: every command is ``main(argv) -> int`` wrapped by :func:`run`.

Domain errors become one line on stderr and exit code 2, never a traceback (STYLE.md §5, §8).
Every command builds its parser with :class:`ArgumentParser` (a bad flag is the same one line)
and parses numbers with the checked types below (:func:`positive_int`, :func:`unit_float`, ...),
so a number is validated where it is parsed, with a message naming the flag. The config layer
(``nas.search.config``) applies the same checks to values read from JSON files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from nas.errors import Fault, UserError, disk_fault


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are :class:`UserError` (one line, exit 2 in
    :func:`run`).

    argparse prints the usage block before the message and exits itself; a bad flag here reads
    like every other bad input of the project (``--help`` still shows the usage).
    """

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def defense_arg(text: str) -> tuple[str, Any]:
    """``--defense-arg KEY=VALUE`` -> ``(key, value)``, the value parsed as JSON when it is JSON
    (numbers, booleans), else kept as text; a nan or infinite number is refused."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    number = value
    if isinstance(value, str):
        try:
            number = float(value)  # "nan", "inf": not JSON, but a defense would float() them
        except ValueError:
            pass
    if isinstance(number, float) and not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{key.strip()}: must be a finite number, got {raw!r}")
    return key.strip(), value


def defense_args(pairs: Sequence[tuple[str, Any]] | None, lam: float | None) -> dict[str, Any]:
    """The ``--defense-arg`` pairs with ``--lambda`` folded in as ``lam`` (it wins)."""
    out = dict(pairs or [])
    if lam is not None:
        out["lam"] = lam
    return out


# ------------------------------------------------------------------------------------ running


#: Settings whose flag is not ``--`` + the key with dashes.
FLAG_OF = {"defense_args": "--defense-arg", "lam": "--lambda"}


def flag_of(setting: str) -> str:
    """The command-line flag of a setting key (``min_distance`` -> ``--min-distance``)."""
    return FLAG_OF.get(setting, "--" + setting.replace("_", "-"))


def message_of(exc: BaseException) -> str:
    """A domain error as the commands print it: a :class:`UserError` about one setting is
    prefixed with that setting's flag; one line."""
    if isinstance(exc, UserError) and exc.setting:
        text = f"{flag_of(exc.setting)}: {exc.message}"
    else:
        text = str(exc)
    return one_line(text) or type(exc).__name__


def one_line(text: str) -> str:
    """``text`` on one line (newlines become ``; ``)."""
    return text.strip().replace("\n", "; ")


def _domain_errors() -> tuple[type[BaseException], ...]:
    from genome import GenomeFormatError, InvalidGenome
    from nasbase.registry import PluginError, UnknownName

    return (UserError, UnknownName, PluginError, InvalidGenome, GenomeFormatError)


def _prog_name(main: Callable[..., int]) -> str:
    """``nas.genome`` for a command run as ``python -m nas.genome`` (its ``__spec__`` name)."""
    module = sys.modules.get(getattr(main, "__module__", ""), None)
    spec = getattr(module, "__spec__", None)
    return getattr(spec, "name", None) or getattr(main, "__module__", "nas")


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; turn domain errors into ``prog: error: message`` and exit code 2."""
    prog = _prog_name(main)
    try:
        return main(argv)
    except _domain_errors() as exc:
        print(f"{prog}: error: {message_of(exc)}", file=sys.stderr)
        return 2
    except Fault as exc:
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:
        what = disk_fault(exc)
        if what is None:
            raise
        print(f"{prog}: error: {what}; nothing was left half-written: free space (or make the "
              "folder writable), then run the same command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
