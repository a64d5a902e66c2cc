"""``python -m nas.fidelity``: does a child's fitness at the search's budget rank like its
fitness at a larger budget? (low-fidelity check of docs/fitness.md, "Child budget")

Samples ``--children`` children of the real search space (a sampled genome mutated as the
search mutates, under the preset's caps), trains each with the preset's defense and recipe
for ``--epochs`` (one budget or a comma-separated list, e.g. ``1,3``) and for ``--factor`` x
the largest of them (same seed), scores every budget on the fitness split and prints, for
each low budget, the Spearman rank correlation of clean accuracy, transferred accuracy and
fitness with the large budget (a list gives the curve). Every finished (child, budget) is
appended to ``--out`` (JSON lines) and skipped when the command is run again, so an
interrupted measurement continues where it stopped.

The noise where selection happens: ``--replicates R`` trains every (child, budget) from R
independent training seeds. The summary then adds, per budget, the mean over children of the
standard deviation of the fitness across seeds (``noise_sd``) against the spread of the
children's mean fitness (``signal_sd``), and Kendall's tau of the low budget's fitness with the
large budget's mean: of one draw (``kendall_fitness_one_draw``, what selection sees) and of
the low budget's mean (``kendall_fitness``). ``--full-test`` scores the large budget on the
whole test split (the final fitness a reviewer reads)::

    python -m nas.fidelity --preset quick --reference he-ref --train-size 10000 \\
        --val-size 1000 --test-size 1000 --children 20 --epochs 3 --factor 4 --out fid.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nas.cli import ArgumentParser, run
from nas.errors import UserError
from nas.search import config as cfgmod
from nasbase.values import int_list, nonneg_int, positive_float, positive_int

#: ``3`` or ``1,3`` -> sorted distinct positive epoch counts.
epoch_list = int_list(positive_int, "epochs such as 3 or 1,3", distinct_sorted=True)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m nas.fidelity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="quick", choices=sorted(cfgmod.PRESETS),
                   help="preset giving the search space caps, defense, recipe and batch size")
    p.add_argument("--reference", default=None, help="reference network (default: the preset's)")
    p.add_argument("--dataset", default=None, help="dataset (default: the preset's)")
    p.add_argument("--train-size", type=positive_int, default=None, help="training images")
    p.add_argument("--val-size", type=positive_int, default=None,
                   help="validation images (the fitness split)")
    p.add_argument("--test-size", type=positive_int, default=None, help="test images")
    p.add_argument("--recipe", default=None, help="training recipe (default: the preset's)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate (default: the preset's or the recipe's)")
    p.add_argument("--reference-epochs", type=positive_int, default=None,
                   help="epoch cap of the reference's training to its validation plateau "
                   "(default: the preset's)")
    p.add_argument("--reference-patience", type=nonneg_int, default=None,
                   help="epochs without a better validation accuracy before the reference "
                   "stops (default: the preset's)")
    p.add_argument("--children", type=positive_int, default=20, help="children to sample (>= 3)")
    p.add_argument("--epochs", type=epoch_list, default=None, metavar="E[,E...]",
                   help="the low budget(s) in epochs (default: the preset's child epochs)")
    p.add_argument("--factor", type=positive_int, default=4,
                   help="the large budget is factor x the largest low budget (>= 2)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sampled children")
    p.add_argument("--replicates", type=positive_int, default=1,
                   help="training seeds per (child, budget): the spread of the fitness over "
                   "seeds against the spread between children, and Kendall's tau of one draw")
    p.add_argument("--full-test", action="store_true",
                   help="score the large budget on the whole test split (the low budgets stay "
                   "on the fitness split, as the search scores them)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="trainings at the same time (default: the preset's workers)")
    p.add_argument("--out", default="fidelity.jsonl", help="JSON-lines file of the results")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")
    return p


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 pairs or a
    constant side (no ranking to correlate)."""
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def sample_children(n: int, seed: int, search: cfgmod.SearchSettings,
                    input_shape: tuple[int, int, int]) -> list[str]:
    """``n`` children as the search makes them: a sampled genome, then 4-5 mutations."""
    from nas.search.ga import genome_ops

    ops = genome_ops(search, input_shape)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        parent = ops.sample(rng)
        count = int(rng.integers(search.mutations_min, search.mutations_max + 1))
        out.append(ops.mutate(parent, rng, count))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from nas.evaluation.data import dataset_info
    from nas.evaluation.fitness import prepare
    from nas.search.parallel import Task, evaluate_tasks
    from nas.search.worker import evaluate_genome

    args = build_parser().parse_args(argv)
    if args.children < 3 or args.factor < 2:
        raise UserError("--children must be >= 3 and --factor >= 2")
    flags = {"reference": args.reference, "dataset": args.dataset, "train_size": args.train_size,
             "val_size": args.val_size, "test_size": args.test_size, "recipe": args.recipe,
             "lr": args.lr, "reference_epochs": args.reference_epochs,
             "reference_patience": args.reference_patience}
    cfg = cfgmod.resolve(flags, preset=args.preset, config_file=None, run_dir="")
    settings, search = cfg.fitness, cfg.search
    if args.full_test:
        settings = dataclasses.replace(settings, full_test=True)
    lows = args.epochs or [search.epochs]
    budgets = (*lows, args.factor * max(lows))
    out = Path(args.out)
    done = read_results(out)  # before any training: a wrong --out fails fast
    prepare(settings, progress=not args.no_progress and sys.stderr.isatty(),
            log=lambda m: print(m, file=sys.stderr))
    genomes = sample_children(args.children, args.seed, search,
                              dataset_info(settings.dataset).input_shape)
    high = "test" if args.full_test else None
    # Every budget and replicate of a child, then the next child; the search's own evaluator.
    tasks = [Task(child_id=f"{i}:{epochs}:{r}", genome=genome, epochs=epochs,
                  seed=i + 1_000_003 * r, split=high if epochs == budgets[-1] else None)
             for i, genome in enumerate(genomes) for epochs in budgets
             for r in range(args.replicates) if (i, epochs, r) not in done]
    workers = args.workers or cfg.execution.workers
    with out.open("a", encoding="utf-8") as f:
        for cid, res in evaluate_tasks(functools.partial(evaluate_genome, settings=settings),
                                       tasks, workers=workers):
            i, epochs, r = (int(v) for v in cid.split(":"))
            row = {"child": i, "epochs": epochs, "replicate": r, "fitness": res["fitness"],
                   "clean": res["clean_acc"], "adv": res["adv_acc"], "status": res["status"],
                   "seconds": res["seconds"], "params": res["params"]}
            done[(i, epochs, r)] = row
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(json.dumps(row), file=sys.stderr)
    print(json.dumps(summary(done, budgets, args.children, args.replicates)))
    return 0


def read_results(out: Path) -> dict[tuple[int, int, int], dict]:
    """The (child, epochs, replicate) results already in ``out`` (a row without a replicate
    is replicate 0); a last line cut by a kill is dropped from the file (that training runs
    again)."""
    if not out.exists():
        return {}
    if not out.is_file():
        raise UserError(f"--out {out}: not a file")
    data = out.read_bytes()
    done = {}
    complete = data[:data.rfind(b"\n") + 1]
    for line in complete.decode("utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
            done[(int(r["child"]), int(r["epochs"]), int(r.get("replicate", 0)))] = r
        except (ValueError, KeyError, TypeError):
            raise UserError(f"--out {out}: not a results file of nas.fidelity (line "
                            f"{line[:40]!r}); give another --out") from None
    if len(complete) < len(data):
        with out.open("r+b") as f:
            f.truncate(len(complete))
    return done


def summary(done: dict, budgets: tuple[int, ...], children: int, replicates: int = 1) -> dict:
    """Rank correlations of every low budget with the large one (the last of ``budgets``),
    the mean metrics of every budget and, with ``replicates`` > 1, the noise of the fitness
    over training seeds (see the module docstring), over the children measured at all."""
    reps = range(replicates)
    ids = [i for i in range(children)
           if all((i, e, r) in done for e in budgets for r in reps)]

    def mean(i: int, e: int, metric: str) -> float:
        return float(np.mean([done[(i, e, r)][metric] for r in reps]))

    report: dict = {"budgets": list(budgets), "children": len(ids), "replicates": replicates}
    high = budgets[-1]
    for metric in ("clean", "adv", "fitness"):
        b = [mean(i, high, metric) for i in ids]
        for low in budgets[:-1]:
            a = [mean(i, low, metric) for i in ids]
            key = f"spearman_{metric}" if len(budgets) == 2 else f"spearman_{metric}_{low}"
            report[key] = round(spearman(a, b), 3)
        report[f"mean_{metric}"] = [round(float(np.mean([mean(i, e, metric) for i in ids])), 4)
                                    if ids else None for e in budgets]
    final = [mean(i, high, "fitness") for i in ids]
    for low in budgets[:-1]:
        suffix = "" if len(budgets) == 2 else f"_{low}"
        report[f"kendall_fitness{suffix}"] = round(
            kendall([mean(i, low, "fitness") for i in ids], final), 3)
        report[f"kendall_fitness_one_draw{suffix}"] = round(
            kendall([done[(i, low, 0)]["fitness"] for i in ids], final), 3)
    if replicates > 1 and ids:
        report["noise_sd"] = [round(float(np.mean([np.std(
            [done[(i, e, r)]["fitness"] for r in reps], ddof=1) for i in ids])), 4)
            for e in budgets]
        report["signal_sd"] = [round(float(np.std([mean(i, e, "fitness") for i in ids],
                                                  ddof=1)), 4) if len(ids) > 1 else None
                               for e in budgets]
    return report


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties allowed); NaN for fewer than 3 pairs or a constant side."""
    from scipy.stats import kendalltau

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)


if __name__ == "__main__":
    raise SystemExit(run(main))
