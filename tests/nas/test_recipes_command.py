"""``python -m nas.recipes``: recipe variants and one real (tiny) measurement."""

from __future__ import annotations

import json

import pytest

from nas.errors import UserError
from nas.evaluation.recipe import get_recipe
from nas.recipes import main, parse_variant


def test_a_variant_replaces_only_the_fields_it_names():
    cpu = get_recipe("cpu")
    assert parse_variant("cpu") is cpu
    changed = parse_variant("cpu:lr=0.006,ema=0.999,shift=0")
    assert (changed.lr, changed.ema, changed.shift) == (0.006, 0.999, 0)
    assert changed.label_smoothing == cpu.label_smoothing and changed.schedule == cpu.schedule
    with pytest.raises(UserError, match="field=value"):
        parse_variant("cpu:name=mine")


def test_one_measurement_prints_a_json_line_per_variant_and_seed(capsys, nas_cache_dir):
    assert main(["--dataset", "synthetic", "--train-size", "60", "--val-size", "30",
                 "--test-size", "30", "--epochs", "2", "--patience", "1", "--amp", "off",
                 "--variant", "paper", "--variant", "cpu:lr=0.01", "--seeds", "0,1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["variant"], r["seed"]) for r in rows] == [
        ("paper", 0), ("paper", 1), ("cpu:lr=0.01", 0), ("cpu:lr=0.01", 1)]
    assert all(0 <= r["val"] <= 1 and 0 <= r["test"] <= 1 and 1 <= r["best_epoch"]
               <= r["epochs_run"] <= 2 for r in rows)
