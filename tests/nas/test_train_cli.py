"""``python -m nas.train``: a full run on synthetic data, metrics file, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import defense_args, run
from nas.errors import UserError
from nas.train import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--dataset", "synthetic", "--train-size", "200", "--val-size", "50", "--test-size", "50",
         "--reference", "he-ref", "--reference-epochs", "2", "--steps", "2", "--batch-size", "50",
         "--device", "cpu", "--no-progress"]


def test_train_writes_metrics_and_weights_and_prints_a_table(tmp_path, capsys, nas_cache_dir):
    out = tmp_path / "run"
    code = main(["he-baseline", *SMALL, "--epochs", "1", "--lambda", "0.5", "--out", str(out),
                 "--cache-dir", str(nas_cache_dir)])
    assert code == 0
    text = capsys.readouterr().out
    assert "clean acc (test)" in text and "fooling rate" in text and "he-ref: clean" in text
    m = json.loads((out / "metrics.json").read_text())
    for key in ("clean_acc", "adv_acc", "fitness", "fooling_rate", "status", "epochs", "seconds",
                "settings", "reference_clean_acc", "attack"):
        assert key in m, key
    assert m["split"] == "test" and m["settings"]["defense_args"] == [["lam", 0.5]]
    assert m["fitness"] == min(m["clean_acc"], m["adv_acc"])
    assert (out / "weights.pt").stat().st_size > 0


def test_train_replicates_prints_each_replicate_and_keeps_one(tmp_path, capsys, nas_cache_dir):
    out = tmp_path / "run"
    code = main(["he-baseline", *SMALL, "--epochs", "1", "--replicates", "2", "--out", str(out),
                 "--cache-dir", str(nas_cache_dir)])
    assert code == 0
    out_lines = capsys.readouterr().out.splitlines()
    row = next(line for line in out_lines if line.startswith("replicates"))
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["replicates"]) == 2 and sum(d["kept"] for d in m["replicates"]) == 1
    mean = sum(d["fitness"] for d in m["replicates"]) / 2
    line = next(x for x in out_lines if x.startswith("test fitness over replicates"))
    assert line.split()[-3] == f"{mean:.4f}"  # "<mean> +- <half-width>"
    assert row.count("kept") == 1 and row.count(",") == 1


def test_train_against_an_ensemble_reference_scores_the_held_out_sources(tmp_path, capsys,
                                                                         nas_cache_dir):
    out = tmp_path / "run"
    argv = [a if a != "he-ref" else "he-ref+squeezenet1_1" for a in SMALL]
    code = main(["he-ref", *argv, "--epochs", "1", "--held-out", "he-baseline", "--out",
                 str(out), "--cache-dir", str(nas_cache_dir)])
    assert code == 0
    text = capsys.readouterr().out
    assert "he-ref+squeezenet1_1: clean" in text and "adv acc, held-out he-baseline" in text
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["held_out"]) == {"he-baseline"} and 0.0 <= m["held_out"]["he-baseline"] <= 1.0
    assert m["reference_key"].startswith("he-ref+squeezenet1_1-")


def test_defense_args_parse_json_values_else_strings():
    args = build_parser().parse_args(["he-ref", "--defense-arg", "lam=2", "--defense-arg",
                                      "mode=fast", "--defense-arg", "k=[1, 2]"])
    assert defense_args(args.defense_arg, args.lam) == {"lam": 2, "mode": "fast", "k": [1, 2]}
    args = build_parser().parse_args(["he-ref", "--defense-arg", "lam=2", "--lambda", "0.3"])
    assert defense_args(args.defense_arg, args.lam) == {"lam": 0.3}
    for bad in ("lam", "=3", "lam=nan"):
        with pytest.raises(UserError, match="--defense-arg"):
            build_parser().parse_args(["he-ref", "--defense-arg", bad])


def test_every_flag_has_help():
    for action in build_parser()._actions:
        assert action.help, action.dest


@pytest.mark.parametrize("argv, needle", [
    (["he-ref", "--defense", "nope"], "unknown defense 'nope'"),
    (["does/not/exist.json"], "does not exist"),
    (["he-ref", "--dataset", "nope"], "unknown dataset"),
    (["he-ref", "--defense", "gm", "--defense-arg", "nope=1"], "--defense-arg: bad value for gm"),
    (["he-ref", "--defense", "stylized", "--defense-arg", "style_weights=/nonexistent"],
     "lacks vgg_normalised.pth, decoder.pth"),
    (["he-ref", "--draws", "2", "--val-size", "0", "--epochs", "1"], "needs --val-size > 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    assert run(main, [*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.train", "he-ref", "--defense", "nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_train_with_held_out_attacks_prints_the_worst_case_and_white_box(tmp_path, capsys,
                                                                         nas_cache_dir):
    out = tmp_path / "run"
    code = main(["he-baseline", *SMALL, "--epochs", "1", "--held-out", "he-ref+lenet5",
                 "--reference", "he-baseline", "--held-out-attacks", "mi-fgsm,di-mi-fgsm",
                 "--out", str(out), "--cache-dir", str(nas_cache_dir)])
    assert code == 0
    text = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    # an ensemble of two sources of two families, two transfer attacks
    assert set(m["held_out"]) == {"he-ref+lenet5 mi-fgsm", "he-ref+lenet5 di-mi-fgsm"}
    assert m["held_out_worst"] == min(m["held_out"].values())
    assert 0.0 <= m["white_box_acc"] <= 1.0
    worst = next(line for line in text.splitlines() if line.startswith("held-out worst case"))
    assert worst.split()[-1] == f"{100 * m['held_out_worst']:.2f}%"
    assert "white-box pgd-linf acc" in text
