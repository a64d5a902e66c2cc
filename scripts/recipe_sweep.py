"""Measure training recipes on one architecture with plain CE (the numbers behind
docs/fitness.md, "Training recipe").

    python scripts/recipe_sweep.py --arch he-ref --dataset fashion-mnist --epochs 30 \
        --variant cpu --variant paper --variant cpu:shift=0 --seeds 0,1

A variant is a registered recipe name with optional ``field=value`` overrides
(``cpu:lr=0.002,ema=0.999``). Prints one JSON line per (variant, seed): validation and test
accuracy after the last epoch, the best validation epoch and the wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from defenses import create_defense
from nas.evaluation.data import load_splits
from nas.evaluation.recipe import get_recipe
from nas.evaluation.references import build_reference
from nas.evaluation.training import TrainConfig, predict, train


def parse_variant(text: str):
    name, _, rest = text.partition(":")
    recipe = get_recipe(name)
    changes = {}
    for pair in filter(None, rest.split(",")):
        k, v = pair.split("=")
        typ = type(getattr(recipe, k))
        changes[k] = typ(v)
    return dataclasses.replace(recipe, **changes) if changes else recipe


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="he-ref")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--amp", default="off")
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    s = load_splits(a.dataset, train_size=a.train_size, val_size=1000, test_size=1000, seed=0)
    for text in a.variant:
        recipe = parse_variant(text)
        for seed in map(int, a.seeds.split(",")):
            cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, recipe=recipe,
                              patience=a.patience, device="cpu", amp=a.amp)
            t = time.perf_counter()
            out = train(lambda: build_reference(a.arch, s.info), create_defense("none"),
                        s.x_train, s.y_train, config=cfg, seed=seed, num_classes=10,
                        log=lambda m: None, val=(s.x_val, s.y_val) if a.patience else None)
            secs = time.perf_counter() - t
            val = float((predict(out.model, s.x_val) == s.y_val).float().mean())
            test = float((predict(out.model, s.x_test) == s.y_test).float().mean())
            print(json.dumps({"variant": text, "seed": seed, "arch": a.arch, "dataset": a.dataset,
                              "epochs": a.epochs, "batch": a.batch_size, "amp": a.amp,
                              "epochs_run": out.epochs, "best_epoch": out.best_epoch,
                              "val": round(val, 4), "test": round(test, 4),
                              "seconds": round(secs, 1)}), flush=True)


if __name__ == "__main__":
    main()
