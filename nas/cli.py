"""Shared command-line plumbing: every command is ``main(argv) -> int`` wrapped by :func:`run`.

Domain errors become one line on stderr and exit code 2, never a traceback (STYLE.md §5, §8).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """An error caused by the user's input; its message says what to do."""


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
