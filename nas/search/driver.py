"""The search driver: one whole search (or its resume) from a resolved configuration.

:func:`evolve` is what ``python -m nas.evolve`` runs after parsing its flags, and what a script
or notebook calls: it checks the names in the configuration, prepares the fitness (data,
reference, transferred sets; cached), creates or re-opens the run directory (locked for the
whole run), and runs :func:`run_search` with a live progress line. :func:`run_search` is the
loop itself: the DEAP steady-state algorithm of :mod:`nas.search.ga` with the children
evaluated through :class:`nas.search.parallel.ChildEvaluator`, every event logged and the
population written after each generation, then the refinement of the final population.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.devices import check_available, pinned, slot_devices
from nas.errors import UserError
from nas.search.config import EvolveConfig
from nas.search.ga import (
    GenomeOps,
    build_toolbox,
    genome_ops,
    initial_genomes,
    initial_population,
    steady_state,
)
from nas.search.parallel import ChildEvaluator, check_scheduler
from nas.search.rundir import (
    FINAL,
    POPULATION,
    EventLog,
    check_run_name,
    create_run,
    open_run,
    write_json,
)
from nasbase.progress import Stages

__all__ = ["SearchOutcome", "Progress", "evolve", "input_shape_of", "run_search"]


class Progress:
    """The live line: children done / running / failed, best fitness, ETA from child times."""

    def __init__(self, total: int, *, workers: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="child", file=sys.stderr, dynamic_ncols=True,
                        disable=not enabled, bar_format="{desc}{n_fmt}/{total_fmt} children "
                        "[{elapsed}] {postfix}")
        self.workers, self.running, self.failed, self.best = max(1, workers), 0, 0, None
        self.trained_seconds: list[float] = []

    def child_done(self, metrics: dict[str, Any], *, reused: bool = False,
                   replayed: bool = False) -> None:
        if metrics.get("status", "ok") not in ("ok", "rejected"):  # rejected: stopped on purpose
            self.failed += 1
        fit = float(metrics.get("fitness", 0.0))
        self.best = fit if self.best is None else max(self.best, fit)
        if not (reused or replayed) and "seconds" in metrics:
            self.trained_seconds.append(float(metrics["seconds"]))
        self.bar.update(1)
        self._postfix()

    def set_running(self, running: int) -> None:
        self.running = running
        self._postfix()

    def eta(self) -> float | None:
        """Seconds left: mean measured child time x children left / workers."""
        if not self.trained_seconds:
            return None
        left = self.bar.total - self.bar.n
        return sum(self.trained_seconds) / len(self.trained_seconds) * left / self.workers

    def _postfix(self) -> None:
        eta = self.eta()
        best = "-" if self.best is None else f"{self.best:.4f}"
        self.bar.set_postfix_str(
            f"running={self.running} failed={self.failed} best={best} "
            f"eta={'?' if eta is None else time.strftime('%H:%M:%S', time.gmtime(eta))}")

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


def run_search(cfg: EvolveConfig, *, ops: GenomeOps, evaluate: Callable[..., Any], events: EventLog,
               resumed: bool = False, progress: Progress | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or replay and continue) a whole search in ``cfg.run_dir``; returns final.json's content.

    Args:
        cfg: the resolved configuration.
        ops: genome operations (sample, mutate, spectrum, canonical hash).
        evaluate: picklable ``(genome, *, epochs, seed, out_dir, split) -> metrics``.
        events: the run's event log (already holding the events of an interrupted run).
        resumed: whether this continues an existing run (logged as ``run_resumed``).
        progress: live progress line (or ``None``).
        log: where summary lines go.
    """
    search, run_dir = cfg.search, Path(cfg.run_dir)
    options = {k: v for k, v in (("strategy", search.strategy),
                                 ("early_reject", search.early_reject),
                                 ("inherit", search.inherit),
                                 ("init_samples", search.init_samples if search.warm_start else 0),
                                 ("reevaluate_margin", search.reevaluate_margin),
                                 ("common_seeds", search.common_seeds),
                                 ("stagnation", search.stagnation))
               if v not in ("ga", False, 0)}
    events.emit({"type": "run_resumed" if resumed else "run_started", "seed": search.seed,
                 **options})
    ex = cfg.execution
    evaluator = ChildEvaluator(events, run_dir, search, workers=ex.concurrency,
                               backend=ex.backend, scheduler=ex.scheduler, progress=progress,
                               devices=slot_devices(ex.devices, ex.workers_per_device)
                               if ex.devices else ())
    toolbox = build_toolbox(search, ops, evaluate=evaluate, map_fn=evaluator.map, emit=events.emit,
                            reevaluate=functools.partial(evaluator.reevaluate, evaluate))
    started = time.monotonic()

    def on_generation(t: int, population: list[Any], record: dict[str, Any]) -> None:
        members = [ind.summary() for ind in population]
        stats = {k: float(record[k]) for k in ("max", "mean", "min")}
        events.emit({"type": "generation_finished", "generation": t, "population":
                     [m["id"] for m in members], "replaced": record["replaced"], **stats})
        write_json(run_dir / POPULATION, {"generation": t, "members": members})
        log(f"generation {t}/{search.generations}: best {stats['max']:.4f} mean "
            f"{stats['mean']:.4f} replaced {record['replaced']} elapsed "
            f"{time.strftime('%H:%M:%S', time.gmtime(time.monotonic() - started))}")

    stages = Stages(log)
    with stages(f"search ({search.generations} generations)"):
        population = initial_population(toolbox, search, ops)
        population, logbook, hof = steady_state(toolbox, population, search, on_generation)
    refined = [None] * len(population)
    if search.refine_epochs > 0:
        with stages(f"refinement of {len(population)} finalists ({search.refine_epochs} epochs)"):
            refined = evaluator.refine(evaluate, population)
    final = {
        "population": [{**ind.summary(), "test": res}
                       for ind, res in zip(population, refined, strict=True)],
        "hall_of_fame": [ind.summary() for ind in hof],
        "logbook": [dict(r) for r in logbook],
        "refine_epochs": search.refine_epochs,
        "fitness_split": getattr(cfg.fitness, "fitness_split", "val"),
    }
    if options:  # a search other than Algorithm 1 as written: say what it cost
        final["search_cost"] = search_cost(events.events)
        final["strategy"] = search.strategy
    write_json(run_dir / FINAL, final)
    events.emit({"type": "run_finished", "population": [ind.child_id for ind in population]})
    return final


def search_cost(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the search's children cost, from the log: children trained (not reused), their
    summed training seconds, rejected, child-epochs planned and trained, and the fraction of
    child-epochs early rejection saved."""
    trained = [e for e in events if e["type"] == "child_finished" and not e["reused"]]
    redraws = [e for e in events if e["type"] == "reevaluated"]
    planned = sum(int(e["epochs"]) for e in trained)
    run = sum(int(e["metrics"].get("epochs", e["epochs"]))
              if e["metrics"].get("status") == "rejected"
              else int(e["epochs"]) for e in trained)
    return {"children_trained": len(trained),
            "train_seconds": round(sum(float(e["metrics"].get("seconds", 0.0))
                                       for e in trained), 1),
            "rejected": sum(e["metrics"].get("status") == "rejected" for e in trained),
            "child_epochs_planned": planned, "child_epochs_trained": run,
            "child_epochs_saved_fraction": round(1 - run / planned, 4) if planned else 0.0,
            "inherited": sum(1 for e in trained if e.get("inherited_from")),
            "reevaluations": len(redraws),
            "reevaluation_epochs": sum(int(e["epochs"]) for e in redraws)}


def check_rejected(run_dir: str | Path, sample: int, *, seed: int = 0, workers: int = 1,
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train a seeded sample of a run's rejected children to the end: would they have replaced?

    Early rejection (``--early-reject``) stops a child at a rung when its fitness is below its
    threshold minus the margin. This trains ``sample`` of those children (chosen with
    ``random.Random(seed)``) for their full epochs with their own seed, parent weights and the
    run's fitness settings, i.e. exactly as the search would have trained them without racing
    (a rung draws no random numbers), and compares the final fitness with the threshold (the
    fitness of the member the child was compared with). Nothing is written to the run.

    Returns one dict per checked child: ``id``, ``threshold``, ``rungs`` (``(epoch, fitness)``
    at every rung of the full training), ``rejected_at`` / ``rejected_fitness``,
    ``full_fitness``, ``would_replace`` (``full_fitness > threshold``, Algorithm 1's
    replacement rule) and ``reproduced`` (the full training's fitness at the rung where the
    search stopped the child equals the logged one: the same training, not a new draw).

    Raises:
        UserError: not a run directory.
    """
    import random
    import tempfile

    from nas.evaluation.fitness import FitnessSettings
    from nas.search.parallel import Task, evaluate_tasks, inheritance_args
    from nas.search.rundir import load_config, read_events
    from nas.search.worker import evaluate_genome

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    settings = FitnessSettings.from_dict(cfg["fitness"])
    events, _ = read_events(run_dir / "events.jsonl")
    rejected = [e for e in events if e["type"] == "child_finished" and not e["reused"]
                and e["metrics"].get("status") == "rejected"]
    chosen = random.Random(seed).sample(rejected, min(sample, len(rejected)))
    log(f"{run_dir.name}: {len(rejected)} rejected children; training {len(chosen)} of them "
        "to the end")
    with tempfile.TemporaryDirectory(prefix="nas-check-") as tmp:
        tasks = []
        for e in chosen:
            extra: dict[str, Any] = {"reject_below": -1.0}  # logs every rung, never stops
            parent = e.get("inherited_from")
            if parent:
                extra.update(inheritance_args(run_dir, e["parent"], parent))
            genome = (run_dir / "children" / e["id"] / "genome.json").read_text(encoding="utf-8")
            tasks.append(Task(e["id"], genome, int(e["epochs"]), int(e["seed"]),
                              str(Path(tmp) / e["id"]), None, tuple(sorted(extra.items()))))
        full = dict(evaluate_tasks(functools.partial(evaluate_genome, settings=settings), tasks,
                                   workers=workers))
    out = []
    for e in chosen:
        m = e["metrics"]
        got = float(full[e["id"]].get("fitness", 0.0))
        rungs = {int(r[0]): float(r[1]) for r in full[e["id"]].get("rungs") or ()}
        at = int(m.get("epochs", 0))
        row = {"id": e["id"], "threshold": float(e["threshold"]), "rungs": sorted(rungs.items()),
               "rejected_at": at, "rejected_fitness": float(m["fitness"]),
               "epochs": int(e["epochs"]), "full_fitness": got,
               "would_replace": got > float(e["threshold"]),
               # the same training as the search's: the rung it was stopped at is reproduced
               "reproduced": abs(rungs.get(at, -1.0) - float(m["fitness"])) < 1e-6}
        log(f"{row['id']}: rejected after {row['rejected_at']}/{row['epochs']} epochs at "
            f"{row['rejected_fitness']:.4f}; trained to the end {got:.4f} against threshold "
            f"{row['threshold']:.4f}: {'WOULD' if row['would_replace'] else 'would not'} replace")
        out.append(row)
    return out


def input_shape_of(cfg: EvolveConfig) -> tuple[int, int, int]:
    """Input shape ``(C, H, W)`` of the search's dataset (from the registry; loads no data)."""
    from nas.evaluation.data import dataset_info

    return tuple(dataset_info(cfg.fitness.dataset).input_shape)


def default_name(cfg: EvolveConfig) -> str:
    """``<date>-<time>-<dataset>-<reference>-s<seed>``."""
    from nas.evaluation.references import file_slug

    fit = cfg.fitness  # file datasets and references are paths: one folder name of them
    return (f"{time.strftime('%Y%m%d-%H%M%S')}-{file_slug(getattr(fit, 'dataset', 'data'))}-"
            f"{file_slug(getattr(fit, 'reference', 'ref'))}-s{cfg.search.seed}")


def new_run_path(parent: str | Path, name: str | None, cfg: EvolveConfig) -> str:
    """The folder of a fresh search, checked before anything is trained or written.

    Raises:
        UserError: a bad ``name``, ``parent`` naming a file, or a run that already exists.
    """
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{parent} is a file; it must be a folder (the parent of run folders)",
                        setting="run_dir")
    name = check_run_name(name) if name is not None else default_name(cfg)
    path = parent / name
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"run directory {path} already exists; resume it or choose another "
                        "name", setting="name")
    return str(path)


@dataclass
class SearchOutcome:
    """What :func:`evolve` returns: ``final.json``'s content, the run directory and the
    reference's clean accuracy per split."""

    final: dict[str, Any]
    run_dir: str
    reference_acc: dict[str, float]
    held_out_acc: dict[str, float] = field(default_factory=dict)


def evolve(cfg: EvolveConfig, *, resume: bool = False, progress: bool | None = None,
           log: Callable[[str], None] = print) -> SearchOutcome:
    """Run the search of ``cfg`` in ``cfg.run_dir`` (a new folder, or an interrupted run with
    ``resume=True``) and return its outcome.

    Args:
        cfg: a resolved configuration (``nas.search.config.resolve`` / ``resolve_resume``).
        resume: continue the run in ``cfg.run_dir`` (nothing finished is trained again).
        progress: show the live progress line on stderr (default: ``cfg.execution.progress``
            and stderr is a terminal).
        log: where the summary lines go.

    Raises:
        UserError: bad names in the configuration, an impossible initial population, a run
            folder in use by another process, an unreachable Dask scheduler.
    """
    from nas.evaluation.fitness import check_names, prepare
    from nas.search.worker import evaluate_genome

    check_names(cfg.fitness)
    ex = cfg.execution
    check_available(ex.devices)  # a missing GPU must not leave a run behind
    if ex.backend == "dask" and not ex.devices:
        check_scheduler(ex.scheduler)  # a bad address must not leave a run behind
    show = cfg.execution.progress and sys.stderr.isatty() if progress is None else progress
    ops = genome_ops(cfg.search, input_shape_of(cfg))
    if not resume:  # fail fast, before the reference is trained: can Algorithm 1 line 1 run?
        initial_genomes(cfg.search, ops)
    # A resume locks the run before anything else (a second resume is refused at once); a new
    # run is created, locked, only once the reference and the attack sets are ready.
    events = open_run(cfg.run_dir, log=log) if resume else None
    try:
        with pinned(ex.devices[0] if ex.devices else None):  # the first listed device
            workspace = prepare(cfg.fitness, progress=show, log=log)
        log(reference_line(cfg.fitness.reference, workspace.reference_acc))
        if events is None:
            events = create_run(cfg.run_dir, cfg.to_dict())
            log(f"run directory: {cfg.run_dir}")
        s = cfg.search
        total = (s.population * (1 + s.generations * s.children)
                 + (s.population if s.refine_epochs else 0))
        bar = Progress(total, workers=ex.concurrency, enabled=show)
        try:
            with device_cluster(ex, log):
                final = run_search(cfg, ops=ops, evaluate=functools.partial(
                    evaluate_genome, settings=cfg.fitness), events=events, resumed=resume,
                    progress=bar, log=bar.write if show else log)
        finally:
            bar.close()
    finally:
        if events is not None:
            events.close()
    return SearchOutcome(final=final, run_dir=cfg.run_dir, reference_acc=workspace.reference_acc,
                         held_out_acc=dict(workspace.held_out_acc))


def device_cluster(ex: Any, log: Callable[[str], None]) -> contextlib.AbstractContextManager:
    """The local Dask cluster of ``--backend dask --devices ...`` for the whole search
    (:mod:`nas.search.gpu_cluster`); nothing for any other execution."""
    if ex.backend != "dask" or not ex.devices:
        return contextlib.nullcontext()
    from nas.search.gpu_cluster import local_device_cluster

    return local_device_cluster(ex.devices, ex.workers_per_device, log=log)


def reference_line(name: str, accuracy: dict[str, float]) -> str:
    """``reference resnet34: clean accuracy val 0.8740, test 0.8620``."""
    cells = ", ".join(f"{split} {acc:.4f}" for split, acc in sorted(accuracy.items(), reverse=True))
    return f"reference {name}: clean accuracy {cells or 'not measured'}"
