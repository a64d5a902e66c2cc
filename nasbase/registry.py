"""One registry shape for every plugin kind (defenses, references, datasets, attacks).

Modelled on torchvision's ``models/_api.py`` and timm's ``_registry.py``:
``register(name)`` is a decorator that raises on a duplicate name, ``names(pattern)`` lists
names matching a glob, ``get(name)`` raises :class:`UnknownName` listing the sorted valid
names.

Plugins (docs/extending.md): a registry made with ``group="nas.defenses"`` loads the
``importlib.metadata`` entry points of that group the first time a name is missing or the
names are listed, so a user's installed package registers itself in every process (worker
processes included) without being named anywhere. A registry also takes *resolvers*: a
function per prefix that turns ``prefix:rest`` into an entry on demand (``folder:DIR`` datasets,
``torchvision:NAME`` references). Each entry remembers where it came from (:meth:`origin`):
``built-in``, ``entry point <dist>`` or the module that registered it (``--plugin <module>``).
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name that is not registered; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}; valid: {', '.join(self.valid)}"


class PluginError(ImportError):
    """A plugin (entry point or ``--plugin`` module) that fails to import; one-line message."""


#: Where the entries registered right now come from (set while a plugin is imported).
_ORIGIN: list[str] = []

#: Top-level packages of this project: what they register is ``built-in``.
_OWN_PACKAGES = frozenset({"defenses", "nas", "nasbase", "genome", "search_spaces"})


@contextlib.contextmanager
def registering_from(origin: str) -> Iterator[None]:
    """Entries registered inside this block are listed as coming from ``origin``."""
    _ORIGIN.append(origin)
    try:
        yield
    finally:
        _ORIGIN.pop()


def _origin_of(obj: Any) -> str:
    """``built-in`` for objects of this project (whatever imported them), else the plugin
    being loaded, else ``module <name>``."""
    target = obj[-1] if isinstance(obj, tuple) and obj else obj
    module = getattr(target, "__module__", None) or ""
    if module.split(".")[0] in _OWN_PACKAGES:
        return "built-in"
    return _ORIGIN[-1] if _ORIGIN else f"module {module}"


def entry_point_origin(dist: str) -> str:
    """The origin string of entries an installed distribution registers."""
    return f"entry point {dist}"


class Registry(Generic[T]):
    """A name -> object table filled by a decorator at import time.

    Args:
        kind: what the entries are (``defense``), for messages.
        group: the entry-point group plugins register under (``nas.defenses``), or ``None``.
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind, self.group = kind, group
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._resolvers: dict[str, tuple[Callable[[str], T], str]] = {}
        self._plugins_loaded = group is None
        self._loaded_points: set[tuple[str, str]] = set()

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name raises ValueError."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if ":" in name:
                raise ValueError(f"{self.kind} name {name!r} must not contain ':' (a prefix)")
            self._entries[name] = obj
            self._origins[name] = _origin_of(obj)
            return obj

        return decorator

    def register_named(self, name: str) -> Callable[[T], T]:
        """Class decorator: registers the class under ``name`` and sets its ``name``
        attribute (a defense or a transform knows the name it was created by)."""

        def decorator(cls: T) -> T:
            cls.name = name  # type: ignore[attr-defined]
            return self.register(name)(cls)

        return decorator

    def create(self, name: str, **kwargs: Any) -> Any:
        """An instance of the class registered under ``name``: ``get(name)(**kwargs)``."""
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def add_resolver(self, prefix: str, resolve: Callable[[str], T], usage: str) -> None:
        """Make ``prefix:rest`` names resolve to ``resolve(rest)`` (raising on bad input);
        ``usage`` (``folder:DIR``) is how listings and messages show it."""
        if prefix in self._resolvers:
            raise ValueError(f"{self.kind} prefix {prefix!r} is already registered")
        self._resolvers[prefix] = (resolve, usage)

    def resolvers(self) -> dict[str, str]:
        """``{prefix: usage}`` of the resolvable name forms."""
        return {p: usage for p, (_, usage) in sorted(self._resolvers.items())}

    def load_plugins(self, *, rescan: bool = False) -> None:
        """Import the entry points of :attr:`group` not imported yet: on the first call, and
        again with ``rescan`` (a missing name: a package installed since, e.g. in a long-lived
        worker process). Raises :class:`PluginError`."""
        if self.group is None or (self._plugins_loaded and not rescan):
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
            if (ep.name, ep.value) in self._loaded_points:
                continue
            self._loaded_points.add((ep.name, ep.value))
            dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
            with registering_from(entry_point_origin(dist)):
                try:
                    ep.load()
                except Exception as exc:  # noqa: BLE001 - any failure is one line
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise PluginError(f"plugin {ep.name} = {ep.value} (entry point of {dist}, "
                                      f"group {self.group}) failed to import: "
                                      f"{type(exc).__name__}: {detail}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the glob ``pattern``."""
        self.load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def origin(self, name: str) -> str:
        """Where ``name`` came from: ``built-in``, ``entry point <dist>``, ``--plugin <mod>``."""
        self.get(name)
        return self._origins.get(name, "built-in")

    def get(self, name: str) -> T:
        """The object registered under ``name`` (or resolved from ``prefix:rest``); raises
        :class:`UnknownName` otherwise."""
        if name in self._entries:
            return self._entries[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._resolvers:
            return self._resolvers[prefix][0](rest)
        self.load_plugins(rescan=True)
        if name in self._entries:
            return self._entries[name]
        valid = self.names() + [usage for _, usage in self._resolvers.values()]
        raise UnknownName(self.kind, name, valid)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        prefix, sep, _ = name.partition(":")
        return name in self._entries or bool(sep and prefix in self._resolvers)
