"""A local Dask cluster of device slots (``--backend dask --devices cuda:0,cuda:1``).

Two layouts, both one child per worker at a time (each worker holds one ``slot`` resource and
every child asks for one):

- dask-cuda installed, CUDA devices, ``--workers-per-device 1``: dask-cuda's
  ``LocalCUDACluster``, the ecosystem's way: one worker process per GPU, each seeing only its
  GPU (``CUDA_VISIBLE_DEVICES``), so ``cuda`` in the worker is that GPU.
- otherwise (no dask-cuda, ``cpu``, or several children per device): a ``LocalCluster`` of one
  single-threaded worker process per slot (:func:`nas.devices.slot_devices`), each pinned to its
  slot's device by :class:`DevicePin` when it starts (and when the nanny restarts it).

Workers are processes, never threads of one process: training seeds PyTorch's process-wide
generator (``nas.evaluation.training.train``), so two children in threads of one process would
draw from each other's stream and the search would stop being reproducible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nas.devices import SLOT, pin_process, slot_devices

try:  # the base class of Dask's worker plugins, when distributed is installed
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object


class DevicePin(_WorkerPlugin):
    """Dask worker plugin: pin worker ``name`` (``0 .. slots-1`` in a ``LocalCluster``) to the
    device of that slot, for the worker process's life."""

    name = "nas-device-pin"

    def __init__(self, devices: Sequence[str]) -> None:
        self.devices = tuple(devices)

    def setup(self, worker: Any) -> None:
        pin_process(self.device_of(worker.name))

    def device_of(self, name: Any) -> str:
        """The device of the worker called ``name``."""
        return self.devices[int(name) % len(self.devices)]


def has_dask_cuda() -> bool:
    """Whether dask-cuda can be imported here."""
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def uses_cuda_cluster(devices: Sequence[str], per_device: int) -> bool:
    """Whether :func:`local_device_cluster` makes a ``LocalCUDACluster`` (module docstring)."""
    return bool(devices) and devices[0] != "cpu" and per_device == 1 and has_dask_cuda()


@contextlib.contextmanager
def local_device_cluster(devices: Sequence[str], per_device: int, *,
                         log: Callable[[str], None] = print) -> Iterator[Any]:
    """A local cluster of the device slots and a ``distributed.Client`` on it (the default
    client, which ``nas.search.parallel.evaluate_tasks`` uses without a scheduler address);
    closed on exit."""
    from distributed import Client, LocalCluster

    slots = slot_devices(devices, per_device)
    if uses_cuda_cluster(devices, per_device):
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(d.split(":")[1] for d in devices),
                                   threads_per_worker=1, dashboard_address=None,
                                   resources={SLOT: 1})
        log(f"Dask LocalCUDACluster: one worker per GPU ({', '.join(devices)})")
    else:
        cluster = LocalCluster(n_workers=len(slots), threads_per_worker=1, processes=True,
                               dashboard_address=None, resources={SLOT: 1})
        log(f"Dask LocalCluster: {len(slots)} workers, one per device slot "
            f"({', '.join(slots)})")
    with cluster, Client(cluster) as client:
        if not uses_cuda_cluster(devices, per_device):
            client.register_plugin(DevicePin(slots))
        yield client
