"""Checked number types: the one place a number from a flag or a config file is validated.

Each function takes the text of a flag (or a value read from a JSON file), returns the number,
and raises ``argparse.ArgumentTypeError`` with a message; argparse prefixes it with the flag's
name, and ``nas.search.config.check_values`` with the setting's key. Commands use them as
``type=`` of their flags; the config layer applies them to values read from JSON files.
"""

from __future__ import annotations

import argparse
import math
from typing import Any


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


def int_list(item: Any, what: str, *, distinct_sorted: bool = False) -> Any:
    """A flag type for comma-separated integers, each checked by ``item`` (``positive_int``,
    ``nonneg_int``): ``int_list(nonneg_int, "seeds such as 0,1,2")("0,1") == [0, 1]``. With
    ``distinct_sorted`` the list is sorted and duplicates dropped (epoch counts)."""

    def parse(text: Any) -> list[int]:
        try:
            values = [item(v) for v in str(text).split(",")]
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"expected {what}: {exc}") from None
        return sorted(set(values)) if distinct_sorted else values

    return parse


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


def check_out_dir(path: Any, setting: str = "out") -> None:
    """Raise :class:`nas.errors.UserError` when ``path`` cannot become a folder (it, or a
    parent, is a file).

    Called before any work, so a bad output folder costs nothing (no training, no
    half-written files).
    """
    from pathlib import Path

    from nasbase.errors import UserError

    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is a file" if folder == path else f"is inside {folder}, a file"
                raise UserError(f"{path} {what}; it must be a folder", setting=setting)
            return
