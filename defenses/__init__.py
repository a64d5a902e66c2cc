"""Training objectives ("defenses"), one registry, one verb each.

``create_defense("gm", lam=1.0)`` builds one; ``list_defenses()`` lists them. Importing this
package registers every defense module below.
"""

from __future__ import annotations

from typing import Any

from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import Registry, UnknownName

DEFENSES: Registry[type[Defense]] = Registry("defense")


def register_defense(name: str):
    """Class decorator registering a :class:`Defense` subclass under ``name``."""

    def decorator(cls: type[Defense]) -> type[Defense]:
        cls.name = name
        return DEFENSES.register(name)(cls)

    return decorator


def list_defenses(pattern: str = "*") -> list[str]:
    """Sorted names of the registered defenses matching ``pattern``."""
    return DEFENSES.names(pattern)


def create_defense(name: str, **hparams: Any) -> Defense:
    """Instantiate a registered defense; unknown names raise :class:`UnknownName`."""
    return DEFENSES.get(name)(**hparams)


# Registration happens by importing the modules (STYLE.md §1). Keep this list sorted.
from defenses import (  # noqa: E402
    cldl,  # noqa: F401
    gm,  # noqa: F401
    ncen,  # noqa: F401
    ot,  # noqa: F401
    plain,  # noqa: F401
    stylized,  # noqa: F401
)

__all__ = [
    "Batch",
    "Defense",
    "DefenseOutput",
    "TrainContext",
    "UnknownName",
    "create_defense",
    "list_defenses",
    "register_defense",
]
