"""``python -m nas.gpucheck``: the GPU check anyone can run (``make gpu-check``), in one command.

On a machine without CUDA it prints one line saying so and exits 0. With a GPU it runs, within
a time budget (default 420 s, for under 8 minutes on an H100 with the start-up), four stages
and prints their figures, writing them to a JSON file after every stage (a check cut short
still leaves what it measured):

1. ``tests``: the CUDA-marked tests (``pytest -m cuda``: bf16 autocast against float32 GM);
2. ``bench``: ``nas.bench`` on the device with CIFAR-shaped batches: plain-CE and GM steps of
   the he-ref and he-baseline children and their ratio, PyTorch's own layers against the
   hand-written double backward, attack-set throughput, every defense's step;
3. ``sharing``: children sharing one GPU, 1, 2, 4 and 8 at a time: steps per second together
   and children per GPU-hour of the ``gpu`` preset (:mod:`nas.gpu_measure`);
4. ``search``: a short timed ``nas.evolve --preset gpu`` on Fashion-MNIST as 3 x 32 x 32
   (CIFAR-10's shape; CIFAR-10 cannot be downloaded where the check runs; synthetic-rgb when
   Fashion-MNIST is not found either, said so in the output);

then the expected hours of the ``gpu`` preset, of the paper's reduced experiment as written
(50 generations, 1,000 refinement epochs) and of the paper's full CIFAR-10 search, from the
measured step times (:mod:`nas.search.budget`). ``--device cpu`` runs the same stages on the
CPU (to test the check itself; the figures are then CPU figures); ``--quick`` shrinks every
stage to seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.cli import ArgumentParser, run
from nas.errors import UserError
from nasbase.values import int_list, positive_int

STAGES = ("tests", "bench", "sharing", "search")
ROOT = Path(__file__).resolve().parents[1]
#: Stage sizes: full (the GPU check) and quick (seconds, for testing the check).
SIZES = {
    "full": {"bench_reps": 9, "steps": 200, "warmup": 30, "train_size": 2000, "generations": 2,
             "epochs": 10, "per_device": 4},
    "quick": {"bench_reps": 1, "steps": 3, "warmup": 1, "train_size": 100, "generations": 1,
              "epochs": 1, "per_device": 2},
}
NO_GPU = "no CUDA device on this machine: GPU check skipped, nothing measured"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented)."""
    p = ArgumentParser(prog="python -m nas.gpucheck", description=__doc__.split("\n\n")[0],
                       epilog="docs/gpu.md explains the figures.")
    p.add_argument("--device", default="cuda:0",
                   help="the GPU to measure (default cuda:0); cpu runs the check on the CPU, "
                   "to test the check itself")
    p.add_argument("--out", default="gpucheck.json", metavar="FILE",
                   help="JSON file of the figures, rewritten after every stage "
                   "(default gpucheck.json)")
    p.add_argument("--quick", action="store_true", help="every stage shrunk to seconds")
    p.add_argument("--skip", action="append", choices=STAGES, default=[],
                   help="leave a stage out, repeatable")
    p.add_argument("--concurrency", type=int_list(positive_int, "counts such as 1,2,4,8",
                                                  distinct_sorted=True), default=[1, 2, 4, 8],
                   help="children sharing the device at a time, measured for each "
                   "(default 1,2,4,8)")
    p.add_argument("--budget-s", type=positive_int, default=420,
                   help="seconds after which no further stage starts, and the search's time "
                   "limit (default 420)")
    p.add_argument("--data-root", default=None,
                   help="read-only directory with the raw datasets (else NAS_DATA_ROOT)")
    return p


def device_facts(device: str) -> dict[str, Any]:
    """Name, memory and software versions of ``device``."""
    import torch

    facts: dict[str, Any] = {"device": device, "torch": torch.__version__,
                             "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        facts.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                     bf16=torch.cuda.is_bf16_supported())
    return facts


def stage_tests(device: str, limit: float) -> dict[str, Any]:
    """``pytest -m cuda`` in a subprocess; its summary line and exit code."""
    if not (ROOT / "tests").is_dir():
        return {"skipped": "no tests folder next to the nas package"}
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           "tests"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    lines = [x for x in done.stdout.strip().splitlines() if x.strip()]
    return {"returncode": done.returncode, "summary": lines[-1].strip("= ") if lines else "",
            "passed": done.returncode in (0, 5)}  # 5: no test collected


def stage_bench(device: str, reps: int, quick: bool) -> dict[str, Any]:
    """``nas.bench`` on ``device`` with CIFAR-10's shape (random pixels: no files needed)."""
    from nas.bench import bench

    return bench(quick=quick, dataset="cifar10", reps=reps, device=device)


def stage_sharing(device: str, ks: Sequence[int], steps: int, warmup: int) -> dict[str, Any]:
    """Throughput of ``k`` children sharing ``device`` for every ``k``, with children per
    hour of the ``gpu`` preset's mean child."""
    from nas.gpu_measure import children_per_hour, shared_device_throughput
    from nas.search.budget import preset_steps

    gpu = preset_steps("gpu")
    mean_child = gpu.child_steps / gpu.children
    cores = os.cpu_count() or 1
    rows = []
    for k in ks:
        row = shared_device_throughput(device, k, steps=steps, warmup=warmup,
                                       threads=max(1, cores // k))
        row["children_per_hour"] = children_per_hour(row["steps_per_s"], mean_child)
        rows.append(row)
    base = rows[0]["steps_per_s"] if rows and rows[0]["concurrent"] == 1 else None
    for row in rows:
        row["gain_over_1"] = row["steps_per_s"] / base if base else None
    return {"child": "he-baseline GM, batch 128, CIFAR-shaped", "mean_child_steps": mean_child,
            "rows": rows}


def search_dataset(data_root: str | None, cache_dir: str) -> tuple[str, str]:
    """``fashion-mnist-3x32`` when Fashion-MNIST can be read, else ``synthetic-rgb``; and why."""
    from nas.evaluation.data import load_splits

    try:
        load_splits("fashion-mnist-3x32", train_size=10, val_size=0, test_size=10,
                    data_root=data_root, cache_dir=cache_dir, log=lambda _m: None)
    except UserError as exc:
        return "synthetic-rgb", f"Fashion-MNIST not found ({str(exc)[:120]})"
    return "fashion-mnist-3x32", "Fashion-MNIST as 3 x 32 x 32 (CIFAR-10's shape)"


def stage_search(device: str, sizes: dict[str, Any], limit: float,
                 data_root: str | None) -> dict[str, Any]:
    """The short ``--preset gpu`` search in a subprocess, timed."""
    from nas.gpu_measure import search_argv, search_summary

    with tempfile.TemporaryDirectory(prefix="nas-gpucheck-") as tmp:
        cache = str(Path(tmp) / "cache")
        dataset, why = search_dataset(data_root or os.environ.get("NAS_DATA_ROOT"), cache)
        argv = search_argv(tmp, "search", devices=device, per_device=sizes["per_device"],
                           train_size=sizes["train_size"], generations=sizes["generations"],
                           epochs=sizes["epochs"], cache_dir=cache, data_root=data_root,
                           dataset=dataset)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nas.evolve", *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=limit)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"nas.evolve exited {done.returncode}: {tail}")
        out = search_summary(str(Path(tmp) / "search"), wall, train_size=sizes["train_size"])
        shown = " ".join(argv).replace(tmp, "<tmp>")
    return {"dataset": dataset, "data": why, "argv": shown, **sizes, **out}


def expected(report: dict[str, Any]) -> dict[str, Any]:
    """Expected hours of the gpu preset, the paper's reduced and full experiments, from the
    measured sharing throughput and the bench's plain step (:mod:`nas.search.budget`)."""
    from nas.search.budget import expected_hours, preset_steps
    from nas.search.config import GPU

    rows = {r["concurrent"]: r for r in (report.get("sharing") or {}).get("rows", [])}
    if 1 not in rows:
        return {"skipped": "needs the sharing stage at 1 child"}
    plain = report.get("bench", {}).get("children", {}).get("he-ref", {}).get("plain_s", 0.0)
    best = max(rows.values(), key=lambda r: r["steps_per_s"])
    k_gpu = int(GPU["workers_per_device"])
    at_k = rows.get(k_gpu, best)
    step1 = 1.0 / rows[1]["steps_per_s"]

    def hours(preset: str, row: dict[str, Any], **overrides: Any) -> float:
        steps = preset_steps(preset, **overrides)
        return round(expected_hours(steps, gm_step_s=step1, plain_step_s=plain,
                                    gain=row["steps_per_s"] / rows[1]["steps_per_s"]), 2)

    search = report.get("search") or {}
    from_search = None
    if search.get("s_per_child_step_shared"):  # the preset's own search space, shared device
        gpu = preset_steps("gpu")
        from_search = round(expected_hours(
            gpu, gm_step_s=search["s_per_child_step_shared"], plain_step_s=plain,
            gain=float(search["per_device"])), 2)
    return {"gm_step_s_alone": step1, "plain_step_s": plain,
            "gpu_preset_h_from_search": from_search,
            "gpu_preset_h": hours("gpu", at_k), "gpu_preset_concurrent": at_k["concurrent"],
            "paper_reduced_as_written_h": hours("gpu", best, generations=50,
                                                refine_epochs=1000, refine_patience=0),
            "paper_full_h": hours("paper", best), "best_concurrent": best["concurrent"],
            "note": "one GPU; refinement at its cap; *_h: he-baseline-sized children from "
                    "the sharing stage; gpu_preset_h_from_search: the preset's sampled children "
                    "as the check's search trained them (training and scoring)"}


def lines(report: dict[str, Any]) -> list[str]:
    """The printed summary of a report."""
    d = report["device"]
    out = [f"GPU check on {d.get('name', d['device'])} ({d['device']}), torch {d['torch']}, "
           f"CUDA {d['cuda']}, bf16 {d.get('bf16', '-')}"]
    for stage in STAGES:
        r = report.get(stage)
        if r is None:
            continue
        if "error" in r or "skipped" in r:
            out.append(f"{stage}: {r.get('error') or 'skipped (' + r['skipped'] + ')'}")
        elif stage == "tests":
            out.append(f"tests -m cuda: {r['summary'] or 'no output'}")
        elif stage == "bench":
            for child, row in r["children"].items():
                out.append(f"bench {child}: plain CE {row['plain_s'] * 1e3:.2f} ms, GM "
                           f"{row['gm_cached_s'] * 1e3:.2f} ms ({row['gm_cached_over_plain']:.2f}"
                           f"x), PyTorch's layers GM {row['gm_straightforward_s'] * 1e3:.2f} ms")
        elif stage == "sharing":
            out += [f"{row['concurrent']} children sharing the device: {row['steps_per_s']:.0f} "
                    f"steps/s, {row['children_per_hour']:.0f} gpu-preset children per hour"
                    + (f", gain {row['gain_over_1']:.2f}x" if row["gain_over_1"] else "")
                    for row in r["rows"]]
        elif stage == "search":
            out.append(f"search (--preset gpu on {r['dataset']}, {r['train_size']} images, "
                       f"{r['generations']} generations, {r['epochs']} epochs, "
                       f"{r['per_device']} per device): {r['wall_s']:.1f} s, "
                       f"{r['children_trained']} children, "
                       f"{r['s_per_child_step_shared'] * 1e3:.1f} ms per child step shared, "
                       f"best test F {float(r['best_test']['fitness'] or 0.0):.4f}")
    e = report.get("expected", {})
    if "gpu_preset_h" in e:
        out.append(f"expected hours: gpu preset {e['gpu_preset_h']} h "
                   f"({e['gpu_preset_concurrent']} at a time); paper's reduced experiment as "
                   f"written {e['paper_reduced_as_written_h']} h, paper's full CIFAR-10 "
                   f"{e['paper_full_h']} h ({e['best_concurrent']} at a time)"
                   + (f"; gpu preset from the search's children {e['gpu_preset_h_from_search']} h"
                      if e.get("gpu_preset_h_from_search") is not None else ""))
    return out


def run_stages(args: argparse.Namespace, report: dict[str, Any],
               save: Callable[[], None]) -> None:
    """Every stage not skipped, in order, within the budget; a failing stage is recorded."""
    sizes = SIZES["quick" if args.quick else "full"]
    start = time.monotonic()
    left = lambda: args.budget_s - (time.monotonic() - start)  # noqa: E731
    todo: dict[str, Callable[[], dict[str, Any]]] = {
        "tests": lambda: stage_tests(args.device, max(30.0, left())),
        "bench": lambda: stage_bench(args.device, sizes["bench_reps"], args.quick),
        "sharing": lambda: stage_sharing(args.device, args.concurrency, sizes["steps"],
                                         sizes["warmup"]),
        "search": lambda: stage_search(args.device, sizes, max(30.0, left()), args.data_root),
    }
    for name, stage in todo.items():
        if name in args.skip:
            continue
        if left() <= 0:
            report[name] = {"skipped": f"the {args.budget_s} s budget was spent"}
            continue
        began = time.perf_counter()
        try:
            report[name] = stage()
        except Exception as exc:  # noqa: BLE001 - one failing stage must not hide the others
            report[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        report[name]["stage_s"] = round(time.perf_counter() - began, 1)
        print(f"stage {name}: {report[name]['stage_s']:.1f} s", file=sys.stderr, flush=True)
        save()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 when every stage ran (or there is no GPU), 1 when one failed."""
    import torch

    args = build_parser().parse_args(argv)
    if args.device != "cpu":
        if not torch.cuda.is_available():
            print(NO_GPU)
            return 0
        from nas.devices import check_available, parse_devices

        try:
            (args.device,) = parse_devices(args.device)
        except (argparse.ArgumentTypeError, ValueError):
            raise UserError(f"expected one device such as cuda:0, got {args.device!r}",
                            setting="device") from None
        check_available((args.device,))
    report: dict[str, Any] = {"device": device_facts(args.device), "quick": args.quick}
    out = Path(args.out)

    def save() -> None:
        out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")

    run_stages(args, report, save)
    report["expected"] = expected(report)
    save()
    print("\n".join(lines(report)))
    print(f"figures written to {out}")
    failed = [s for s in STAGES if "error" in report.get(s, {})
              or (s == "tests" and report.get(s, {}).get("passed") is False)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run(main))
