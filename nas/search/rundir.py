"""The run directory: the durable state of one search (DESIGN.md §8).

```
runs/<name>/config.json      resolved configuration + package versions
runs/<name>/events.jsonl     append-only log, one JSON line per event, flushed + fsynced
runs/<name>/population.json  current population (temp file, then os.replace)
runs/<name>/children/<id>/   genome.json, metrics.json, weights.pt (written by workers)
runs/<name>/final.json       refined final population with its test-split metrics
runs/<name>/.lock            held (flock) by the one process running or resuming the run
```

A run folder comes into being in one step: :func:`create_run` builds it under a hidden
temporary name (``.<name>.new-<pid>``) and renames it into place, so a kill during creation
leaves no half-made run (only a hidden folder the next creation of that name removes). The
process that runs or resumes a run holds an exclusive ``flock`` on ``.lock`` for the whole
run; the operating system releases it when the process dies, so a kill never leaves a stale
lock, and a second process on the same run is refused (:class:`RunLocked`).

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

import errno
import fcntl
import json
import os
import platform
import shutil
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nasbase.files import (
    fsync_dir,
    kill_point,
    remove_stale_temporaries,
    write_text_atomically,
)

EVENTS = "events.jsonl"
CONFIG = "config.json"
POPULATION = "population.json"
FINAL = "final.json"
CHILDREN = "children"
LOCK = ".lock"

#: Fields that differ between two identical searches (wall-clock); ignored when comparing.
TIMING_KEYS = frozenset({"time", "seconds", "elapsed", "eta"})
#: Packages whose versions are recorded in config.json.
PACKAGES = ("torch", "torchvision", "deap", "numpy", "networkx", "joblib")


class RunCorrupt(UserError):
    """The run directory cannot be read safely (corrupt log, mismatching replay)."""


class RunLocked(UserError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock``, held until :meth:`release` or process death."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def release(self) -> None:
        """Give the lock up (closing the file releases the flock)."""
        if not self._fh.closed:
            self._fh.close()


def lock_run(path: str | os.PathLike[str]) -> RunLock:
    """Take the run directory's exclusive lock without waiting.

    Raises:
        RunLocked: another process holds it (its pid is named when known).
    """
    path = Path(path)
    fh = open(path / LOCK, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.seek(0)
        holder = fh.read().strip()
        fh.close()
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise RunLocked(f"run directory {path} is in use by another process{who}; "
                        "wait for it to finish or stop it, then --resume") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return RunLock(fh)


def check_run_name(name: str) -> str:
    """A run name is one folder name inside ``--run-dir`` (no separator, no ``..``, no leading dot).

    Raises:
        UserError: about the setting ``name``.
    """
    bad = (not name or name in (".", "..") or name.startswith(".") or "\0" in name
           or "/" in name or (os.altsep is not None and os.altsep in name) or os.sep in name)
    if bad:
        raise UserError(f"{name!r} must be one folder name inside the parent folder of runs "
                        "(no '/', no '..', not starting with '.')", setting="name")
    return name


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    write_text_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
    if kind == "reevaluated":
        return (kind, event["id"], event["draw"])
    if kind == "replacement":
        return (kind, event["generation"], event["id"])
    if kind in ("generation_finished", "immigrants"):
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
            raise RunCorrupt(f"{path}: line {number} is corrupt; "
                             "the log cannot be replayed") from None
        events.append(event)
    return events, torn


class EventLog:
    """Append-only, fsynced JSON-lines log with idempotent, replay-checked :meth:`emit`."""

    def __init__(self, path: str | os.PathLike[str], events: Iterable[dict[str, Any]] = (),
                 *, lock: RunLock | None = None) -> None:
        self.path = Path(path)
        self.events = list(events)
        self._by_key = {k: e for e in self.events if (k := event_key(e)) is not None}
        self._fh = open(self.path, "a", encoding="utf-8")
        self.lock = lock

    def close(self) -> None:
        """Close the file handle and release the run's lock (when this log holds it)."""
        self._fh.close()
        if self.lock is not None:
            self.lock.release()

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
        kill_point(f"event:{event['type']}:{len(self.events)}")
        self.events.append(event)
        if key is not None:
            self._by_key[key] = event
        return True


def create_run(path: str | os.PathLike[str], config: dict[str, Any]) -> EventLog:
    """Create a new run directory holding ``config.json`` and an empty log, in one step.

    The folder is built under ``.<name>.new-<pid>`` beside ``path`` (locked by this process)
    and renamed into place, so ``path`` either does not exist or is a complete run. Leftovers
    of a creation that was killed (unlocked ``.<name>.new-*`` folders) are removed first.

    Returns:
        The run's event log; it holds the run's lock until it is closed.

    Raises:
        UserError: ``path`` exists and is not empty (a run is never overwritten), or is a file.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"run directory {path} already exists; "
                        f"use --resume {path} or another --name")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_killed_builds(path)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    lock = lock_run(tmp)
    try:
        kill_point("create:locked")
        (tmp / CHILDREN).mkdir()
        write_json(tmp / CONFIG, {"config": config, "versions": package_versions()})
        kill_point("create:config")
        with open(tmp / EVENTS, "w") as fh:
            os.fsync(fh.fileno())
        kill_point("create:events")
        try:
            os.rename(tmp, path)  # replaces an empty directory; fails on a non-empty one
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise UserError(f"run directory {path} already exists; resume it or choose "
                                "another name", setting="name") from None
            raise
        fsync_dir(path.parent)
        kill_point("create:renamed")
    except BaseException:
        lock.release()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EventLog(path / EVENTS, lock=lock)


def _remove_killed_builds(path: Path) -> None:
    """Remove ``.<name>.new-*`` folders no live process holds (a creation killed midway)."""
    prefix = f".{path.name}.new-"
    for entry in path.parent.iterdir():
        if not (entry.name.startswith(prefix) and entry.is_dir()):
            continue
        try:
            lock = lock_run(entry)
        except (RunLocked, OSError):
            continue  # another process is creating this run right now
        lock.release()
        shutil.rmtree(entry, ignore_errors=True)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The resolved configuration stored in a run directory.

    Raises:
        UserError: the directory or its config.json is missing, or config.json is not a run's
            configuration.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist" if not path.exists()
                        else f"{path} is not a run directory (not a folder)")
    if not (path / CONFIG).is_file():
        raise UserError(f"{path} is not a run directory (no {CONFIG})")
    stored = read_json(path / CONFIG)
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise RunCorrupt(f"{path / CONFIG} does not hold a run configuration "
                         "(expected an object with a \"config\" object)")
    return stored["config"]


def open_run(path: str | os.PathLike[str], *, log=print) -> EventLog:
    """Open an existing run for resuming: take its lock, read the log, drop a torn last line.

    The torn bytes are kept in ``events.jsonl.torn`` (for inspection) before the log is
    truncated to its last complete line; the child it described is simply run again. Temporary
    files a killed process left behind (``.<file>.tmp<pid>``) are removed.

    Raises:
        RunLocked: another process is running or resuming this run.
    """
    path = Path(path)
    events_path = path / EVENTS
    if not events_path.is_file():
        raise UserError(f"{path} is not a run directory (no {EVENTS})")
    lock = lock_run(path)
    try:
        remove_killed_writes(path)
        events, torn = read_events(events_path)
        if torn:
            with open(path / f"{EVENTS}.torn", "ab") as fh:
                fh.write(torn)
            size = events_path.stat().st_size - len(torn)
            with open(events_path, "r+b") as fh:
                fh.truncate(size)
                os.fsync(fh.fileno())
            log(f"dropped a torn last line of {events_path} ({len(torn)} bytes); it will be re-run")
        return EventLog(events_path, events, lock=lock)
    except BaseException:
        lock.release()
        raise


def remove_killed_writes(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of atomic writes a kill interrupted in a run folder: the run
    folder, ``children/<id>/`` and ``children/<id>/refined/``. Only while holding the run's
    lock: no other process writes there then."""
    path = Path(path)
    return remove_stale_temporaries(
        [path, *(path / CHILDREN).glob("*"), *(path / CHILDREN).glob("*/refined")],
        any_writer=True)


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
