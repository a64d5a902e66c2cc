"""Atomic file writes: the one implementation every package of the project uses.

A file is written to a temporary name beside its destination (``.<name>.tmp<pid>``), flushed
and fsynced, renamed into place with ``os.replace`` and the folder fsynced, so a reader sees
the old content or the new one, never half a file, and a kill at any instant leaves at most a
temporary file (which a failed write removes itself; ``nas`` removes those of dead processes).
It lives in ``genome`` because that is the lowest package of ours: ``genome`` imports nothing
of the project, ``nas`` imports it, and ``defenses`` (which imports neither) receives it
through the training context (``TrainContext.write_file``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], None]


def temp_name(path: str | os.PathLike[str]) -> Path:
    """The temporary file a write of ``path`` by this process uses: ``.<name>.tmp<pid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike[str], write: Writer, *,
                     before_rename: Callable[[], None] | None = None) -> None:
    """``write(file)`` into :func:`temp_name` of ``path``, fsync, rename, fsync the folder.

    Creates ``path``'s folder. On any error (or interrupt) the temporary file is removed and
    ``path`` is untouched. ``before_rename`` runs between the fsync and the rename (tests use it
    to kill a process at that instant).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """:func:`write_atomically` of ``text`` encoded as UTF-8."""
    write_atomically(path, lambda fh: fh.write(text.encode("utf-8")))
