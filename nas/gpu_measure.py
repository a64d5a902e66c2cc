"""The measurements of ``python -m nas.gpucheck`` that are not ``nas.bench``: children sharing
one device, and a short timed search (docs/gpu.md).

Children sharing a device (:func:`shared_device_throughput`): ``k`` processes, each pinned to
the same device, train one GM child each (the he-baseline genome of the paper's reduced
experiment, CIFAR-shaped batches of 128 sliced from device-resident images, cached reference
gradients, bf16 autocast where the training loop uses it) exactly as the training loop steps
it (``nas.evaluation.training.train_step``). After their warm-up steps they wait for each
other, then each times ``steps`` steps; the throughput is ``k x steps / (last end - first
start)``. Children per GPU-hour follow from a child's step count (:func:`children_per_hour`).

The search (:func:`search_argv`): ``python -m nas.evolve --preset gpu`` on Fashion-MNIST as
3 x 32 x 32 (``fashion-mnist-3x32``: CIFAR-10's shape, since CIFAR-10 cannot be downloaded
where the check runs), reduced so it fits the check's budget, timed as a whole.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

#: The child whose steps are timed: the additional baseline network of the reduced experiment
#: (paper Fig. 4b), an evolved child's size at the start of a search.
CHILD = "he-baseline"
SHAPE_DATASET = "synthetic-rgb"  # CIFAR-10's shape and class count; no files needed


def timed_steps(device: str, steps: int, warmup: int, batch_size: int = 128,
                barrier: Any = None) -> dict[str, float]:
    """Train one GM child for ``warmup`` + ``steps`` steps on ``device``; the timed part's
    wall-clock start and end (``time.time()``) and seconds per step.

    ``barrier``: a ``multiprocessing`` barrier every sharing process waits at after warm-up.
    """
    import torch

    from defenses import create_defense
    from defenses.base import Batch
    from nas.devices import pinned
    from nas.evaluation.data import dataset_info
    from nas.evaluation.references import build_reference
    from nas.evaluation.training import (
        CachedReferenceGrad,
        build_context,
        build_training_model,
        resolve_device,
        to_training_layout,
        train_step,
    )

    with pinned(device):
        dev = resolve_device(device)
        info = dataset_info(SHAPE_DATASET)
        g = torch.Generator().manual_seed(0)
        n = 8 * batch_size
        x = torch.randint(0, 256, (n, *info.input_shape), generator=g,
                          dtype=torch.uint8).to(dev)  # (N, 3, 32, 32), resident
        y = torch.randint(0, info.num_classes, (n,), generator=g).to(dev)
        grads = CachedReferenceGrad(torch.randn(n, *info.input_shape, generator=g), dev)
        gm = create_defense("gm")
        torch.manual_seed(0)
        model = build_training_model(gm, lambda: build_reference(CHILD, info),
                                     num_classes=info.num_classes,
                                     input_shape=info.input_shape, device=dev).train()
        ctx = build_context(gm, device=dev, generator=g, reference_grad=grads,
                            log=lambda _m: None)
        opt = torch.optim.Adam(model.parameters())
        amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
               if dev.type == "cuda" and torch.cuda.is_bf16_supported()
               else contextlib.nullcontext())
        order = torch.arange(n, device=dev).split(batch_size)

        def run(count: int) -> None:
            for i in range(count):
                idx = order[i % len(order)]
                batch = Batch(to_training_layout(x[idx].float().div_(255.0)), y[idx], idx)
                train_step(model, gm, opt, batch, ctx, amp)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        run(warmup)
        if barrier is not None:
            barrier.wait()
        start = time.time()
        run(steps)
        end = time.time()
    return {"start": start, "end": end, "s_per_step": (end - start) / steps}


def shared_device_throughput(device: str, k: int, *, steps: int, warmup: int,
                             threads: int = 1) -> dict[str, float]:
    """``k`` processes training a child each on ``device`` at the same time (module doc):
    steps per second of them all together, and each one's seconds per step."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked processes
    with ctx.Manager() as manager, ProcessPoolExecutor(
            max_workers=k, mp_context=ctx, initializer=_set_threads,
            initargs=(threads,)) as pool:
        barrier = manager.Barrier(k)
        runs = [pool.submit(timed_steps, device, steps, warmup, 128, barrier) for _ in range(k)]
        results = [r.result() for r in runs]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"concurrent": k, "steps_per_s": k * steps / wall, "wall_s": wall,
            "s_per_step_each": sum(r["s_per_step"] for r in results) / k}


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def children_per_hour(steps_per_s: float, child_steps: float) -> float:
    """Children per hour at ``steps_per_s`` when a child takes ``child_steps`` steps."""
    return 3600.0 * steps_per_s / child_steps


def search_argv(run_dir: str, name: str, *, devices: str, per_device: int, train_size: int,
                generations: int, epochs: int, cache_dir: str,
                data_root: str | None = None, dataset: str = "fashion-mnist-3x32") -> list[str]:
    """``nas.evolve`` flags of the check's short search: the ``gpu`` preset on a CIFAR-shaped
    dataset, ``train_size`` training images (a tenth each for validation and test), no held-out
    sources, a short refinement."""
    evaluation = max(10, train_size // 10 // 10 * 10)
    argv = ["--preset", "gpu", "--dataset", dataset, "--train-size", str(train_size),
            "--val-size", str(evaluation), "--test-size", str(evaluation),
            "--generations", str(generations), "--epochs", str(epochs), "--epochs-step", "0",
            "--reference-epochs", "10", "--refine-epochs", "2", "--refine-patience", "0",
            "--held-out", "", "--devices", devices, "--workers-per-device", str(per_device),
            "--run-dir", run_dir, "--name", name, "--cache-dir", cache_dir, "--no-progress"]
    return argv + (["--data-root", data_root] if data_root else [])


def search_summary(run: str, wall_s: float, *, train_size: int,
                   batch_size: int = 128) -> dict[str, Any]:
    """What the check reports of its search: wall time, children trained, their summed and
    mean seconds (training and scoring), their steps, the seconds per step of a child while
    it shared the device with the others (``s_per_child_step_shared``), children per hour
    (wall), the best finalist's test numbers."""
    import json
    from pathlib import Path

    from nas.search.rundir import read_events

    events, _ = read_events(Path(run) / "events.jsonl")
    trained = [e for e in events if e["type"] == "child_finished" and not e["reused"]]
    seconds = [float(e["metrics"].get("seconds", 0.0)) for e in trained]
    steps = sum(int(e["metrics"].get("epochs", e["epochs"])) for e in trained) * math.ceil(
        train_size / batch_size)
    final = json.loads((Path(run) / "final.json").read_text(encoding="utf-8"))
    tests = [m.get("test") or {} for m in final["population"]]
    best = max(tests, key=lambda t: float(t.get("fitness") or 0.0), default={})
    return {"wall_s": round(wall_s, 1), "children_trained": len(trained),
            "child_train_s_sum": round(sum(seconds), 1),
            "child_train_s_mean": round(sum(seconds) / max(1, len(seconds)), 2),
            "child_steps": steps, "s_per_child_step_shared": sum(seconds) / max(1, steps),
            "children_per_hour_wall": round(3600 * len(trained) / max(wall_s, 1e-9), 1),
            "failed": sum(e["metrics"].get("status") == "failed" for e in trained),
            "best_test": {k: best.get(k) for k in ("fitness", "clean_acc", "adv_acc")}}
