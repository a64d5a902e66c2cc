"""The run directory: the durable state of one search (DESIGN.md §8).

```
runs/<name>/config.json      resolved configuration + package versions
runs/<name>/events.jsonl     append-only log, one JSON line per event, flushed + fsynced
runs/<name>/population.json  current population (temp file, then os.replace)
runs/<name>/children/<id>/   genome.json, metrics.json, weights.pt (written by workers)
runs/<name>/final.json       refined final population with its test-split metrics
```

The log is the single source of truth. Every event has a *key* (``child_finished`` and
``refined``: the child id; ``replacement``: generation + child id; ``generation_finished``:
the generation; ``run_finished``: the run). A resume replays the search deterministically
and :meth:`EventLog.emit` skips events whose key is already in the log (after checking that
the replayed event agrees with the logged one, so a log can never silently diverge from the
algorithm that reads it).

A crash can tear at most the last line (one ``write`` of a whole line, then ``fsync``).
:func:`read_events` drops a last line without its newline (or that does not parse) and
reports it; any other unreadable line is corruption and raises :class:`RunCorrupt`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from nas.cli import UserError

EVENTS = "events.jsonl"
CONFIG = "config.json"
POPULATION = "population.json"
FINAL = "final.json"
CHILDREN = "children"

#: Fields that differ between two identical searches (wall-clock); ignored when comparing.
TIMING_KEYS = frozenset({"time", "seconds", "elapsed", "eta"})
#: Packages whose versions are recorded in config.json.
PACKAGES = ("torch", "torchvision", "deap", "numpy", "networkx", "joblib")


class RunCorrupt(UserError):
    """The run directory cannot be read safely (corrupt log, mismatching replay)."""


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync and ``os.replace``.

    Readers see either the old or the new content, never a half-written file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a malformed file raises :class:`RunCorrupt` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunCorrupt(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a result, plus the Python version."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover
            out[name] = "missing"
    return out


def event_key(event: dict[str, Any]) -> tuple[Any, ...] | None:
    """The identity of an event in the log, or ``None`` for events that are never deduplicated."""
    kind = event["type"]
    if kind in ("child_finished", "refined"):
        return (kind, event["id"])
    if kind == "replacement":
        return (kind, event["generation"], event["id"])
    if kind == "generation_finished":
        return (kind, event["generation"])
    if kind == "run_finished":
        return (kind,)
    return None


def strip_timing(obj: Any) -> Any:
    """``obj`` with every timing field (:data:`TIMING_KEYS`) removed, recursively."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


def read_events(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], bytes]:
    """Parse ``events.jsonl``.

    Returns:
        ``(events, torn)``: the parsed events and the bytes of a torn last line (``b""`` when
        the file ends cleanly). A torn line is one a crash interrupted: the last line when it
        lacks its newline or does not parse.

    Raises:
        RunCorrupt: a line other than the last is not a JSON object with a ``type``.
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    events: list[dict[str, Any]] = []
    torn = tail
    for number, raw in enumerate(lines, start=1):
        try:
            event = json.loads(raw)
            if not isinstance(event, dict) or "type" not in event:
                raise ValueError("not an event object")
        except ValueError:
            if number == len(lines) and not tail:
                torn = raw + b"\n"
                break
            raise RunCorrupt(f"{path}: line {number} is corrupt; the log cannot be replayed") from None
        events.append(event)
    return events, torn


class EventLog:
    """Append-only, fsynced JSON-lines log with idempotent, replay-checked :meth:`emit`."""

    def __init__(self, path: str | os.PathLike[str], events: Iterable[dict[str, Any]] = ()) -> None:
        self.path = Path(path)
        self.events = list(events)
        self._by_key = {k: e for e in self.events if (k := event_key(e)) is not None}
        self._fh = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        """Close the file handle."""
        self._fh.close()

    def has(self, key: tuple[Any, ...]) -> bool:
        """Whether an event with this key is already in the log."""
        return key in self._by_key

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        """The logged event with this key, or ``None``."""
        return self._by_key.get(key)

    def emit(self, event: dict[str, Any]) -> bool:
        """Append ``event`` (``type`` first, a ``time`` stamp added) unless already logged.

        Returns:
            True when the line was written, False when the log already held it.

        Raises:
            RunCorrupt: the log holds an event with the same key but different content, i.e.
                the replayed search disagrees with the recorded one.
        """
        key = event_key(event)
        if key is not None and key in self._by_key:
            old = self._by_key[key]
            if strip_timing(old) != strip_timing(event):
                raise RunCorrupt(f"{self.path}: replay disagrees with the log at {key}")
            return False
        line = json.dumps({"type": event["type"], **event, "time": round(time.time(), 3)})
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.events.append(event)
        if key is not None:
            self._by_key[key] = event
        return True


def create_run(path: str | os.PathLike[str], config: dict[str, Any]) -> EventLog:
    """Create a new run directory holding ``config.json`` and an empty log.

    Raises:
        UserError: ``path`` exists and is not empty (a run is never overwritten).
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise UserError(f"run directory {path} already exists; use --resume {path} or another --name")
    (path / CHILDREN).mkdir(parents=True, exist_ok=True)
    write_json(path / CONFIG, {"config": config, "versions": package_versions()})
    (path / EVENTS).touch()
    return EventLog(path / EVENTS)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The resolved configuration stored in a run directory.

    Raises:
        UserError: the directory or its config.json is missing.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist")
    if not (path / CONFIG).is_file():
        raise UserError(f"{path} is not a run directory (no {CONFIG})")
    return read_json(path / CONFIG)["config"]


def open_run(path: str | os.PathLike[str], *, log=print) -> EventLog:
    """Open an existing run for resuming: read the log, drop a torn last line.

    The torn bytes are kept in ``events.jsonl.torn`` (for inspection) before the log is
    truncated to its last complete line; the child it described is simply run again.
    """
    path = Path(path)
    events_path = path / EVENTS
    if not events_path.is_file():
        raise UserError(f"{path} is not a run directory (no {EVENTS})")
    events, torn = read_events(events_path)
    if torn:
        with open(path / f"{EVENTS}.torn", "ab") as fh:
            fh.write(torn)
        size = events_path.stat().st_size - len(torn)
        with open(events_path, "r+b") as fh:
            fh.truncate(size)
            os.fsync(fh.fileno())
        log(f"dropped a torn last line of {events_path} ({len(torn)} bytes); it will be re-run")
    return EventLog(events_path, events)


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-able configs (``key: old -> new``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(f"{name}: {old.get(key, '<unset>')!r} -> {new.get(key, '<unset>')!r}")
            else:
                out += config_diff(old[key], new[key], name)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def child_dir(run: str | os.PathLike[str], child_id: str) -> Path:
    """``runs/<name>/children/<id>`` (created)."""
    out = Path(run) / CHILDREN / child_id
    out.mkdir(parents=True, exist_ok=True)
    return out
