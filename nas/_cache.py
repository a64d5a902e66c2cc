"""Small helpers for the on-disk caches of the hot path: stable keys and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


def digest(obj: Any, length: int = 16) -> str:
    """Stable hex key of a JSON-able object (sorted keys): what a cached artefact depends on."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (e.g. ``("reference", seed)``), independent streams."""
    return int(digest(list(parts), 8), 16) & 0x7FFFFFFF


def atomic_write_text(path: Path, text: str) -> None:
    """Create ``path``'s folder, then write ``text`` atomically (:func:`nas.rundir.atomic_write_text`)."""
    from nas.rundir import atomic_write_text as write

    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, text)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
