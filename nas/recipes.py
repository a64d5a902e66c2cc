"""``python -m nas.recipes``: compare training recipes on one architecture with plain CE
(the measurements behind docs/fitness.md, "How the ``cpu`` recipe was chosen").

A variant is a registered recipe name with optional ``field=value`` overrides of its fields
(``cpu``, ``paper``, ``cpu:lr=0.006``, ``cpu:lr=0.002,ema=0.999``). Every (variant, seed)
trains the architecture on the data split of seed 0 with early stopping on validation when
``--patience`` is given, and prints one JSON line: validation and test accuracy of the kept
weights, the epochs run, the kept epoch and the wall time::

    python -m nas.recipes --arch he-ref --dataset fashion-mnist --epochs 40 --patience 10 \\
        --amp bf16 --variant cpu --variant cpu:lr=0.006 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence

from nas.cli import ArgumentParser, run
from nas.errors import UserError
from nas.evaluation.recipe import Recipe, get_recipe
from nasbase.values import int_list, nonneg_int, positive_int


def parse_variant(text: str) -> Recipe:
    """``name[:field=value,...]`` -> the registered recipe with those fields replaced."""
    name, _, rest = text.partition(":")
    recipe = get_recipe(name)
    changes = {}
    for pair in filter(None, rest.split(",")):
        key, sep, raw = pair.partition("=")
        if not sep or not hasattr(recipe, key) or key == "name":
            fields = ", ".join(f.name for f in dataclasses.fields(Recipe) if f.name != "name")
            raise UserError(f"variant {text!r}: expected field=value with a field of {fields}")
        kind = type(getattr(recipe, key))
        try:
            changes[key] = kind(raw)
        except ValueError:
            raise UserError(f"variant {text!r}: {key} must be a {kind.__name__}, "
                            f"got {raw!r}") from None
    try:
        return dataclasses.replace(recipe, **changes) if changes else recipe
    except ValueError as exc:
        raise UserError(f"variant {text!r}: {exc}") from None


#: ``0,1,2`` -> ``[0, 1, 2]`` (each a non-negative integer).
seeds = int_list(nonneg_int, "comma-separated seeds")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented)."""
    p = ArgumentParser(prog="python -m nas.recipes", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="he-ref", help="a registered reference network or named "
                   "genome (nas.train's names)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset")
    p.add_argument("--train-size", type=positive_int, default=10000, help="training images")
    p.add_argument("--val-size", type=positive_int, default=1000, help="validation images")
    p.add_argument("--test-size", type=positive_int, default=1000, help="test images")
    p.add_argument("--epochs", type=positive_int, default=40,
                   help="epochs (the cap under --patience; the schedule spans it)")
    p.add_argument("--patience", type=nonneg_int, default=10,
                   help="stop after this many epochs without a better validation accuracy and "
                   "keep the best weights (0: train every epoch, keep the last)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="batch size")
    p.add_argument("--amp", choices=("off", "bf16"), default="bf16",
                   help="bf16 autocast (as references train) or float32")
    p.add_argument("--variant", action="append", default=None, metavar="RECIPE[:K=V,...]",
                   help="a recipe to measure (repeatable; default: cpu)")
    p.add_argument("--seeds", type=seeds, default=[0], help="training seeds, comma-separated")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: torch's)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from defenses import create_defense
    from nas.evaluation.callbacks import EarlyStopping, accuracy_on, steps_per_epoch
    from nas.evaluation.data import load_splits
    from nas.evaluation.references import build_reference, list_references
    from nas.evaluation.training import TrainConfig, TrainData, predict, train

    a = build_parser().parse_args(argv)
    variants = [(text, parse_variant(text)) for text in a.variant or ["cpu"]]
    if a.arch not in list_references():
        raise UserError(f"unknown network {a.arch!r}; valid: {', '.join(list_references())}")
    if a.threads:
        torch.set_num_threads(a.threads)
    s = load_splits(a.dataset, train_size=a.train_size, val_size=a.val_size,
                    test_size=a.test_size, seed=0)
    for text, recipe in variants:
        for seed in a.seeds:
            cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, recipe=recipe,
                              patience=a.patience, device="cpu", amp=a.amp)
            start = time.perf_counter()
            stopping = [EarlyStopping.for_config(cfg, steps_per_epoch(len(s.y_train),
                                                                      cfg.batch_size),
                                                 accuracy_on(s.x_val, s.y_val))]
            out = train(lambda: build_reference(a.arch, s.info), create_defense("none"),
                        TrainData(s.x_train, s.y_train, s.info.num_classes), config=cfg,
                        seed=seed, callbacks=stopping if a.patience else (),
                        log=lambda m: None)
            secs = time.perf_counter() - start
            val = float((predict(out.model, s.x_val) == s.y_val).float().mean())
            test = float((predict(out.model, s.x_test) == s.y_test).float().mean())
            print(json.dumps({"variant": text, "seed": seed, "arch": a.arch,
                              "dataset": a.dataset, "epochs": a.epochs, "batch": a.batch_size,
                              "amp": a.amp, "epochs_run": out.epochs,
                              "best_epoch": out.best_epoch, "val": round(val, 4),
                              "test": round(test, 4), "seconds": round(secs, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
