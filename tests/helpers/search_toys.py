"""Helpers of the search tests: a synthetic fitness on real genomes, a toy search runner, and
what the run-folder tests compare (:func:`comparable`) or hold (:func:`hold_lock`).

The fitness is a known function of the spectrum (paper eq. 3) with its optimum at
:data:`TARGET`, so the GA can be checked without training (NNI ``test_sanity.py`` style).
Run as a script (``python tests/helpers/search_toys.py RUN_DIR [--resume] [--delay S] [--workers N]
[--mark]``) it is the subprocess the kill-and-resume tests send SIGKILL to.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nas.search.config import EvolveConfig, ExecSettings, SearchSettings  # noqa: E402
from nas.search.rundir import read_events, strip_timing  # noqa: E402

TARGET = (6, 2, 1, 1, 1)
TOY_SEARCH = dict(population=4, children=2, generations=4, min_distance=2.0, mutations_min=1,
                  mutations_max=3, epochs=1, epochs_step=1, epochs_every=2, refine_epochs=1,
                  max_channels=32, max_nodes=16, seed=7)

#: Settings of the raced toy search (early rejection, 3 epochs so there are two rungs).
RACING = dict(early_reject=True, reject_margin=0.05, epochs=3, epochs_step=0)


def spectrum_fitness(genome_json: str, *, epochs: int, seed: int, out_dir: str | None = None,
                     split: str | None = None, delay: float = 0.0,
                     mark: bool = False) -> dict[str, Any]:
    """A ChildResult-shaped dict whose fitness is ``1 / (1 + |spectrum - TARGET|)``.

    ``mark``: first write the evaluating process's pid to ``out_dir/worker.pid``.
    """
    import os

    import genome as gn

    if mark and out_dir is not None:
        Path(out_dir, "worker.pid").write_text(str(os.getpid()))

    spec = gn.spectrum(gn.from_json(genome_json))
    fit = 1.0 / (1.0 + float(np.linalg.norm(np.subtract(spec, TARGET))))
    if split == "test":
        fit *= 0.9
    time.sleep(delay)
    return {"fitness": fit, "clean_acc": fit, "adv_acc": fit, "fooling_rate": 0.0,
            "status": "ok", "reason": "", "epochs": epochs, "seconds": delay, "params": 0,
            "macs": 0}


def racing_fitness(genome_json: str, *, epochs: int, seed: int, out_dir: str | None = None,
                   split: str | None = None, delay: float = 0.0, reject_below: float | None = None,
                   patience: int = 0, **_: Any) -> dict[str, Any]:
    """:func:`spectrum_fitness` trained in "epochs": the fitness after epoch ``e`` is
    ``F * (0.7 + 0.3 e / epochs)``; with ``reject_below`` it is checked at the rungs of
    :func:`nas.evaluation.fitness.rung_epochs` and the child stops (status ``rejected``) below it.
    ``delay`` seconds pass per epoch, so a kill lands in the middle of a raced child."""
    from nas.evaluation.fitness import rung_epochs

    final = spectrum_fitness(genome_json, epochs=epochs, seed=seed, split=split)
    out = {**final, "patience": patience}
    rungs: list[list[float]] = []
    for epoch in range(1, epochs + 1):
        time.sleep(delay)
        if reject_below is not None and epoch in rung_epochs(epochs):
            fit = final["fitness"] * (0.7 + 0.3 * epoch / epochs)
            rungs.append([epoch, fit])
            if fit < reject_below:
                return {**out, "fitness": fit, "status": "rejected", "epochs": epoch,
                        "rungs": rungs, "reject_below": reject_below}
    if reject_below is not None:
        out.update(rungs=rungs, reject_below=reject_below)
    return out


#: Half-width of the toy's training-draw noise (:func:`noisy_fitness`).
NOISE = 0.04


class Crash(RuntimeError):
    """The toy's simulated crash (:func:`noisy_fitness` ``crash_after``)."""


_redraws: list[str] = []


def noisy_fitness(genome_json: str, *, epochs: int, seed: int, out_dir: str | None = None,
                  split: str | None = None, crash_after: int | None = None,
                  **_: Any) -> dict[str, Any]:
    """:func:`spectrum_fitness` plus a training-draw noise uniform in [-NOISE, NOISE] drawn from
    ``seed`` (one architecture scores differently from another seed, as a real training
    does). ``crash_after``: raise :class:`Crash` on the re-evaluation (an ``out_dir`` named
    ``draw<k>``) after that many re-evaluations of this process."""
    if crash_after is not None and out_dir is not None and Path(out_dir).name.startswith("draw"):
        if len(_redraws) >= crash_after:
            raise Crash(f"simulated crash in the middle of re-evaluating {out_dir}")
        _redraws.append(out_dir)
    out = spectrum_fitness(genome_json, epochs=epochs, seed=seed, split=split)
    noise = NOISE * (2 * float(np.random.default_rng(seed).random()) - 1)
    return {**out, "fitness": out["fitness"] + noise, "seed": seed}


def lazy_ops(search: SearchSettings) -> Any:
    """Real genome operations whose mutation returns the parent unchanged half of the time, so
    children repeat architectures (hash reuse) deterministically."""
    import dataclasses

    from nas.search.ga import genome_ops

    ops = genome_ops(search, (1, 28, 28))

    def mutate(genome: str, rng: np.random.Generator, count: int) -> str:
        return genome if rng.random() < 0.5 else ops.mutate(genome, rng, count)

    return dataclasses.replace(ops, mutate=mutate)


def toy_config(run_dir: str | Path, *, workers: int = 1, **search: Any) -> EvolveConfig:
    """An EvolveConfig of the toy search (default fitness settings; they are not used)."""
    from nas.evaluation.fitness import FitnessSettings

    settings = SearchSettings(**{**TOY_SEARCH, **search})
    return EvolveConfig(settings, FitnessSettings(dataset="synthetic"),
                        ExecSettings(workers=workers, progress=False), str(run_dir))


def run_toy(run_dir: str | Path, *, resume: bool = False, delay: float = 0.0, workers: int = 1,
            lazy: bool = False, backend: str = "loky", scheduler: str | None = None,
            mark: bool = False, racing: bool = False, evaluate: Any = None,
            **search: Any) -> dict[str, Any]:
    """Run (or resume) the toy search in ``run_dir``; returns final.json's content.

    ``racing``: the evaluation is :func:`racing_fitness` (``delay`` per epoch); ``evaluate``:
    another evaluation function (e.g. :func:`noisy_fitness`)."""
    import dataclasses

    from nas.search.driver import run_search
    from nas.search.ga import genome_ops
    from nas.search.rundir import create_run, open_run

    cfg = toy_config(run_dir, workers=workers, **search)
    cfg = dataclasses.replace(cfg, execution=dataclasses.replace(
        cfg.execution, backend=backend, scheduler=scheduler))
    ops = lazy_ops(cfg.search) if lazy else genome_ops(cfg.search, (1, 28, 28))
    events = open_run(run_dir, log=lambda m: None) if resume else create_run(run_dir, cfg.to_dict())
    try:
        if evaluate is None:
            evaluate = (functools.partial(racing_fitness, delay=delay) if racing
                        else functools.partial(spectrum_fitness, delay=delay, mark=mark))
        return run_search(cfg, ops=ops, evaluate=evaluate,
                          events=events, resumed=resume, log=lambda m: None)
    finally:
        events.close()


# ------------------------------------------------------------------------ run-folder helpers

TOYS = Path(__file__)


def child_events(run: Path) -> list[dict]:
    events, _ = read_events(run / "events.jsonl")
    return [e for e in events if e["type"] == "child_finished"]


def comparable(run: Path) -> dict:
    """What must match between two runs of one seed (timing fields dropped)."""
    events, _ = read_events(run / "events.jsonl")
    keep = [strip_timing(e) for e in events if e["type"] not in ("run_started", "run_resumed")]
    unordered = ("child_finished", "refined", "reevaluated")  # logged in order of completion
    children = sorted((e for e in keep if e["type"] in unordered),
                      key=lambda e: (e["type"], e["id"], e.get("draw", 0)))
    others = [e for e in keep if e["type"] not in unordered]
    final = strip_timing(json.loads((run / "final.json").read_text()))
    population = strip_timing(json.loads((run / "population.json").read_text()))
    return {"children": children, "others": others, "final": final, "population": population}


HOLD = ("import sys, time; from nas.search.rundir import open_run; log = open_run(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(120)")


def hold_lock(run):
    """A separate process that opens ``run`` for resuming (taking its lock) and sleeps."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    return proc




if __name__ == "__main__":
    args = sys.argv[1:]
    delay = float(args[args.index("--delay") + 1]) if "--delay" in args else 0.0
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    racing = dict(racing=True, **RACING) if "--racing" in args else {}
    run_toy(args[0], resume="--resume" in args, delay=delay, lazy="--lazy" in args,
            workers=workers, mark="--mark" in args, **racing)


def probe(genome_json: str, *, epochs: int, seed: int, out_dir: str | None = None,
          split: str | None = None) -> dict[str, Any]:
    """Where and how a task ran: process id and torch's thread count."""
    import os

    import torch

    return {"fitness": 0.0, "pid": os.getpid(), "threads": torch.get_num_threads(),
            "seed": seed}
