"""The defense registry, in the one registry shape of :mod:`nasbase.registry`.

It (:data:`DEFENSES`, :func:`register_defense`, :func:`list_defenses`,
:func:`create_defense`) lives in a module of its own so that the defense modules
register themselves by importing this module, not the package that imports them (no cycle
through ``defenses/__init__.py``; timm's models take ``register_model`` from ``_registry``
the same way). Installed plugins register defenses under the entry-point group
``nas.defenses``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nasbase.registry import Registry

if TYPE_CHECKING:
    from defenses.base import Defense

DEFENSES: Registry[type[Defense]] = Registry("defense", group="nas.defenses")


def register_defense(name: str) -> Callable[[type[Defense]], type[Defense]]:
    """Class decorator registering a :class:`~defenses.base.Defense` subclass under ``name``."""
    return DEFENSES.register_named(name)


def list_defenses(pattern: str = "*") -> list[str]:
    """Sorted names of the registered defenses matching ``pattern``."""
    return DEFENSES.names(pattern)


def create_defense(name: str, **hparams: Any) -> Defense:
    """Instantiate a registered defense; unknown names raise :class:`UnknownName`."""
    return DEFENSES.create(name, **hparams)
