"""``python -m nas.train ARCH``: train one architecture with a defense and evaluate it.

ARCH is a registered reference (``resnet34``, ``he-ref``, ...), a named genome or a genome
JSON path (:func:`nas.networks.resolve_architecture`). The network is trained on the reduced
training set with the selected defense against the reference, then scored on the *test* split: clean
accuracy, accuracy on the reference's transferred adversarial examples, fitness
``min(clean, adv)`` (paper eq. 4) and fooling rate (§4.2.2). Example (paper Table 7 rows)::

    python -m nas.train he-ref      --reference he-ref --defense none --out out/ref
    python -m nas.train he-ref      --reference he-ref --defense gm   --out out/ref-gm
    python -m nas.train he-baseline --reference he-ref --defense gm   --out out/he-gm
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from nas.cli import ArgumentParser, defense_arg, defense_args, run
from nas.errors import UserError
from nasbase.values import (
    check_out_dir,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    unit_float,
)

#: Epoch cap of ARCH and of the reference when no ``--epochs`` is given: with the ``cpu``
#: recipe he-ref and he-baseline reach their validation plateau within it on 10,000 images
#: (docs/results.md, "Table 7 at CPU scale").
TRAIN_CAP = 40


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented)."""
    from nas.evaluation.fitness import FitnessSettings

    d = FitnessSettings()
    p = ArgumentParser(prog="python -m nas.train", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("arch", metavar="ARCH", help="reference name, named genome or genome .json")
    p.add_argument("--reference", default=d.reference,
                   help="reference network (attack source): a registered name, "
                   "torchvision:NAME, genome:FILE.json or module:pkg.mod:factory; a+b: an "
                   "ensemble reference")
    p.add_argument("--reference-epochs", type=positive_int, default=TRAIN_CAP,
                   help="most CE epochs of the reference (trained once to its validation "
                   "plateau, cached)")
    p.add_argument("--reference-patience", type=nonneg_int, default=d.reference_patience,
                   help="epochs without a better validation accuracy before the reference "
                   "stops (0: exactly --reference-epochs)")
    p.add_argument("--reference-weights", default=None, help="state_dict file of the reference")
    p.add_argument("--defense", default="gm", help="training objective (defenses registry)")
    p.add_argument("--defense-arg", action="append", default=[], type=defense_arg,
                   metavar="KEY=VALUE",
                   help="defense hyper-parameter (value parsed as JSON, else string); repeatable")
    p.add_argument("--lambda", dest="lam", type=nonneg_float, default=None,
                   help="GM weight lambda of eq. 2 (= --defense-arg lam=VALUE)")
    p.add_argument("--dataset", default=d.dataset,
                   help="dataset name, folder:DIR (ImageFolder train/ and test/) or npz:FILE")
    p.add_argument("--image-size", default=None, metavar="N",
                   help="resize every image of a folder: dataset to N (or HxW) pixels")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import this module first (it registers datasets, references or "
                   "defenses); repeatable")
    p.add_argument("--train-size", type=positive_int, default=d.train_size, help="training images")
    p.add_argument("--val-size", type=nonneg_int, default=d.val_size, help="validation images")
    p.add_argument("--test-size", type=positive_int, default=d.test_size, help="test images")
    p.add_argument("--data-root", default=None, help="read-only directory with raw dataset files")
    p.add_argument("--cache-dir", default=None, help="cache directory (default $NAS_CACHE_DIR)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs of ARCH (default: to its validation plateau, at most "
                   "--max-epochs, stopping after --patience epochs without improvement, "
                   "keeping the best-on-validation weights)")
    p.add_argument("--max-epochs", type=positive_int, default=TRAIN_CAP,
                   help="epoch cap without --epochs (the one-cycle schedule spans it)")
    p.add_argument("--patience", type=positive_int, default=10,
                   help="epochs without a better validation score (fitness under a defense, "
                   "accuracy with none) before stopping, never before the one-cycle rate has "
                   "annealed (without --epochs)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="batch size")
    p.add_argument("--recipe", default="cpu",
                   help="training recipe of ARCH and the reference: cpu (docs/fitness.md) or "
                   "paper (Adam, PyTorch defaults, constant rate)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate "
                   "(default: the recipe's)")
    p.add_argument("--attack", default=d.attack, help="attack generating the transferred set")
    p.add_argument("--eps", type=unit_float, default=None,
                   help="attack radius (default per dataset)")
    p.add_argument("--step-size", type=positive_float, default=None, help="attack step size")
    p.add_argument("--steps", type=positive_int, default=None, help="attack iterations")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of ARCH's training")
    p.add_argument("--replicates", "--draws", dest="draws", type=positive_int, default=1,
                   help="train ARCH this many times from independent seeds (replicate 0 is "
                   "--seed's training), score each on the test split (mean and 95 %% interval) "
                   "and keep the one with the highest validation fitness")
    p.add_argument("--data-seed", type=nonneg_int, default=d.seed,
                   help="seed of the data subsets and the reference")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--held-out", default="",
                   help="held-out attack sources, comma-separated reference names or forms "
                   "(NAME=FILE: load its weights): trained with "
                   "CE (cached), their PGD examples of the test split are scored too")
    p.add_argument("--full-test", action="store_true",
                   help="score on the dataset's whole test set (and on the --test-size subset "
                   "of the paper's protocol beside it)")
    p.add_argument("--held-out-attacks", default="",
                   help="attacks crafted on every held-out source, comma-separated (e.g. "
                   "pgd-linf,mi-fgsm,di-mi-fgsm; default: --attack); adds the worst case over "
                   "sources x attacks and the white-box PGD accuracy")
    p.add_argument("--out", default=None, help="directory for metrics.json and weights.pt")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def settings_from_args(args: argparse.Namespace) -> Any:
    """The :class:`FitnessSettings` of parsed arguments (the only place that reads them)."""
    from nas.evaluation.filedata import fold_image_size
    from nas.evaluation.fitness import FitnessSettings

    dataset = fold_image_size({"dataset": args.dataset, "image_size": args.image_size})["dataset"]
    return FitnessSettings(
        plugins=tuple(args.plugin), dataset=dataset, train_size=args.train_size,
        val_size=args.val_size, test_size=args.test_size, reference=args.reference,
        reference_epochs=args.reference_epochs, reference_patience=args.reference_patience,
        reference_weights=args.reference_weights, recipe=args.recipe,
        attack=args.attack, eps=args.eps, step_size=args.step_size, steps=args.steps,
        defense=args.defense,
        defense_args=tuple(sorted(defense_args(args.defense_arg, args.lam).items())),
        batch_size=args.batch_size, lr=args.lr, device=args.device, fitness_split="val",
        full_test=args.full_test,
        held_out=tuple(n for n in args.held_out.split(",") if n),
        held_out_attacks=tuple(n for n in args.held_out_attacks.split(",") if n),
        data_root=args.data_root, cache_dir=args.cache_dir, seed=args.data_seed)


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Train ARCH, evaluate on the test split, print a table, write ``--out``."""
    from nas.evaluation.fitness import Budget, check_names
    from nas.evaluation.stats import mean_pm
    from nas.networks import train_architecture

    args = build_parser().parse_args(argv)
    if args.epochs is None and args.val_size < 1:
        raise UserError("training to the validation plateau needs --val-size > 0 "
                        "(or give --epochs)")
    if args.draws > 1 and args.val_size < 1:
        raise UserError("--replicates keeps the replicate best on validation: needs --val-size > 0")
    if args.out:
        check_out_dir(args.out)  # before any training
    settings = settings_from_args(args)
    check_names(settings)  # fail fast on bad names, recipe and defense hyper-parameters
    progress = not args.no_progress and sys.stderr.isatty()
    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    budget = Budget(args.epochs or args.max_epochs, args.seed,
                    patience=0 if args.epochs else args.patience)
    trained = train_architecture(args.arch, settings, budget, draws=args.draws,
                                 out_dir=args.out, progress=progress, log=log)
    label, result, ws = trained.label, trained.result, trained.workspace
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    print(_table([
        ("architecture", f"{label} ({result.params:,} params)"),
        ("defense", f"{settings.defense} {dict(settings.defense_args) or ''}".strip()),
        ("reference", f"{settings.reference}: clean {pct(ws.reference_acc['test'])}"),
        ("attack", f"{ws.attack.name} eps={ws.attack.eps:g} step={ws.attack.step_size:g} "
                   f"steps={ws.attack.steps}"),
        ("status", result.status + (f" ({result.reason})" if result.reason else "")),
        ("clean acc (test)", pct(result.clean_acc)), ("adv acc (test)", pct(result.adv_acc)),
        ("fitness", pct(result.fitness)), ("fooling rate", pct(result.fooling_rate)),
        *((f"adv acc, held-out {name}", f"{pct(acc)} (source clean {pct(ws.held_out_acc[name])})")
          for name, acc in (result.held_out or {}).items()),
        *((("held-out worst case", pct(result.held_out_worst)),)
          if result.held_out_worst is not None else ()),
        *((("white-box pgd-linf acc", pct(result.white_box_acc)),)
          if result.white_box_acc is not None else ()),
        ("reference epochs", str(ws.reference_meta.get("best_epoch", "-"))),
        *((("replicates (validation fitness)", ", ".join(
            f"{d.get('val_fitness', 0):.4f}{' kept' if d['kept'] else ''}"
            for d in result.replicates)),) if result.replicates else ()),
        *((f"{what} over replicates (95 %)", mean_pm([float(d.get(key) or 0.0)
                                                     for d in result.replicates]))
          for key, what in (("fitness", "test fitness"), ("clean_acc", "test clean acc"),
                            ("adv_acc", "test adv acc"), ("held_out_worst", "held-out worst case"))
          if result.replicates and any(d.get(key) is not None for d in result.replicates)),
        *((("protocol subset (fitness / clean / adv)", " / ".join(
            pct(result.protocol[k]) for k in ("fitness", "clean_acc", "adv_acc"))),)
          if result.protocol else ()),
        ("epochs / seconds", f"{result.epochs} / {result.seconds:.1f}"),
    ]))
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(run(main))
