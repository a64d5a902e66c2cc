"""The on-disk caches of the hot path: stable keys, tensor digests and all-or-nothing entries.

A cache entry is **one file** holding its tensors and its metadata (``torch.save`` of a plain
dict, read back with ``weights_only=True``):

``{"format": 1, "key": <what it was computed from>, "meta": {...}, "tensors": {...},
"checksum": <sha256 of the tensors>}``

It is written to a temporary file in the same folder, flushed and fsynced, renamed into place
and the folder fsynced (:func:`save_entry`), so a reader sees all of an entry or none of it,
whatever moment a process is killed at. :func:`load_entry` returns ``None`` for a missing
entry and also for a corrupt one (unreadable, truncated, another layout, checksum or key
mismatch): it then logs one line, deletes the file and the caller rebuilds the artefact.

Keys name what an artefact was computed from: :func:`tensor_digest` of the exact tensors
(images *and* labels) plus every setting that changes the result, so two runs on different
images never share an entry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nasbase.files import save_torch_atomically

FORMAT = 1

def digest(obj: Any, length: int = 16) -> str:
    """Stable hex key of a JSON-able object (sorted keys): what a cached artefact depends on."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tensor_digest(*tensors: torch.Tensor, length: int = 16) -> str:
    """SHA-256 (hex prefix) of the exact contents of ``tensors``: dtype, shape and bytes of each."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (e.g. ``("reference", seed)``), independent streams."""
    return int(digest(list(parts), 8), 16) & 0x7FFFFFFF


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    names = sorted(tensors)
    return digest(names) + tensor_digest(*(tensors[n] for n in names))


def save_entry(path: Path, key: dict[str, Any], tensors: dict[str, torch.Tensor],
               meta: dict[str, Any] | None = None) -> None:
    """Write one cache entry (all or nothing): ``key``, ``meta`` and CPU copies of ``tensors``.

    Args:
        path: the entry's file (``<cache>/<kind>/<name>.pt``).
        key: JSON-able content of the key (what the artefact was computed from); stored and
            compared on load, so a stale or colliding file is never mistaken for this entry.
        tensors: the artefact's tensors by name.
        meta: JSON-able description (timings, accuracies) returned with the tensors.
    """
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    payload = {"format": FORMAT, "key": json.loads(json.dumps(key, default=str)),
               "meta": json.loads(json.dumps(meta or {}, default=str)), "tensors": cpu,
               "checksum": _checksum(cpu)}
    save_torch_atomically(payload, path, kill_name=f"cache:{path.parent.name}")


def load_entry(path: Path, key: dict[str, Any], *, log: Callable[[str], None] = print,
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(tensors, meta)`` of the entry at ``path`` computed from ``key``; ``None`` to rebuild.

    ``None`` when there is no entry, and when the entry is corrupt (unreadable, truncated,
    another layout, its checksum or key differ): that case is logged in one line and the file
    deleted, so the caller rebuilds and rewrites it.
    """
    if not path.exists():
        return None
    problem = _problem(path, key)
    if isinstance(problem, str):
        discard(path, problem, log)
        return None
    return problem


def discard(path: Path, reason: str, log: Callable[[str], None]) -> None:
    """Log ``cache entry <path> <reason>; rebuilding it`` (one line) and delete the file."""
    log(f"cache entry {path} {reason}; rebuilding it")
    path.unlink(missing_ok=True)


def _problem(path: Path,
             key: dict[str, Any]) -> str | tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What is wrong with the entry (a phrase), or its ``(tensors, meta)`` when nothing is."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt
        return f"is corrupt ({type(exc).__name__}: {first_line(exc)})"
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT
            and isinstance(payload.get("tensors"), dict) and isinstance(payload.get("meta"), dict)
            and all(isinstance(v, torch.Tensor) for v in payload["tensors"].values())):
        return "is not a cache entry of this version"
    if payload.get("checksum") != _checksum(payload["tensors"]):
        return "is corrupt (checksum mismatch)"
    if payload.get("key") != json.loads(json.dumps(key, default=str)):
        return "was computed from something else (key mismatch)"
    return payload["tensors"], payload["meta"]


def first_line(exc: BaseException) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` (or anything) failed.

    PyTorch's refusal to unpickle an object comes with advice to retry with
    ``weights_only=False``; that advice must never reach a user of untrusted files (it runs
    the file's code), so that case is reworded to name the refused object and nothing else.
    """
    text = str(exc).strip()
    if "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds a pickled Python object{what} besides tensors, which is never "
                "loaded (it could run code)")
    lines = text.splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line.split(". ")[0][:200]
