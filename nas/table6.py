"""``python -m nas.table6``: the paper's Table 6, the evolved network against the standard
defenses (JPEG, bilateral filtering, free / fast / PGD adversarial training) side by side.

```
python -m nas.table6 --dataset fashion-mnist --reference he-ref --epochs 20 --out out/table6
python -m nas.table6 runs/<name> --out runs/<name>/table6     # + the search's best finalist
```
Writes ``table6.md`` and ``table6.json`` into ``--out``. Every trained row is cached (the same
cache as ``nas.report``'s baselines), so a second call only scores. The protocol and the
columns are those of :mod:`nas.reporting.table6`; docs/defenses.md explains each defense.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.cli import ArgumentParser, defense_arg, run
from nas.errors import UserError
from nasbase.values import check_out_dir, nonneg_int, positive_float, positive_int

#: Flags that set what a run's config already fixes: refused with a run.
DATA_FLAGS = {"dataset": "fashion-mnist", "train_size": 10000, "val_size": 1000,
              "test_size": 1000, "data_root": None, "reference": "resnet34",
              "reference_epochs": 40, "reference_patience": 10, "recipe": "cpu", "lr": None,
              "batch_size": 128, "data_seed": 0, "held_out": "", "defense": "gm",
              "full_test": False}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented)."""
    from nas.reporting.table6 import ROWS

    p = ArgumentParser(prog="python -m nas.table6", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", default=None,
                   help="a finished search (runs/<name>): its data, reference and attack, and its "
                   "best finalist as the 'search best' row (default: none, the flags below)")
    g = p.add_argument_group("data and reference (without RUN; a run fixes them)")
    g.add_argument("--dataset", help="dataset name (default fashion-mnist)")
    g.add_argument("--train-size", type=positive_int, help="training images (default 10000)")
    g.add_argument("--val-size", type=nonneg_int, help="validation images (default 1000)")
    g.add_argument("--test-size", type=positive_int, help="test images (default 1000)")
    g.add_argument("--full-test", action="store_true", default=None,
                   help="score on the dataset's whole test set (the protocol's --test-size "
                   "subset is reported beside it); default off")
    g.add_argument("--data-root", help="read-only directory with raw dataset files")
    g.add_argument("--reference", help="reference network, the attack source (default resnet34)")
    g.add_argument("--reference-epochs", type=positive_int,
                   help="most CE epochs of the reference (default 40; cached)")
    g.add_argument("--reference-patience", type=nonneg_int,
                   help="epochs without a better validation accuracy before the reference "
                   "stops (default 10; 0: exactly --reference-epochs)")
    g.add_argument("--recipe", help="training recipe of every network (default cpu)")
    g.add_argument("--lr", type=positive_float, help="peak learning rate (default the recipe's)")
    g.add_argument("--batch-size", type=positive_int, help="batch size (default 128)")
    g.add_argument("--data-seed", type=nonneg_int,
                   help="seed of the subsets, the reference and the trained rows (default 0)")
    g.add_argument("--held-out", help="held-out attack sources, comma-separated reference names "
                   "(the held-out worst-case column; default none)")
    g.add_argument("--defense", help="the defense of the Ref+GM and HE+GM rows (default gm)")
    p.add_argument("--rows", default=",".join(ROWS), metavar="LIST",
                   help=f"comma-separated rows to build (default all: {', '.join(ROWS)})")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs of each trained row (a cap with --patience); free-AT trains "
                   "epochs / replays (default: the run's refinement epochs, else 10)")
    p.add_argument("--patience", type=nonneg_int, default=0,
                   help="stop a trained row after this many epochs without a better validation "
                   "fitness, keeping the best weights (default 0: exactly --epochs)")
    p.add_argument("--defense-arg", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="hyper-parameter of one defense, e.g. free-at:replays=4 or "
                   "pgd-at:steps=10 (value parsed as JSON); repeatable")
    p.add_argument("--transform-arg", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="argument of one input transform, e.g. jpeg:quality=50 or "
                   "bilateral:sigma_color=0.2; repeatable")
    p.add_argument("--replicates", type=positive_int, default=1, metavar="N",
                   help="train every trained row N times from independent seeds and report "
                   "each column's mean with its 95 %% interval and the differences against "
                   "Ref+GM paired by replicate (default 1: one training, Wilson intervals)")
    p.add_argument("--white-box-size", type=nonneg_int, default=500, metavar="N",
                   help="test images of the white-box PGD column (a seeded subset; 0 = all; "
                   "default 500)")
    p.add_argument("--no-white-box", action="store_true", help="leave out the white-box column")
    p.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of the white-box attack's random start and subset")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--cache-dir", default=None, help="cache directory (default $NAS_CACHE_DIR)")
    p.add_argument("--out", default=None,
                   help="output folder of table6.md and table6.json (default <RUN>/table6, "
                   "else runs/table6)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def named_args(items: list[str], flag: str, valid: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME:KEY=VALUE`` items -> ``{name: {key: value}}``; unknown names are refused."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, rest = item.partition(":")
        if not sep or name not in valid:
            raise UserError(f"{flag} {item!r}: expected NAME:KEY=VALUE with NAME one of "
                            f"{', '.join(valid)}")
        try:
            key, value = defense_arg(rest)
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{flag} {item!r}: {exc}") from None
        out.setdefault(name, {})[key] = value
    return out


def settings_of(args: argparse.Namespace, view: Any) -> Any:
    """The :class:`FitnessSettings`: the run's (device and cache from the flags), else the
    flags with :data:`DATA_FLAGS`' defaults."""
    from nas.evaluation.fitness import FitnessSettings

    given = [k for k in DATA_FLAGS if getattr(args, k) is not None]
    if view is not None:
        if given:
            raise UserError(f"--{given[0].replace('_', '-')}: the run {args.run_dir} fixes the "
                            "data, reference and defense; leave it out or give no RUN")
        fit = view.config.get("fitness")
        if not isinstance(fit, dict):
            raise UserError(f"{view.path}/config.json has no fitness settings")
        settings = FitnessSettings.from_dict(fit)
        return dataclasses.replace(settings, device=args.device,
                                   cache_dir=args.cache_dir or settings.cache_dir)
    v = {k: (getattr(args, k) if getattr(args, k) is not None else d)
         for k, d in DATA_FLAGS.items()}
    return FitnessSettings(
        dataset=v["dataset"], train_size=v["train_size"], val_size=v["val_size"],
        test_size=v["test_size"], data_root=v["data_root"], reference=v["reference"],
        reference_epochs=v["reference_epochs"], reference_patience=v["reference_patience"],
        recipe=v["recipe"], lr=v["lr"], batch_size=v["batch_size"], seed=v["data_seed"],
        held_out=tuple(n for n in v["held_out"].split(",") if n), defense=v["defense"],
        attack="pgd-linf", device=args.device, cache_dir=args.cache_dir,
        full_test=v["full_test"])


def check_arguments(defense_args: dict[str, dict[str, Any]],
                    transform_args: dict[str, dict[str, Any]]) -> None:
    """Build every defense and transform once: a bad argument is one line before training."""
    from defenses import create_defense, create_transform

    for build, table in ((create_defense, defense_args), (create_transform, transform_args)):
        for name, kwargs in table.items():
            try:
                build(name, **kwargs).check()
            except (TypeError, ValueError) as exc:
                raise UserError(f"bad value for {name}: {exc}") from None


def write_table6(tables: list[Any], out: Path) -> list[Path]:
    """``table6.md`` and ``table6.json`` into ``out`` (one table, or the summary over
    replicates with ``table6-differences.png``, the paired differences against zero)."""
    from nas.reporting.plots import plot_differences
    from nas.reporting.table6 import summarize, summary_markdown, to_json, to_markdown
    from nasbase.files import write_text_atomically

    if len(tables) == 1:
        markdown, data = to_markdown(tables[0]), to_json(tables[0])
        plots: list[Path] = []
    else:
        summary = summarize(tables)
        markdown, data = summary_markdown(summary), json.dumps(summary.to_dict(), indent=2)
        diffs = {f"fooling rate: {k}": v for k, v in summary.fooling_differences.items()}
        diffs |= {f"white-box acc.: {k}": v for k, v in summary.white_box_differences.items()}
        plots = [plot_differences(diffs, out / "table6-differences.png",
                                  title="Table 6, paired by replicate: above zero, GM is "
                                  "fooled less / AT holds more")] if diffs else []
    write_text_atomically(out / "table6.md", markdown)
    write_text_atomically(out / "table6.json", data)
    return [out / "table6.md", out / "table6.json", *plots]


def main(argv: Sequence[str] | None = None) -> int:
    """Build the rows, score them, write table6.md / table6.json, print the markdown."""
    from defenses import list_defenses, list_transforms
    from nas.evaluation.fitness import check_names, prepare
    from nas.evaluation.training import resolve_device
    from nas.reporting.models import trained_child
    from nas.reporting.runview import load_run
    from nas.reporting.table6 import ROWS, Budget, build_models, table6

    args = build_parser().parse_args(argv)
    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    for r in rows:
        if r not in ROWS:
            raise UserError(f"--rows: unknown row {r!r}; valid: {', '.join(ROWS)}")
    if not rows:
        raise UserError("--rows needs at least one row")
    defense_args = named_args(args.defense_arg, "--defense-arg", list_defenses())
    transform_args = named_args(args.transform_arg, "--transform-arg", list_transforms())
    check_arguments(defense_args, transform_args)
    view = load_run(args.run_dir) if args.run_dir else None
    settings = settings_of(args, view)
    check_names(settings)
    out = Path(args.out or (Path(args.run_dir) / "table6" if args.run_dir else "runs/table6"))
    check_out_dir(out)
    search = (view.config.get("search") or {}) if view is not None else {}
    epochs = args.epochs or int(search.get("refine_epochs") or search.get("epochs") or 10)
    progress = not args.no_progress and sys.stderr.isatty()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    ws = prepare(settings, progress=progress, log=log)
    best = None
    if view is not None and "search best" in rows and view.finalists:
        best = trained_child(view, str(view.finalists[0]["id"]), ws)
    budget = Budget(epochs, args.patience, defense_args, transform_args)
    tables = []
    for r in range(args.replicates):
        if args.replicates > 1:
            log(f"table 6: replicate {r + 1}/{args.replicates}")
        models = build_models(ws, settings, budget, rows=rows, best=best if r == 0 else None,
                              log=log, progress=progress, replicate=r)
        tables.append(table6(ws, models, white_box_size=None if args.no_white_box
                             else args.white_box_size, device=resolve_device(settings.device),
                             seed=args.seed, defense=settings.defense, log=log))
    if "search best" in rows and best is None:
        tables[0].notes.append("search best: left out (no run given, or its best finalist has "
                               "no trained weights).")
    out.mkdir(parents=True, exist_ok=True)
    written = write_table6(tables, out)
    print((out / "table6.md").read_text(), end="")
    log(f"table 6 written to {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
