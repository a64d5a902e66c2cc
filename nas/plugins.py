"""Plugins: a user's package that registers datasets, references or defenses.

Two ways in (docs/extending.md):

- **entry points** of an installed distribution, groups ``nas.datasets``, ``nas.references``
  and ``nas.defenses`` (``[project.entry-points."nas.defenses"] mine = "mypkg.defense"``): each
  registry imports its group the first time a name is missing or the names are listed
  (:meth:`nasbase.registry.Registry.load_plugins`), in every process, worker processes included;
- **``--plugin pkg.module``** (repeatable; ``plugins`` in a config file or the API): imported by
  :func:`load_plugins` before any name is looked up. The modules are part of the fitness
  settings, so they are recorded in the run's ``config.json`` and every worker imports them
  before it evaluates a child (``nas.evaluation.fitness.prepare``).

A plugin that fails to import is one line (exit 2 from the commands). :func:`listing` is what
``python -m nas.evolve --list`` prints: every registered name and where it came from.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from nas.errors import UserError
from nasbase.registry import Registry, registering_from

_LOADED: set[str] = set()


def load_plugins(modules: Iterable[str]) -> None:
    """Import each ``--plugin`` module once; what it registers is listed as ``--plugin <mod>``.

    Raises:
        UserError: a module that fails to import (one line: the module and the error).
    """
    for name in modules:
        if name in _LOADED:
            continue
        with registering_from(f"--plugin {name}"):
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - any failure of a plugin is one line
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise UserError(f"plugin {name} (--plugin) failed to import: "
                                f"{type(exc).__name__}: {detail}") from None
        _LOADED.add(name)


def registries() -> dict[str, Registry[Any]]:
    """The plugin kinds by title: datasets, references, defenses, attacks."""
    from defenses import DEFENSES
    from nas.evaluation.attacks import ATTACKS
    from nas.evaluation.data import DATASETS
    from nas.evaluation.references import REFERENCES

    return {"datasets": DATASETS, "references": REFERENCES, "defenses": DEFENSES,
            "attacks": ATTACKS}


def listing() -> str:
    """Every registered name with its origin, and the resolvable name forms, per kind."""
    lines: list[str] = []
    for title, registry in registries().items():
        group = f" (entry-point group {registry.group})" if registry.group else ""
        lines.append(f"{title}{group}:")
        names = registry.names()
        width = max([len(n) for n in names] + [len(u) for u in registry.resolvers().values()])
        lines += [f"  {n:<{width}}  {registry.origin(n)}" for n in names]
        lines += [f"  {u:<{width}}  built-in (a name form)" for u in registry.resolvers().values()]
    return "\n".join(lines)
