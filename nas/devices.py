"""Devices of a search: the ``--devices`` list, its worker slots, and pinning a worker to one.

``--devices cuda:0,cuda:1 --workers-per-device 2`` gives four *slots*, laid out round-robin
(:func:`slot_devices`: ``cuda:0, cuda:1, cuda:0, cuda:1``) so that fewer children than slots
still spread over every device. Each slot runs one child at a time.

Pinning is per worker *process* and lasts its life: a loky worker claims the lowest free slot
the first time it runs a child (:func:`claim_slot`, an exclusive ``flock`` on the slot's lock
file, which the kernel releases when the process dies, so a worker that loky replaces frees its
slot for the replacement) and keeps it, so the per-process workspace memo (reference, transferred
sets) stays on one device. While a child runs, :func:`pinned_device` answers the process's
device, and ``nas.evaluation.training.resolve_device`` returns it for the settings ``auto`` and
``cuda``. The device does not enter a child's seed: a child's seed derives from (run seed, child
id) alone, so which slot trains a child does not change its result (up to the device's own
arithmetic: every slot of a search is the same kind of device).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import UserError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
#: Seconds a worker waits for a free slot (only while loky replaces a worker) before failing.
CLAIM_TIMEOUT = 120.0
CLAIM_POLL = 0.05
#: The Dask resource a worker of a local device cluster holds once and every child asks for
#: (one child per worker at a time; nas.search.gpu_cluster).
SLOT = "slot"

_pinned: str | None = None
_claim: tuple[str, int, Any] | None = None  # (lock dir, slot, open lock file) of this process


def parse_devices(value: Any) -> tuple[str, ...]:
    """A checked device list from ``"cuda:0,cuda:1"`` or ``["cuda:0", "cuda:1"]``.

    ``cuda`` means ``cuda:0``. Every entry is ``cpu`` or ``cuda[:N]``; none repeats; ``cpu`` is
    not mixed with CUDA devices (a search's children are scored on one kind of device). An
    empty list is no device list (the single ``--device`` of the fitness settings).

    Raises:
        argparse.ArgumentTypeError: a bad list (the flag's type and the config layer's rule).
    """
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")] if value.strip() else []
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise argparse.ArgumentTypeError(f"expected devices such as cuda:0,cuda:1, got {value!r}")
    bad = [v for v in items if not _DEVICE.match(v)]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown device {bad[0]!r}; valid: cpu, cuda, cuda:N")
    items = ["cuda:0" if v == "cuda" else v for v in items]
    if len(set(items)) != len(items):
        dup = next(v for v in items if items.count(v) > 1)
        raise argparse.ArgumentTypeError(f"device {dup} is listed twice; use "
                                         "--workers-per-device for several children per device")
    if "cpu" in items and len(items) > 1:
        raise argparse.ArgumentTypeError("cpu cannot be mixed with CUDA devices")
    return tuple(items)


def slot_devices(devices: Sequence[str], per_device: int) -> tuple[str, ...]:
    """The device of every worker slot, round-robin: ``(cuda:0, cuda:1)`` x 2 ->
    ``(cuda:0, cuda:1, cuda:0, cuda:1)``."""
    return tuple(devices) * max(1, per_device)


def check_device_setting(device: str, devices: Sequence[str]) -> None:
    """Refuse a fitness ``device`` that contradicts ``devices``: with a device list the children
    run on the listed devices, so ``device`` must be ``auto`` or the list's kind (``cuda`` for
    CUDA devices, ``cpu`` for ``cpu``).

    Raises:
        UserError: naming ``devices``.
    """
    if not devices:
        return
    kind = "cpu" if devices[0] == "cpu" else "cuda"
    if device not in ("auto", kind):
        raise UserError(f"{','.join(devices)} contradicts --device {device}; give --device "
                        f"auto or {kind} with a device list", setting="devices")


def check_available(devices: Sequence[str]) -> None:
    """Fail fast (before a run folder is made) when a listed CUDA device does not exist here.

    Raises:
        UserError: CUDA is not available, or an index is beyond the visible devices.
    """
    cuda = [d for d in devices if d.startswith("cuda")]
    if not cuda:
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{','.join(cuda)} requested but CUDA is not available; use "
                        "--devices cpu or leave --devices out", setting="devices")
    count = torch.cuda.device_count()
    missing = [d for d in cuda if int(d.split(":")[1]) >= count]
    if missing:
        raise UserError(f"{missing[0]} does not exist: this machine shows {count} CUDA "
                        f"device(s), cuda:0 to cuda:{count - 1}", setting="devices")


def pinned_device() -> str | None:
    """The device this process is pinned to while it runs a child (``None``: not pinned)."""
    return _pinned


@contextlib.contextmanager
def pinned(device: str | None) -> Iterator[None]:
    """Pin this process to ``device`` for the duration (``None``: unpinned), restoring the
    previous pin after. A CUDA device is also torch's current device for the duration, where
    CUDA exists."""
    global _pinned
    previous, current = _pinned, None
    _pinned = device
    if device is not None and device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            current = torch.cuda.current_device()
            torch.cuda.set_device(torch.device(device))
    try:
        yield
    finally:
        _pinned = previous
        if current is not None:
            import torch

            torch.cuda.set_device(current)


@dataclass(frozen=True)
class DeviceSlots:
    """The slots of one search, as a worker receives them (picklable).

    Attributes:
        devices: the device of each slot (:func:`slot_devices`).
        lock_dir: folder of the slots' lock files, one per driver process.
    """

    devices: tuple[str, ...]
    lock_dir: str

    @classmethod
    def for_driver(cls, devices: Sequence[str]) -> DeviceSlots:
        """The slots of ``devices`` with a lock folder of this (the driver) process."""
        tag = f"{os.getpid()}-{zlib.crc32(','.join(devices).encode()):08x}"
        return cls(tuple(devices), str(Path(tempfile.gettempdir()) / f"nas-slots-{tag}"))

    def device_of_this_worker(self) -> str:
        """The device of the slot this worker process holds, claiming one on first use."""
        return self.devices[worker_slot(self.lock_dir, len(self.devices))]


def claim_slot(lock_dir: str, count: int, *, timeout: float = CLAIM_TIMEOUT) -> tuple[int, Any]:
    """Take the lowest-numbered free slot of ``count``: ``(slot, open lock file)``; the slot is
    held until the file is closed or the process ends.

    Raises:
        RuntimeError: no slot came free within ``timeout`` seconds.
    """
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for slot in range(count):
            handle = open(Path(lock_dir) / f"slot-{slot}.lock", "a+")  # noqa: SIM115 - kept open
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            return slot, handle
        if time.monotonic() > deadline:
            raise RuntimeError(f"no free device slot of {count} in {lock_dir}")
        time.sleep(CLAIM_POLL)


def worker_slot(lock_dir: str, count: int) -> int:
    """This process's slot among ``count`` in ``lock_dir``: the one it holds, or a new claim
    (letting go of a slot of another search's folder)."""
    global _claim
    if _claim is not None and _claim[0] == lock_dir:
        return _claim[1]
    if _claim is not None:
        _claim[2].close()
        _claim = None
    slot, handle = claim_slot(lock_dir, count)
    _claim = (lock_dir, slot, handle)
    return slot


def pin_process(device: str) -> None:
    """Pin this whole process to ``device`` for its life (a Dask worker of a local device
    cluster, :mod:`nas.search.gpu_cluster`); a CUDA device also becomes torch's current one."""
    global _pinned
    _pinned = device
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(torch.device(device))
