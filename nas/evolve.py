"""``python -m nas.evolve``: the neuroevolution search (paper Algorithm 1), durable and resumable.

```
python -m nas.evolve --reference resnet34                  # the paper's configuration
python -m nas.evolve --reference resnet34 --preset quick   # minutes on a 2-core CPU
python -m nas.evolve --preset smoke                        # synthetic data, seconds
python -m nas.evolve --resume runs/<name>                  # continue; nothing finished is lost
```
The flags are in :func:`build_parser`; the search loop in :mod:`nas.ga`; the run directory
in :mod:`nas.rundir`; the parallel map in :mod:`nas.parallel`. docs/search.md explains it all.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas import config as cfgmod
from nas._runview import ranking_note, selection_fitness
from nas.cli import UserError, run
from nas.config import EvolveConfig
from nas.ga import (
    GenomeOps,
    build_toolbox,
    genome_ops,
    initial_genomes,
    initial_population,
    steady_state,
)
from nas.parallel import ChildEvaluator
from nas.rundir import FINAL, POPULATION, EventLog, create_run, load_config, open_run, write_json

__all__ = ["build_parser", "main", "run_search", "Progress"]


class Progress:
    """The live line: children done / running / failed, best fitness, ETA from child times."""

    def __init__(self, total: int, *, workers: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="child", file=sys.stderr, dynamic_ncols=True,
                        disable=not enabled, bar_format="{desc}{n_fmt}/{total_fmt} children "
                        "[{elapsed}] {postfix}")
        self.workers, self.running, self.failed, self.best = max(1, workers), 0, 0, None
        self.trained_seconds: list[float] = []

    def child_done(self, metrics: dict[str, Any], *, reused: bool = False, replayed: bool = False) -> None:
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
        self.bar.set_postfix_str(f"running={self.running} failed={self.failed} best={best} "
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
    options = {k: v for k, v in (("strategy", search.strategy), ("early_reject", search.early_reject),
                                 ("inherit", search.inherit)) if v not in ("ga", False)}
    events.emit({"type": "run_resumed" if resumed else "run_started", "seed": search.seed, **options})
    ex = cfg.execution
    evaluator = ChildEvaluator(events, run_dir, search, workers=ex.workers, backend=ex.backend,
                               scheduler=ex.scheduler, progress=progress)
    toolbox = build_toolbox(search, ops, evaluate=evaluate, map_fn=evaluator.map, emit=events.emit)
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

    population = initial_population(toolbox, search, ops)
    population, logbook, hof = steady_state(toolbox, population, search, on_generation)
    refined = evaluator.refine(evaluate, population) if search.refine_epochs > 0 else [None] * len(population)
    final = {
        "population": [{**ind.summary(), "test": res} for ind, res in zip(population, refined, strict=True)],
        "hall_of_fame": [ind.summary() for ind in hof],
        "logbook": [dict(r) for r in logbook],
        "refine_epochs": search.refine_epochs,
        "fitness_split": getattr(cfg.fitness, "fitness_split", "val"),
    }
    if search.strategy != "ga" or search.early_reject or search.inherit:
        final["search_cost"] = search_cost(events.events)
        final["strategy"] = search.strategy
    write_json(run_dir / FINAL, final)
    events.emit({"type": "run_finished", "population": [ind.child_id for ind in population]})
    return final


def search_cost(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the search's children cost, from the log: children trained (not reused), rejected,
    child-epochs planned and trained, and the fraction of child-epochs early rejection saved."""
    trained = [e for e in events if e["type"] == "child_finished" and not e["reused"]]
    planned = sum(int(e["epochs"]) for e in trained)
    run = sum(int(e["metrics"].get("epochs", e["epochs"])) if e["metrics"].get("status") == "rejected"
              else int(e["epochs"]) for e in trained)
    return {"children_trained": len(trained),
            "rejected": sum(e["metrics"].get("status") == "rejected" for e in trained),
            "child_epochs_planned": planned, "child_epochs_trained": run,
            "child_epochs_saved_fraction": round(1 - run / planned, 4) if planned else 0.0,
            "inherited": sum(1 for e in trained if e.get("inherited_from"))}


def ranked(final: dict[str, Any]) -> list[dict[str, Any]]:
    """The final population best first, by :func:`nas._runview.selection_fitness` (validation
    fitness under ``--fitness-split val``; test fitness only under ``--fitness-split test``)."""
    split = final.get("fitness_split", "val")
    return sorted(final["population"],
                  key=lambda m: -selection_fitness(m.get("metrics"), m.get("test"), split))


def final_table(final: dict[str, Any]) -> str:
    """The final population as a plain-text table, best first, with a caption saying what it
    is ranked by: search fitness, refined validation fitness (``val F``) and test metrics."""
    sources = sorted({k for m in final["population"] for k in ((m.get("test") or {}).get("held_out") or {})})
    head = (f"{'id':<12} {'spectrum':<18} {'search F':>8} {'val F':>7} {'test clean':>10} "
            f"{'test adv':>9} {'test F':>7}") + "".join(f" {'adv ' + n:>{max(9, len(n) + 4)}}" for n in sources)
    lines = [f"final population, {ranking_note(final.get('fitness_split', 'val'))}:", head,
             "-" * len(head)]
    if sources:
        lines.insert(1, "test adv = transferred from the reference; adv <source> = from a held-out "
                        "source (trained with CE, never used by the search)")
    for m in ranked(final):
        test = m.get("test") or {}
        cells = [test.get(k) for k in ("val_fitness", "clean_acc", "adv_acc", "fitness")]
        fmt = ["-" if c is None else f"{float(c):.4f}" for c in cells]
        held = test.get("held_out") or {}
        extra = "".join(f" {'-' if held.get(n) is None else format(float(held[n]), '.4f'):>{max(9, len(n) + 4)}}"
                        for n in sources)
        lines.append(f"{m['id']:<12} {str(tuple(m['spectrum'])):<18} "
                     f"{float(m['metrics']['fitness']):>8.4f} {fmt[0]:>7} {fmt[1]:>10} {fmt[2]:>9} "
                     f"{fmt[3]:>7}{extra}")
    return "\n".join(lines)


def reference_line(name: str, accuracy: dict[str, float]) -> str:
    """``reference resnet34: clean accuracy val 0.8740, test 0.8620``."""
    cells = ", ".join(f"{split} {acc:.4f}" for split, acc in sorted(accuracy.items(), reverse=True))
    return f"reference {name}: clean accuracy {cells or 'not measured'}"


def best_line(final: dict[str, Any]) -> str:
    """The first finalist of :func:`ranked` and its test numbers (reported, not chosen by,
    under ``--fitness-split val``)."""
    best = ranked(final)[0] if final["population"] else None
    if best is None:
        return "best evolved network: none (empty population)"
    split = final.get("fitness_split", "val")
    rank = selection_fitness(best.get("metrics"), best.get("test"), split)
    chosen = f"highest {'test' if split == 'test' else 'validation'} fitness {rank:.4f}"
    t = best.get("test") or {}
    if t.get("fitness") is None:
        return f"best evolved network {best['id']} ({chosen}): no test metrics (refinement skipped)"
    return (f"best evolved network {best['id']} ({chosen}): test fitness {float(t['fitness']):.4f} "
            f"(clean {float(t['clean_acc']):.4f}, transferred adversarial {float(t['adv_acc']):.4f})")


def _defaults() -> dict[str, Any]:
    """Default of every key (search, execution and fitness settings) for the help text."""
    import dataclasses

    from nas.config import ExecSettings, SearchSettings

    out: dict[str, Any] = {}
    for cls in (SearchSettings, ExecSettings):
        out.update({f.name: f.default for f in dataclasses.fields(cls)})
    try:
        from nas.fitness import FitnessSettings

        out.update({f.name: f.default for f in dataclasses.fields(FitnessSettings)
                    if f.default is not dataclasses.MISSING})
    except ImportError:  # pragma: no cover
        pass
    return {**out, **cfgmod.PRESETS["paper"]}


# (flag, type, help); the key is the flag name with "_"; the default comes from the dataclasses.
_SEARCH_FLAGS = [
    ("--population", int, "s, candidates in the population (paper Alg. 1; §4: four or five)"),
    ("--children", int, "n, children per candidate per generation (paper §4: two)"),
    ("--generations", int, "g, generations (paper §4: 50)"),
    ("--min-distance", float, "d, min pairwise spectrum distance (eq. 3) of the initial population (paper §4: 4)"),
    ("--mutations-min", int, "fewest mutation operators per child (aggressive mutation, paper §4: 4-5)"),
    ("--mutations-max", int, "most mutation operators per child"),
    ("--epochs", int, "training epochs of a child (paper §4: 20)"),
    ("--epochs-step", int, "epochs added every --epochs-every generations (paper §4: +5)"),
    ("--epochs-every", int, "generations between epoch increments (paper §4: 10)"),
    ("--refine-epochs", int, "epochs the final population is trained for before the test report (paper §4: 1000; 0 = skip)"),
    ("--seed", int, "run seed: every random draw and child seed derives from (seed, generation, child)"),
    ("--max-channels", int, "channel cap of the search space"),
    ("--max-nodes", int, "node cap of a genome"),
    ("--refine-patience", int, "refinement stops after this many epochs without a better validation accuracy, keeping the best weights (0: exactly --refine-epochs)"),
    ("--strategy", str, "ga (paper Algorithm 1) or random (random search over the same space, same evaluation, same number of children)"),
    ("--reject-margin", float, "with --early-reject: stop a child whose fitness at a rung is below its threshold by more than this"),
]
_FITNESS_FLAGS = [
    ("--dataset", str, "dataset: fashion-mnist, mnist, kmnist, cifar10 (paper), synthetic"),
    ("--train-size", int, "training images (balanced per class; paper §4.2 reduced sets)"),
    ("--val-size", int, "validation images held out from training (the fitness split)"),
    ("--test-size", int, "test images (final report only)"),
    ("--reference", str, "reference network: resnet34 (paper), resnet18, vgg16_bn, densenet121, squeezenet1_1, he-ref, he-baseline"),
    ("--reference-epochs", int, "most CE epochs of the reference (trained to its validation plateau, cached)"),
    ("--reference-patience", int, "stop the reference after this many epochs without a better validation accuracy (0: train exactly --reference-epochs)"),
    ("--reference-weights", str, "load the reference's weights from this file instead of training"),
    ("--attack", str, "attack making the transferred examples: fgsm, bim, pgd-linf (paper), pgd-l2, mim"),
    ("--eps", float, "attack budget in pixel space [0, 1]"),
    ("--step-size", float, "attack step size"),
    ("--steps", int, "attack iterations"),
    ("--defense", str, "training objective of the children: gm (paper §3.1), none, ot, ncen, cldl, stylized"),
    ("--batch-size", int, "training batch size (paper §4: 128)"),
    ("--recipe", str, "training recipe of reference, children and refinement: paper (Adam, PyTorch defaults, constant rate, paper §4) or cpu (docs/fitness.md)"),
    ("--lr", float, "peak learning rate (default: the recipe's)"),
    ("--device", str, "cpu, cuda or auto"),
    ("--held-out", str, "held-out attack sources, comma-separated reference names (e.g. he-baseline,squeezenet1_1): trained with CE, never used by the search; their transferred accuracy is reported for the finalists"),
    ("--fitness-split", str, "split the fitness (eq. 4) is measured on: val, or test (the paper's protocol)"),
    ("--data-root", str, "read-only directory with the raw datasets (else NAS_DATA_ROOT)"),
    ("--cache-dir", str, "cache directory for data, references and adversarial sets"),
]


def _shown(defaults: dict[str, Any], key: str) -> str:
    """How a default appears in --help."""
    value = defaults.get(key)
    if value is None and key in ("eps", "step_size", "steps"):
        return "the attack's per-dataset default"
    return "unset" if value is None else str(value)


def _key(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _defense_arg(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value) with the value parsed as JSON when possible (numbers)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m nas.evolve`` (every flag documented, defaults shown)."""
    d = _defaults()
    p = argparse.ArgumentParser(
        prog="python -m nas.evolve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Neuroevolution search for networks adversarial examples do not transfer "
        "to (paper Algorithm 1 with GM training).",
        epilog="Layering: defaults (= --preset paper) < --preset < --config < explicit flags. "
        "See docs/search.md.")
    run_g = p.add_argument_group("run")
    run_g.add_argument("--preset", choices=sorted(cfgmod.PRESETS), help="paper (the defaults), quick "
                       "(Fashion-MNIST, minutes on a 2-core CPU), cpu (reduced Fashion-MNIST 10k/1k/1k, "
                       "he-ref, planned at <= 2 h on 2 cores; with --dataset mnist the MNIST run) or "
                       "smoke (synthetic data, seconds)")
    run_g.add_argument("--config", metavar="FILE", help="JSON file of settings (flat keys, or a run's config.json)")
    run_g.add_argument("--run-dir", default="runs", help="parent directory of run directories (default: runs)")
    run_g.add_argument("--name", help="run directory name (default: <date>-<time>-<dataset>-<reference>-s<seed>)")
    run_g.add_argument("--resume", metavar="RUN", help="continue the run in this directory (its stored config is used)")
    for title, flags in (("search (paper §3.2, §4)", _SEARCH_FLAGS), ("training and fitness", _FITNESS_FLAGS)):
        g = p.add_argument_group(title)
        for flag, typ, text in flags:
            g.add_argument(flag, type=typ, help=f"{text} (default: {_shown(d, _key(flag))})")
        if title.startswith("search"):
            g.add_argument("--sequential", action="store_true", default=None,
                           help="follow Algorithm 1 line by line (children of candidate i mutate from the "
                           "current population) instead of evaluating a generation in parallel")
            g.add_argument("--early-reject", action="store_true", default=None,
                           help="race each child against its replacement threshold: stop it after 1/3 or "
                           "2/3 of its epochs when its fitness is below the threshold by more than "
                           "--reject-margin (status rejected; it never replaces)")
            g.add_argument("--inherit", action="store_true", default=None,
                           help="a child starts from its parent's trained weights for every node the "
                           "mutation left unchanged (Lamarckian)")
    g.add_argument("--defense-arg", action="append", type=_defense_arg, metavar="KEY=VALUE",
                   help="hyper-parameter of the defense, repeatable (e.g. lam=1.0, k=3)")
    g.add_argument("--lambda", dest="lam", type=float, help="GM weight lambda of eq. 2 (= --defense-arg lam=VALUE)")
    ex = p.add_argument_group("execution (may change on --resume)")
    ex.add_argument("--workers", type=int, help=f"children evaluated at once (default: {d['workers']})")
    ex.add_argument("--backend", choices=["loky", "dask"], help="loky: local processes (default); dask: a Dask cluster")
    ex.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (with --backend dask)")
    ex.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                    help="no live progress line (it is also off when stderr is not a terminal)")
    return p


def flags_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The explicitly given settings as a flat dict (``None`` = not given)."""
    keys = [_key(f) for f, _, _ in _SEARCH_FLAGS + _FITNESS_FLAGS] + ["sequential", "early_reject", "inherit", "workers",
                                                                     "backend", "scheduler", "progress"]
    flags = {k: getattr(args, k) for k in keys}
    pairs = dict(args.defense_arg or [])
    if args.lam is not None:
        pairs["lam"] = args.lam
    flags["defense_args"] = pairs or None
    return flags


def input_shape_of(cfg: EvolveConfig) -> tuple[int, int, int]:
    """Input shape ``(C, H, W)`` of the search's dataset (from the registry; loads no data)."""
    from nas.data import dataset_info

    return tuple(dataset_info(cfg.fitness.dataset).input_shape)


def check_names(fitness: Any) -> None:
    """Fail fast (before any file is written) on an unknown dataset, reference, attack or
    defense, or a defense argument the defense does not take."""
    from defenses import DEFENSES
    from nas.attacks import ATTACKS
    from nas.data import DATASETS
    from nas.fitness import check_defense
    from nas.references import REFERENCES

    DATASETS.get(fitness.dataset)
    REFERENCES.get(fitness.reference)
    ATTACKS.get(fitness.attack)
    for name in fitness.held_out:
        REFERENCES.get(name)
    if fitness.reference in fitness.held_out:
        raise UserError(f"--held-out must not contain the reference {fitness.reference!r}")
    DEFENSES.get(fitness.defense)
    check_defense(fitness)
    if fitness.fitness_split not in ("val", "test"):
        raise UserError(f"--fitness-split must be val or test, not {fitness.fitness_split!r}")


def default_name(cfg: EvolveConfig) -> str:
    """``<date>-<time>-<dataset>-<reference>-s<seed>``."""
    fit = cfg.fitness
    return (f"{time.strftime('%Y%m%d-%H%M%S')}-{getattr(fit, 'dataset', 'data')}-"
            f"{getattr(fit, 'reference', 'ref')}-s{cfg.search.seed}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nas.evolve``."""
    from nas.fitness import evaluate_genome, prepare

    args = build_parser().parse_args(argv)
    flags = flags_from_args(args)
    if args.resume:
        cfg = cfgmod.resolve_resume(load_config(args.resume), flags, preset=args.preset,
                                    config_file=args.config, run_dir=args.resume)
    else:
        cfg = cfgmod.resolve(flags, preset=args.preset, config_file=args.config, run_dir="")
        name = args.name or default_name(cfg)
        cfg = EvolveConfig(cfg.search, cfg.fitness, cfg.execution, str(Path(args.run_dir) / name))
        if Path(cfg.run_dir).exists() and any(Path(cfg.run_dir).iterdir()):
            raise UserError(f"run directory {cfg.run_dir} already exists; use --resume "
                            f"{cfg.run_dir} or another --name")
    check_names(cfg.fitness)
    show = cfg.execution.progress and sys.stderr.isatty()
    ops = genome_ops(cfg.search, input_shape_of(cfg))
    if not args.resume:  # fail fast, before the reference is trained: can Algorithm 1 line 1 run?
        initial_genomes(cfg.search, ops)
    workspace = prepare(cfg.fitness, progress=show, log=print)
    print(reference_line(cfg.fitness.reference, workspace.reference_acc))
    if args.resume:
        events = open_run(cfg.run_dir, log=print)
    else:
        events = create_run(cfg.run_dir, cfg.to_dict())
        print(f"run directory: {cfg.run_dir}")
    s = cfg.search
    total = s.population * (1 + s.generations * s.children) + (s.population if s.refine_epochs else 0)
    progress = Progress(total, workers=cfg.execution.workers, enabled=show)
    try:
        final = run_search(cfg, ops=ops, evaluate=functools.partial(evaluate_genome, settings=cfg.fitness),
                           events=events, resumed=bool(args.resume), progress=progress, log=progress.write)
    finally:
        progress.close()
        events.close()
    print(final_table(final))
    print(reference_line(cfg.fitness.reference, workspace.reference_acc))
    for name, acc in workspace.held_out_acc.items():
        print(f"held-out source {name}: clean accuracy test {acc:.4f}")
    print(best_line(final))
    print(f"final population written to {Path(cfg.run_dir) / FINAL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
