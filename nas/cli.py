"""Shared command-line plumbing: every command is ``main(argv) -> int`` wrapped by :func:`run`.

Domain errors become one line on stderr and exit code 2, never a traceback (STYLE.md §5, §8).
Every command builds its parser with :class:`ArgumentParser` (a bad flag is the same one line)
and parses numbers with the checked types below (:func:`positive_int`, :func:`unit_float`, ...),
so a number is validated where it is parsed, with a message naming the flag. The config layer
(``nas.config``) applies the same checks to values read from JSON files.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn


class UserError(Exception):
    """An error caused by the user's input; its message says what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are :class:`UserError` (one line, exit 2 in :func:`run`).

    argparse prints the usage block before the message and exits itself; a bad flag here reads
    like every other bad input of the project (``--help`` still shows the usage).
    """

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


# ------------------------------------------------------------------------- checked number types
# Each takes the flag's text (or a value read from a JSON file), returns the number, and raises
# argparse.ArgumentTypeError with a message argparse prefixes with the flag's name.


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}")


def _real(value: Any) -> float:
    if isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    else:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}")
    if not math.isfinite(out):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return out


def positive_int(value: Any) -> int:
    """An integer >= 1 (epochs, sizes, workers, ...)."""
    out = _integer(value)
    if out < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return out


def nonneg_int(value: Any) -> int:
    """An integer >= 0 (seeds, counts where 0 means none)."""
    out = _integer(value)
    if out < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value!r}")
    return out


def finite_float(value: Any) -> float:
    """Any finite number (no nan, no inf)."""
    return _real(value)


def positive_float(value: Any) -> float:
    """A finite number > 0 (learning rate, step size)."""
    out = _real(value)
    if out <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value!r}")
    return out


def nonneg_float(value: Any) -> float:
    """A finite number >= 0 (distances, loss weights)."""
    out = _real(value)
    if out < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value!r}")
    return out


def unit_float(value: Any) -> float:
    """A finite number in [0, 1] (attack budgets in pixel space)."""
    out = _real(value)
    if not 0.0 <= out <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {value!r}")
    return out


def check_finite_args(pairs: Any, flag: str = "--defense-arg") -> None:
    """Raise :class:`UserError` when a numeric ``(key, value)`` pair is nan or infinite."""
    for key, value in pairs:
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} {key}: must be a finite number, got {value!r}")


def check_out_dir(path: Any, flag: str = "--out") -> None:
    """Raise :class:`UserError` when ``path`` cannot become a folder (it, or a parent, is a file).

    Called before any work, so a bad ``--out`` costs nothing (no training, no half-written files).
    """
    from pathlib import Path

    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is a file" if folder == path else f"is inside {folder}, a file"
                raise UserError(f"{flag} {path} {what}; it must be a folder")
            return


# ------------------------------------------------------------------------------------ running


def _domain_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [UserError]
    try:
        from defenses.registry import UnknownName

        errors.append(UnknownName)
    except ImportError:  # pragma: no cover
        pass
    try:
        from genome import GenomeFormatError, InvalidGenome

        errors += [InvalidGenome, GenomeFormatError]
    except ImportError:  # pragma: no cover - genome not importable yet
        pass
    return tuple(errors)


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
        msg = str(exc).strip().replace("\n", "; ") or type(exc).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
