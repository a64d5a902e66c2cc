"""``python -m nas.evolve``: the neuroevolution search (paper Algorithm 1), durable and resumable.

```
python -m nas.evolve --reference resnet34                  # the paper's configuration
python -m nas.evolve --reference resnet34 --preset quick   # minutes on a 2-core CPU
python -m nas.evolve --preset smoke                        # synthetic data, seconds
python -m nas.evolve --resume runs/<name>                  # continue; nothing finished is lost
```
The flags are in :func:`build_parser`; the driver (the same search from Python) in
:mod:`nas.search.driver`; the loop in :mod:`nas.search.ga`; the run directory in
:mod:`nas.search.rundir`; the parallel map in :mod:`nas.search.parallel`. docs/search.md
explains it all.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.cli import ArgumentParser, defense_arg, defense_args, run
from nas.devices import parse_devices
from nas.errors import Fault, disk_fault
from nas.reporting.runview import ranked, ranking_note, selection_fitness
from nas.search import config as cfgmod
from nas.search.config import EvolveConfig
from nas.search.driver import evolve, new_run_path, reference_line
from nas.search.rundir import CONFIG, FINAL, load_config
from nasbase.values import nonneg_float, nonneg_int, positive_float, positive_int, unit_float

__all__ = ["build_parser", "main"]


#: Column heads of the held-out summary numbers (:mod:`nas.evaluation.heldout`).
_HEADS = {"held_out_worst": "worst case", "white_box_acc": "white-box PGD"}


def final_table(final: dict[str, Any]) -> str:
    """The final population as a plain-text table, best first, with a caption saying what it
    is ranked by: search fitness, refined validation fitness (``val F``) and test metrics."""
    sources = sorted({k for m in final["population"]
                      for k in ((m.get("test") or {}).get("held_out") or {})})
    sources += [k for k in ("held_out_worst", "white_box_acc")  # nas.evaluation.heldout
                if any((m.get("test") or {}).get(k) is not None for m in final["population"])]
    head = (f"{'id':<12} {'spectrum':<18} {'search F':>8} {'val F':>7} {'test clean':>10} "
            f"{'test adv':>9} {'test F':>7}") + "".join(
                f" {_HEADS.get(n, 'adv ' + n):>{max(9, len(n) + 4)}}" for n in sources)
    lines = [f"final population, {ranking_note(final.get('fitness_split', 'val'))}:", head,
             "-" * len(head)]
    if sources:
        lines.insert(1, "test adv = transferred from the reference; adv <source> = from a held-out "
                        "source (trained with CE, never used by the search)")
    if "held_out_worst" in sources:
        lines.insert(2, "worst case = the lowest held-out column (read it first); white-box "
                        "PGD = the network attacked itself (not transfer)")
    for m in ranked(final):
        test = m.get("test") or {}
        cells = [test.get(k) for k in ("val_fitness", "clean_acc", "adv_acc", "fitness")]
        fmt = ["-" if c is None else f"{float(c):.4f}" for c in cells]
        held = {**(test.get("held_out") or {}),
                **{k: test.get(k) for k in ("held_out_worst", "white_box_acc")}}
        extra = "".join(
            " "
            f"{'-' if held.get(n) is None else format(float(held[n]), '.4f'):>{max(9, len(n) + 4)}}"
            for n in sources)
        lines.append(f"{m['id']:<12} {str(tuple(m['spectrum'])):<18} "
                     f"{float(m['metrics']['fitness']):>8.4f} {fmt[0]:>7} {fmt[1]:>10} {fmt[2]:>9} "
                     f"{fmt[3]:>7}{extra}")
    lines += replicate_lines(final)
    return "\n".join(lines)


#: The columns of :func:`replicate_lines`: (record key, heading).
REPLICATE_COLUMNS = (("val_fitness", "val F"), ("fitness", "test F"), ("clean_acc", "clean"),
                     ("adv_acc", "transferred"), ("held_out_worst", "worst case"))


def replicate_lines(final: dict[str, Any]) -> list[str]:
    """Per finalist trained several times (``--replicates``): the mean and 95 % interval of
    each score over its replicates (what compares architectures), beside the table above
    (the replicate kept for deployment). Empty when no finalist has replicates."""
    from nas.evaluation.stats import mean_pm

    rows = [(m["id"], (m.get("test") or {}).get("replicates")) for m in ranked(final)]
    rows = [(cid, reps) for cid, reps in rows if isinstance(reps, list) and len(reps) > 1]
    if not rows:
        return []
    cols = [(k, h) for k, h in REPLICATE_COLUMNS
            if any(r.get(k) is not None for _, reps in rows for r in reps)]
    out = ["", f"replicates (mean and 95 % interval over the {len(rows[0][1])} trainings of each "
               "finalist; a failed one counts 0; the table above shows the replicate kept):",
           f"{'id':<12}" + "".join(f" {h:>21}" for _, h in cols)]
    for cid, reps in rows:
        cells = [mean_pm([float(r.get(key) or 0.0) for r in reps]) for key, _ in cols]
        out.append(f"{cid:<12}" + "".join(f" {c:>21}" for c in cells))
    return out


def best_line(final: dict[str, Any]) -> str:
    """The first finalist of :func:`ranked` and its test numbers (reported, not chosen by,
    under ``--fitness-split val``)."""
    best = ranked(final)[0] if final["population"] else None
    if best is None:
        return "best evolved network: none (empty population)"
    split = final.get("fitness_split", "val")
    rank = selection_fitness(best.get("metrics"), best.get("test"), split)
    reps = (best.get("test") or {}).get("replicates") or []
    mean = "mean " if split != "test" and len(reps) > 1 else ""
    chosen = f"highest {mean}{'test' if split == 'test' else 'validation'} fitness {rank:.4f}"
    t = best.get("test") or {}
    if t.get("fitness") is None:
        return f"best evolved network {best['id']} ({chosen}): no test metrics (refinement skipped)"
    return (f"best evolved network {best['id']} ({chosen}): test fitness {float(t['fitness']):.4f} "
            f"(clean {float(t['clean_acc']):.4f}, transferred adversarial "
            f"{float(t['adv_acc']):.4f})")


def _defaults() -> dict[str, Any]:
    """Default of every key (search, execution and fitness settings) for the help text."""
    import dataclasses

    from nas.evaluation.fitness import FitnessSettings
    from nas.search.config import ExecSettings, SearchSettings

    out: dict[str, Any] = {}
    for cls in (SearchSettings, ExecSettings, FitnessSettings):
        out.update({f.name: f.default for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING})
    return {**out, **cfgmod.PRESETS["paper"]}


# (flag, type, help); the key is the flag name with "_"; the default comes from the dataclasses.
_SEARCH_FLAGS = [
    ("--population", positive_int, "s, candidates in the population (paper Alg. 1; §4: four or "
                                   "five)"),
    ("--children", positive_int, "n, children per candidate per generation (paper §4: two)"),
    ("--generations", nonneg_int, "g, generations (paper §4: 50)"),
    ("--min-distance", nonneg_float, "d, min pairwise spectrum distance (eq. 3) of the initial "
                                     "population (paper §4: 4)"),
    ("--mutations-min", positive_int, "fewest mutation operators per child (aggressive mutation, "
                                      "paper §4: 4-5)"),
    ("--mutations-max", positive_int, "most mutation operators per child"),
    ("--epochs", positive_int, "training epochs of a child (paper §4: 20)"),
    ("--epochs-step", nonneg_int, "epochs added every --epochs-every generations (paper §4: +5)"),
    ("--epochs-every", positive_int, "generations between epoch increments (paper §4: 10)"),
    ("--refine-epochs", nonneg_int, "epochs the final population is trained for before the test "
                                    "report (paper §4: 1000; 0 = skip)"),
    ("--seed", nonneg_int, "run seed: every random draw and child seed derives from (seed, "
                           "generation, child)"),
    ("--max-channels", positive_int, "channel cap of the search space"),
    ("--max-nodes", positive_int, "node cap of a genome"),
    ("--max-mmacs", nonneg_float, "cap on a genome's multiply-accumulates per image, in millions "
                                  "(bounds the slowest child's training time; 0: none)"),
    ("--refine-patience", nonneg_int, "refinement stops after this many epochs without a better "
                                      "validation fitness, keeping the best weights (0: exactly "
                                      "--refine-epochs)"),
    ("--refine-draws", positive_int, "replicates: train each finalist this many times from "
                                     "independent seeds, score every replicate on the test split "
                                     "(mean and 95 %% interval), rank finalists by their mean "
                                     "validation fitness and keep the replicate best on "
                                     "validation for deployment (1: one training; the report's "
                                     "baselines get as many)"),
    ("--strategy", str, "ga (paper Algorithm 1), random (random search over the same space, "
                        "same evaluation, same number of children) or aging (regularized "
                        "evolution: each child replaces the oldest member; a baseline)"),
    ("--init-samples", nonneg_int, "K: generation 0 trains K random genomes and keeps the s "
                                   "fittest at spectrum distance >= d (random search: the s "
                                   "fittest; 0: s, Algorithm 1 as written; each extra sample "
                                   "costs one child)"),
    ("--reject-margin", nonneg_float, "with --early-reject: stop a child whose fitness at a rung "
                                      "is below its threshold by more than this"),
    ("--reevaluate-margin", nonneg_float, "noise-aware selection: when a child beats its "
                                          "nearest member by at most this, train the member "
                                          "again from a fresh seed first; its fitness is the "
                                          "mean of its draws (0: Algorithm 1 as written; "
                                          "python -m nas.fidelity measures the noise)"),
    ("--max-draws", positive_int, "most trainings of one member under --reevaluate-margin"),
    ("--stagnation", nonneg_int, "G: after G generations in a row without a replacement, the "
                                 "next generation's children are immigrants (fresh samples "
                                 "of the space) compared by Algorithm 1's rule (0: off)"),
]
_FITNESS_FLAGS = [
    ("--dataset", str, "dataset: fashion-mnist, mnist, kmnist, cifar10 (paper), synthetic; "
                       "folder:DIR (DIR/train/<class>/<image>, DIR/test/...), npz:FILE (x_train, "
                       "y_train, x_test, y_test), or a plugin's (--list)"),
    ("--image-size", str, "resize every image of a folder: dataset to N (or HxW) pixels; "
                          "needed when its images have several sizes"),
    ("--train-size", positive_int, "training images (balanced per class; paper §4.2 reduced sets)"),
    ("--val-size", nonneg_int, "validation images held out from training (the fitness split)"),
    ("--test-size", positive_int, "test images (final report only)"),
    ("--reference", str, "reference network: resnet34 (paper), resnet18, vgg16_bn, densenet121, "
                         "squeezenet1_1, mobilenet_v3_small, lenet5, vit_mini, he-ref, "
                         "he-baseline; "
                         "torchvision:NAME (any torchvision classifier, stem adapted), "
                         "genome:FILE.json, module:pkg.mod:factory (factory(info) -> nn.Module); "
                         "a+b: an ensemble reference (mean softmax; GM and the transferred sets "
                         "use the ensemble)"),
    ("--reference-epochs", positive_int, "most CE epochs of the reference (trained to its "
                                         "validation plateau, cached)"),
    ("--reference-patience", nonneg_int, "stop the reference after this many epochs without a "
                                         "better validation accuracy (0: train exactly "
                                         "--reference-epochs)"),
    ("--reference-weights", str, "load the reference's weights from this file instead of training"),
    ("--attack", str, "attack making the transferred examples: fgsm, bim, pgd-linf (paper), "
                      "pgd-l2, mim"),
    ("--eps", unit_float, "attack budget in pixel space [0, 1]"),
    ("--step-size", positive_float, "attack step size"),
    ("--steps", positive_int, "attack iterations"),
    ("--defense", str, "training objective of the children: gm (paper §3.1), none, ot, ncen, "
                       "cldl, stylized"),
    ("--batch-size", positive_int, "training batch size (paper §4: 128)"),
    ("--recipe", str, "training recipe of reference, children and refinement: paper (Adam, "
                      "PyTorch defaults, constant rate, paper §4) or cpu (docs/fitness.md)"),
    ("--lr", positive_float, "peak learning rate (default: the recipe's)"),
    ("--device", str, "cpu, cuda or auto (with --devices: auto, or the list's kind)"),
    ("--held-out", str, "held-out attack sources, comma-separated reference names or forms, "
                        "NAME=FILE to load one's weights (e.g. "
                        "he-baseline,squeezenet1_1): trained with CE, never used by the search; "
                        "their transferred accuracy is reported for the finalists"),
    ("--held-out-attacks", str, "attacks crafted on every held-out source, comma-separated (e.g. "
                                "pgd-linf,mi-fgsm,di-mi-fgsm; empty: --attack); adds the worst "
                                "case over sources x attacks and white-box PGD to the finalists"),
    ("--fitness-split", str, "split the fitness (eq. 4) is measured on: val, or test (the paper's "
                             "protocol)"),
    ("--data-root", str, "read-only directory with the raw datasets (else NAS_DATA_ROOT)"),
    ("--cache-dir", str, "cache directory for data, references and adversarial sets"),
]


def _shown(defaults: dict[str, Any], key: str) -> str:
    """How a default appears in --help."""
    value = defaults.get(key)
    if value is None and key in ("eps", "step_size", "steps"):
        return "the attack's per-dataset default"
    return "unset" if value is None else str(value)


#: Other names of a flag.
ALIASES = {"--refine-draws": ("--replicates",)}


def _key(flag: str) -> str:
    return flag[2:].replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m nas.evolve`` (every flag documented, defaults shown)."""
    d = _defaults()
    p = ArgumentParser(
        prog="python -m nas.evolve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Neuroevolution search for networks adversarial examples do not transfer "
        "to (paper Algorithm 1 with GM training).",
        epilog="Layering: defaults (= --preset paper) < --preset < --config < explicit flags. "
        "See docs/howto.md; your own data, references and defenses: docs/extending.md.")
    run_g = p.add_argument_group("run")
    run_g.add_argument("--preset", choices=sorted(cfgmod.PRESETS),
                       help="paper (the defaults), quick (Fashion-MNIST, minutes on a 2-core "
                       "CPU), cpu (reduced Fashion-MNIST 10k/1k/1k, he-ref, planned at <= 2 h on "
                       "2 cores; with --dataset mnist the MNIST run, tuned for MNIST: 12-epoch "
                       "children, 36 samples in generation 0, 12 generations, 3 draws per "
                       "finalist), gpu (the paper's reduced CIFAR-10 experiment, he-ref, 20 "
                       "generations, 4 children at a time on cuda:0, sized for about one "
                       "GPU-hour: an estimate until measured, docs/gpu.md) or smoke (synthetic "
                       "data, seconds)")
    run_g.add_argument("--config", metavar="FILE", help="JSON file of settings (flat keys, or a "
                                                        "run's config.json)")
    run_g.add_argument("--run-dir", default="runs", help="parent directory of run directories "
                                                         "(default: runs)")
    run_g.add_argument("--name", help="run directory name (default: "
                                      "<date>-<time>-<dataset>-<reference>-s<seed>)")
    run_g.add_argument("--plugin", action="append", metavar="MODULE",
                       help="import this module first: it registers datasets, references or "
                       "defenses (repeatable; recorded in the run's config and imported by every "
                       "worker). Installed packages register through entry points instead")
    run_g.add_argument("--list", action="store_true",
                       help="print every registered dataset, reference, defense and attack with "
                       "where it came from (built-in, entry point, --plugin) and exit")
    run_g.add_argument("--resume", metavar="RUN", help="continue the run in this directory (its "
                                                       "stored config is used)")
    for title, flags in (("search (paper §3.2, §4)", _SEARCH_FLAGS),
                         ("training and fitness", _FITNESS_FLAGS)):
        g = p.add_argument_group(title)
        for flag, typ, text in flags:
            g.add_argument(flag, *ALIASES.get(flag, ()), dest=_key(flag), type=typ,
                           help=f"{text} (default: {_shown(d, _key(flag))})")
        if title.startswith("search"):
            g.add_argument("--sequential", action=argparse.BooleanOptionalAction, default=None,
                           help="follow Algorithm 1 line by line (children of candidate i mutate "
                           "from the current population) instead of evaluating a generation in "
                           "parallel")
            g.add_argument("--early-reject", action=argparse.BooleanOptionalAction, default=None,
                           help="race each child against its replacement threshold: stop it after "
                           "1/3 or 2/3 of its epochs when its fitness is below the threshold by "
                           "more than --reject-margin (status rejected; it never replaces); on in "
                           "--preset cpu, --no-early-reject gives Algorithm 1 as written")
            g.add_argument("--common-seeds", action=argparse.BooleanOptionalAction, default=None,
                           help="common random numbers: train every child of a generation from "
                           "the same seed (data order, augmentation, attack draws), so children "
                           "differ by architecture, not by luck")
            g.add_argument("--inherit", action=argparse.BooleanOptionalAction, default=None,
                           help="a child starts from its parent's trained weights for every node "
                           "the mutation left unchanged (Lamarckian)")
    g.add_argument("--full-test", action=argparse.BooleanOptionalAction, default=None,
                   help="score the finalists (and the report's baselines) on the dataset's whole "
                   "test set, and on the --test-size subset of the paper's protocol beside it "
                   f"(default: {_shown(d, 'full_test')}; on in --preset cpu)")
    g.add_argument("--defense-arg", action="append", type=defense_arg, metavar="KEY=VALUE",
                   help="hyper-parameter of the defense, repeatable (e.g. lam=1.0, k=3)")
    g.add_argument("--lambda", dest="lam", type=nonneg_float,
                   help="GM weight lambda of eq. 2 (= --defense-arg lam=VALUE)")
    ex = p.add_argument_group("execution (may change on --resume)")
    ex.add_argument("--workers", type=positive_int, help="children evaluated at once (default: "
                                                         f"{d['workers']})")
    ex.add_argument("--backend", choices=["loky", "dask"],
                    help="loky: local processes (default); dask: a Dask cluster")
    ex.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (with "
                                        "--backend dask)")
    ex.add_argument("--devices", type=parse_devices, metavar="LIST",
                    help="pin children to these devices, comma-separated: cuda:0,cuda:1 (or "
                    "cpu); children run on len(LIST) x --workers-per-device slots and --workers "
                    "is not used; with --backend dask a local cluster of those slots "
                    "(dask-cuda's LocalCUDACluster when installed). See docs/gpu.md (default: "
                    "none, every child on --device)")
    ex.add_argument("--workers-per-device", type=positive_int, metavar="N",
                    help="children trained at the same time on each of --devices (default: "
                    f"{d['workers_per_device']})")
    ex.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                    help="no live progress line (it is also off when stderr is not a terminal)")
    return p


def flags_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The explicitly given settings as a flat dict (``None`` = not given)."""
    keys = [_key(f) for f, _, _ in _SEARCH_FLAGS + _FITNESS_FLAGS] + ["full_test", "sequential",
                                                                      "early_reject", "inherit",
                                                                      "common_seeds",
                                                                      "workers", "backend",
                                                                      "scheduler", "progress",
                                                                      "devices",
                                                                      "workers_per_device"]
    flags = {k: getattr(args, k) for k in keys}
    flags["defense_args"] = defense_args(args.defense_arg, args.lam) or None
    flags["plugins"] = tuple(args.plugin) if args.plugin else None
    return flags


def new_run_dir(args: argparse.Namespace, cfg: EvolveConfig) -> str:
    """``--run-dir``/``--name`` of a fresh search (:func:`nas.search.driver.new_run_path`)."""
    return new_run_path(args.run_dir, args.name, cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nas.evolve``."""
    args = build_parser().parse_args(argv)
    if args.list:
        from nas.plugins import listing, load_plugins

        load_plugins(args.plugin or ())
        print(listing())
        return 0
    flags = flags_from_args(args)
    if args.resume:
        cfg = cfgmod.resolve_resume(load_config(args.resume), flags, preset=args.preset,
                                    config_file=args.config, run_dir=args.resume)
    else:
        cfg = cfgmod.resolve(flags, preset=args.preset, config_file=args.config, run_dir="")
        cfg = EvolveConfig(cfg.search, cfg.fitness, cfg.execution, new_run_dir(args, cfg))
    try:
        outcome = evolve(cfg, resume=bool(args.resume))
    except OSError as exc:
        what = disk_fault(exc)
        if what is None or not (Path(cfg.run_dir) / CONFIG).exists():
            raise  # a new run that could not start: the same command starts it again
        raise Fault(f"{what}; the run folder is intact: free space (or make it writable), then "
                    f"continue with: python -m nas.evolve --resume {cfg.run_dir}") from None
    print(final_table(outcome.final))
    print(reference_line(cfg.fitness.reference, outcome.reference_acc))
    for name, acc in outcome.held_out_acc.items():
        print(f"held-out source {name}: clean accuracy test {acc:.4f}")
    print(best_line(outcome.final))
    print(f"final population written to {Path(cfg.run_dir) / FINAL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
