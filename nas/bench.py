"""``python -m nas.bench``: time the hot path of the search on this machine, in one run.

Measured (batch 128 unless ``--quick``; training steps as the median of interleaved rounds,
attack-set generation once per reference):

- plain-CE training step of a child (``he-ref`` and ``he-baseline`` genomes);
- GM step with cached reference gradients (the search's path) and with the reference
  gradient computed live (reference ``he-ref`` and ``resnet34``); ratios to the plain step;
- the same plain and GM steps done straightforwardly (PyTorch's own layers and default memory
  layout instead of ``nas.evaluation.training.build_training_model``), to show what the layout and
  the closed-form second derivatives of ``nas.evaluation.double_backward`` buy;
- transferred attack-set generation throughput (PGD-L-inf, per-dataset default steps) for
  the ``he-ref`` and ``resnet34`` references, as seconds per 1,000 images;
- one training step of every other registered defense relative to plain CE (a defense the
  bench cannot feed is reported as skipped with the reason). A step is one minibatch of the
  loop (``train_step``; ``free-at``'s includes its ``replays``), so each ratio is also the
  defense's cost per epoch against plain CE; the adversarial-training defenses run at the
  dataset's eps;
- children per hour of the quick preset estimated from the GM step of an he-ref-sized child
  (an upper bound: evolved children are larger; docs/results.md has measured searches).

``--json`` prints one JSON object instead of the table; ``--quick`` is a seconds-long smoke
version (batch 16, two timed repetitions, no resnet34).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from defenses import create_defense, list_defenses
from defenses.base import Adversary, Batch, Defense
from nas.cli import ArgumentParser, run
from nas.evaluation.allocator import keep_freed_memory
from nas.evaluation.attacks import resolve_attack, run_attack
from nas.evaluation.data import dataset_info
from nas.evaluation.references import build_reference
from nas.evaluation.training import (
    CachedReferenceGrad,
    LiveReferenceGrad,
    build_context,
    build_training_model,
    input_gradients,
    resolve_device,
    to_training_layout,
    train_step,
)
from nasbase.values import positive_int


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented)."""
    p = ArgumentParser(prog="python -m nas.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short smoke version (seconds)")
    p.add_argument("--json", action="store_true", help="print one JSON object for machines")
    p.add_argument("--dataset", default="fashion-mnist", help="image shape / normalisation")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="batch size (default 128, 16 quick)")
    p.add_argument("--reps", type=positive_int, default=None,
                   help="timed repetitions (default 9, 2 quick)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N] (default cpu; CUDA "
                   "timings wait for the device after every step)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    return p


def _time_interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median seconds of each function, timed in rounds that run every function once.

    Interleaving puts each function under the same machine load, so ratios between them are
    stable where back-to-back blocks of one function each drift with the load.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _sync() -> None:
    """Wait for queued CUDA work: kernels run asynchronously, so a step's time is only its
    own once the device has finished it (nothing on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _step_fn(factory: Callable[[], nn.Module], defense: Defense, batch: Batch, info: Any,
             device: torch.device, *, straightforward: bool = False,
             **needs: Any) -> Callable[[], Any]:
    """A closure running one training step of ``defense`` on a fresh wrapped model, laid out
    as training lays it out (``build_training_model``), or with PyTorch's own layers and the
    default memory layout when ``straightforward``."""
    torch.manual_seed(0)
    keep_freed_memory()
    if straightforward:
        model = defense.wrap(factory, num_classes=info.num_classes,
                             input_shape=info.input_shape).to(device).train()
    else:
        model = build_training_model(defense, factory, num_classes=info.num_classes,
                                     input_shape=info.input_shape, device=device).train()
        batch = Batch(to_training_layout(batch.x), batch.y, batch.index)
    ctx = build_context(defense, device=device, generator=torch.Generator().manual_seed(0),
                        log=lambda _m: None, **needs)
    x_u8 = (batch.x * 255).round().to(torch.uint8).cpu()
    defense.prepare(x_u8, batch.y.cpu(), ctx)
    opt = torch.optim.Adam(model.parameters())
    return lambda: train_step(model, defense, opt, batch, ctx)


def bench(*, quick: bool = False, dataset: str = "fashion-mnist", batch_size: int | None = None,
          reps: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run every measurement; returns seconds and ratios as a JSON-able dict."""
    dev = resolve_device(device)
    info = dataset_info(dataset)
    n = batch_size or (16 if quick else 128)
    reps = reps or (2 if quick else 9)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *info.input_shape, generator=g).to(dev)
    y = torch.randint(0, info.num_classes, (n,), generator=g).to(dev)
    batch = Batch(x, y, torch.arange(n, device=dev))
    refs = {name: build_reference(name, info).to(dev).eval()
            for name in (("he-ref",) if quick else ("he-ref", "resnet34"))}
    out: dict[str, Any] = {"batch_size": n, "reps": reps, "device": str(dev),
                           "threads": torch.get_num_threads(), "children": {}}
    cached = CachedReferenceGrad(input_gradients(refs["he-ref"], x, y), dev)
    for child in ("he-ref", "he-baseline"):
        factory = lambda c=child: build_reference(c, info)  # noqa: E731
        gm = create_defense("gm")
        fns = {
            "plain_s": _step_fn(factory, create_defense("none"), batch, info, dev),
            "gm_cached_s": _step_fn(factory, gm, batch, info, dev, reference_grad=cached),
            "plain_straightforward_s": _step_fn(factory, create_defense("none"), batch, info,
                                                dev, straightforward=True),
            "gm_straightforward_s": _step_fn(factory, gm, batch, info, dev,
                                             straightforward=True, reference_grad=cached),
        }
        for ref_name, ref in refs.items():
            fns[f"gm_live_{ref_name}_s"] = _step_fn(
                factory, gm, batch, info, dev, reference_grad=LiveReferenceGrad(ref))
        row = _time_interleaved(fns, reps)
        row["gm_cached_over_plain"] = row["gm_cached_s"] / row["plain_s"]
        row["gm_straightforward_over_plain_straightforward"] = (
            row["gm_straightforward_s"] / row["plain_straightforward_s"])
        row["gm_cached_over_plain_straightforward"] = (
            row["gm_cached_s"] / row["plain_straightforward_s"])
        row["gm_straightforward_over_gm_cached"] = row["gm_straightforward_s"] / row["gm_cached_s"]
        for ref_name in refs:
            row[f"gm_live_{ref_name}_over_cached"] = (row[f"gm_live_{ref_name}_s"]
                                                      / row["gm_cached_s"])
        out["children"][child] = row
    out["attack"] = _bench_attacks(refs, x, y, dataset, quick)
    out["defenses"] = _bench_defenses(info, batch, dev, reps, cached)
    out["children_per_hour_quick_preset"] = _children_per_hour(out["children"]["he-ref"], n)
    return out


def _bench_attacks(refs: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, dataset: str,
                   quick: bool) -> dict[str, Any]:
    settings = resolve_attack("pgd-linf", dataset, steps=2 if quick else None)
    res: dict[str, Any] = {"attack": settings.name, "steps": settings.steps, "eps": settings.eps}
    for name, ref in refs.items():
        _sync()
        start = time.perf_counter()
        run_attack(ref, x, y, settings, torch.Generator().manual_seed(0))
        _sync()
        res[f"{name}_s_per_1000"] = (time.perf_counter() - start) * 1000 / len(x)
    return res


def _bench_defenses(info: Any, batch: Batch, dev: torch.device, reps: int,
                    cached: CachedReferenceGrad) -> dict[str, Any]:
    """One step (one minibatch, replays included) of every registered defense on the he-ref
    child, timed interleaved, relative to plain CE (``none``) timed in the same rounds: the
    ratio of their epoch times as well."""
    res: dict[str, Any] = {}
    settings = resolve_attack("pgd-linf", info.name if info.name != "synthetic" else "mnist",
                              steps=3)
    gen = torch.Generator().manual_seed(0)

    def attack(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return run_attack(model, xb, yb, settings, gen)

    adversary = Adversary(attack, settings.eps)  # the radius of adversarial training

    fns: dict[str, Callable[[], Any]] = {}
    for name in list_defenses():
        try:
            fns[name] = _step_fn(lambda: build_reference("he-ref", info), create_defense(name),
                                 batch, info, dev, reference_grad=cached, adversary=adversary)
            fns[name]()  # a defense the bench cannot feed fails here, not while timing
        except Exception as exc:  # noqa: BLE001 - report and go on
            fns.pop(name, None)
            res[name] = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    times = _time_interleaved(fns, reps)
    for name, secs in times.items():
        res[name] = {"s": secs, "over_plain": secs / times["none"]}
    return dict(sorted(res.items()))


def _children_per_hour(row: dict[str, float], batch: int) -> dict[str, float]:
    """Children per hour for the quick preset (train size and epochs from nas.search.config)."""
    try:
        from nas.search.config import QUICK
        train_size, epochs = int(QUICK["train_size"]), int(QUICK["epochs"])
    except (ImportError, KeyError):
        train_size, epochs = 2000, 2
    steps = -(-train_size // 128) * epochs
    per_child = steps * row["gm_cached_s"] * 128 / batch  # scale the measured batch to 128
    return {"train_size": train_size, "epochs": epochs, "seconds_per_child": per_child,
            "children_per_hour": 3600 / per_child}


def _print_table(r: dict[str, Any]) -> None:
    print(f"batch {r['batch_size']}, {r['reps']} reps, {r['device']}, {r['threads']} threads")
    for child, row in r["children"].items():
        print(f"child {child}:")
        for k, v in row.items():
            print(f"  {k:<32} {v:8.3f}{'x' if 'over' in k else ' s'}")
    a = r["attack"]
    print(f"attack {a['attack']} ({a['steps']} steps, eps {a['eps']:g}) per 1,000 images:")
    for k, v in a.items():
        if k.endswith("per_1000"):
            print(f"  {k:<32} {v:8.2f} s")
    print("defenses, one minibatch step on he-ref relative to plain CE (= per-epoch ratio):")
    for name, v in r["defenses"].items():
        print(f"  {name:<10} " + (f"{v['s']:8.3f} s {v['over_plain']:6.2f}x" if "s" in v
                                  else f"skipped ({v['skipped']})"))
    c = r["children_per_hour_quick_preset"]
    print(f"quick preset, an he-ref-sized child (GM step only; evolved children are larger): "
          f"{c['seconds_per_child']:.1f} s per child ({c['train_size']} images x "
          f"{c['epochs']} epochs), {c['children_per_hour']:.0f} children per hour per worker")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a table (or JSON)."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(quick=args.quick, dataset=args.dataset, batch_size=args.batch_size,
                   reps=args.reps, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
