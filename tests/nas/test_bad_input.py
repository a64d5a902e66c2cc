"""Bad input to every command: one line on stderr, exit 2, no traceback, nothing written.

Each case is a command, its arguments and (optionally) a way to spoil a copy of a finished toy
run first. The expensive step each command would reach with valid input (``prepare``: data,
reference, attack sets; the benchmark; the report) is replaced by a function that fails the
test, so a bad value that slips through fails fast instead of training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from search_toys import run_toy

import genome as gn
from nas import bench, cost, evolve, export, fidelity, recipes, report, study, table6, train
from nas import genome as genome_cli
from nas.cli import run
from nas.evaluation.data import dataset_info

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished toy search whose children and finalists have (random) trained weights."""
    run_dir = tmp_path_factory.mktemp("bad-input") / "run"
    final = run_toy(run_dir, generations=1)
    info = dataset_info("synthetic")
    for child in (run_dir / "children").iterdir():
        model = gn.compile_genome(gn.load(child / "genome.json"), **info.network_args())
        torch.save(model.state_dict(), child / "weights.pt")
        if (child / "refined").is_dir():
            torch.save(model.state_dict(), child / "refined" / "weights.pt")
    assert final["population"]
    return run_dir


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its content."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file()
                                       else "dir")
            for p in sorted(root.rglob("*"))}


def first_finalist(run_dir: Path) -> str:
    return json.loads((run_dir / "final.json").read_text())["population"][0]["id"]


class Evil:
    """A pickle that creates a folder when it is unpickled (it must never be)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


# ------------------------------------------------------------------------------ spoilers


def truncate_weights(tmp: Path, run_dir: Path) -> None:
    path = run_dir / "children" / first_finalist(run_dir) / "refined" / "weights.pt"
    path.write_bytes(path.read_bytes()[:100])


def pickled_weights(tmp: Path, run_dir: Path) -> None:
    path = run_dir / "children" / first_finalist(run_dir) / "refined" / "weights.pt"
    torch.save({"weight": Evil(str(tmp / "pwned"))}, path)


def write(relative: str, text: str):
    def spoil(tmp: Path, run_dir: Path) -> None:
        (run_dir / relative).write_text(text)
    return spoil


def config_file(obj) -> callable:
    def spoil(tmp: Path, run_dir: Path) -> None:
        (tmp / "c.json").write_text(json.dumps(obj))
    return spoil


def a_file(tmp: Path, run_dir: Path) -> None:
    (tmp / "file").write_text("x")


# -------------------------------------------------------------------------------- cases
SMOKE = ["--preset", "smoke", "--run-dir", "{tmp}/runs", "--name", "r", "--cache-dir",
         "{tmp}/cache", "--no-progress"]
TRAIN = ["he-ref", "--reference", "he-ref", "--dataset", "synthetic", "--cache-dir", "{tmp}/cache",
         "--no-progress"]
T6 = ["--dataset", "synthetic", "--reference", "he-ref", "--cache-dir", "{tmp}/cache",
      "--no-progress", "--out", "{tmp}/t6"]

def not_fidelity_results(tmp: Path, _run: Path) -> None:
    (tmp / "fid.jsonl").write_text('{"child": 0, "epochs": 3}\nnot json\n{"child": 1, "ep')


CASES = {
    "recipes-variant-field-unknown": (recipes, ["--variant", "cpu:speed=2"], None),
    "recipes-variant-lr-text": (recipes, ["--variant", "cpu:lr=fast"], None),
    "recipes-variant-lr-negative": (recipes, ["--variant", "cpu:lr=-1"], None),
    "recipes-variant-recipe-unknown": (recipes, ["--variant", "turbo"], None),
    "recipes-seeds-text": (recipes, ["--seeds", "0,x"], None),
    "recipes-arch-unknown": (recipes, ["--arch", "resnet9000"], None),
    "cost-not-a-run": (cost, ["{run}", "{tmp}"], None),
    "fidelity-children-2": (fidelity, ["--preset", "smoke", "--children", "2"], None),
    "fidelity-epochs-0": (fidelity, ["--preset", "smoke", "--epochs", "0"], None),
    "fidelity-out-not-its-results": (fidelity, ["--preset", "smoke", "--out", "{tmp}/fid.jsonl"],
                                     not_fidelity_results),
    # nas.evolve, a new search (issue items 5, 6, 7)
    "evolve-batch-size-0": (evolve, [*SMOKE, "--batch-size", "0"], None),
    "evolve-batch-size-negative": (evolve, [*SMOKE, "--batch-size", "-4"], None),
    "evolve-lr-negative": (evolve, [*SMOKE, "--lr", "-1"], None),
    "evolve-seed-negative": (evolve, [*SMOKE, "--seed", "-1"], None),
    "evolve-workers-0": (evolve, [*SMOKE, "--workers", "0"], None),
    "evolve-workers-negative": (evolve, [*SMOKE, "--workers", "-2"], None),
    "evolve-eps-negative": (evolve, [*SMOKE, "--eps", "-0.1"], None),
    "evolve-eps-above-1": (evolve, [*SMOKE, "--eps", "1.5"], None),
    "evolve-eps-nan": (evolve, [*SMOKE, "--eps", "nan"], None),
    "evolve-step-size-negative": (evolve, [*SMOKE, "--step-size", "-1"], None),
    "evolve-steps-negative": (evolve, [*SMOKE, "--steps", "-1"], None),
    "evolve-reference-epochs-0": (evolve, [*SMOKE, "--reference-epochs", "0"], None),
    "evolve-lambda-nan": (evolve, [*SMOKE, "--lambda", "nan"], None),
    "evolve-defense-arg-nan": (evolve, [*SMOKE, "--defense-arg", "lam=NaN"], None),
    "evolve-population-text": (evolve, [*SMOKE, "--population", "three"], None),
    "evolve-config-population-text": (evolve, [*SMOKE, "--config", "{tmp}/c.json"],
                                      config_file({"population": "three"})),
    "evolve-config-eps-above-1": (evolve, [*SMOKE, "--config", "{tmp}/c.json"],
                                  config_file({"eps": 2})),
    "evolve-config-lr-text": (evolve, [*SMOKE, "--config", "{tmp}/c.json"],
                              config_file({"lr": "fast"})),
    "evolve-config-recipe-unknown": (evolve, [*SMOKE, "--config", "{tmp}/c.json"],
                                     config_file({"recipe": "turbo"})),
    "evolve-config-preset-list": (evolve, ["--config", "{tmp}/c.json"],
                                  config_file({"preset": []})),
    "evolve-reference-ensemble-twice": (evolve, [*SMOKE, "--reference", "he-ref+he-ref"], None),
    "evolve-reference-ensemble-empty": (evolve, [*SMOKE, "--reference", "he-ref+"], None),
    "evolve-reference-ensemble-unknown": (evolve, [*SMOKE, "--reference", "he-ref+resnet9"],
                                          None),
    "evolve-held-out-is-a-member": (evolve, [*SMOKE, "--reference", "he-ref+he-baseline",
                                             "--held-out", "he-baseline"], None),
    "evolve-reference-weights-of-an-ensemble": (
        evolve, [*SMOKE, "--reference", "he-ref+he-baseline", "--reference-weights",
                 "{tmp}/file"], a_file),
    "evolve-held-out-attack-unknown": (evolve, [*SMOKE, "--held-out", "he-baseline",
                                                "--held-out-attacks", "mi-fgsm,cw"], None),
    "evolve-dask-without-scheduler": (evolve, [*SMOKE, "--backend", "dask"], None),
    "evolve-dask-bad-scheduler": (evolve, [*SMOKE, "--backend", "dask", "--scheduler", "nonsense"],
                                  None),
    "evolve-name-escapes": (evolve, [*SMOKE, "--name", "../escaped"], None),
    "evolve-name-nested": (evolve, [*SMOKE, "--name", "a/b"], None),
    "evolve-run-dir-is-a-file": (evolve, [*SMOKE[:2], "--run-dir", "{tmp}/file", *SMOKE[4:]],
                                 a_file),
    # nas.evolve --resume of a spoiled run
    "resume-config-empty-object": (evolve, ["--resume", "{run}"], write("config.json", "{}")),
    "resume-config-list": (evolve, ["--resume", "{run}"], write("config.json", "[1, 2]")),
    "resume-config-no-sections": (evolve, ["--resume", "{run}"],
                                  write("config.json", '{"config": {}}')),
    "resume-config-garbage": (evolve, ["--resume", "{run}"], write("config.json", "garbage")),
    "resume-config-bad-value": (evolve, ["--resume", "{run}"], write(
        "config.json", '{"config": {"search": {"population": "three"}, "fitness": {}}}')),
    "resume-lambda-nan": (evolve, ["--resume", "{run}", "--lambda", "nan"], None),
    "resume-a-file": (evolve, ["--resume", "{tmp}/file"], a_file),
    # nas.export
    "export-truncated-weights": (export, ["{run}", "--out", "{tmp}/out"], truncate_weights),
    "export-pickled-weights": (export, ["{run}", "--out", "{tmp}/out"], pickled_weights),
    "export-final-garbage": (export, ["{run}", "--out", "{tmp}/out"],
                             write("final.json", "garbage")),
    "export-final-not-a-population": (export, ["{run}", "--out", "{tmp}/out"],
                                      write("final.json", '{"population": 3}')),
    "export-empty-events-beside-final": (export, ["{run}", "--out", "{tmp}/out"],
                                         write("events.jsonl", "")),
    "export-config-empty-object": (export, ["{run}", "--out", "{tmp}/out"],
                                   write("config.json", "{}")),
    "export-config-list": (export, ["{run}", "--out", "{tmp}/out"], write("config.json", "[1, 2]")),
    "export-out-is-a-file": (export, ["{run}", "--out", "{tmp}/file"], a_file),
    # nas.train
    "train-out-is-a-file": (train, [*TRAIN, "--out", "{tmp}/file"], a_file),
    "train-out-inside-a-file": (train, [*TRAIN, "--out", "{tmp}/file/sub"], a_file),
    "train-lambda-nan": (train, [*TRAIN, "--lambda", "nan"], None),
    "train-defense-arg-nan": (train, [*TRAIN, "--defense-arg", "lam=nan"], None),
    "train-defense-arg-inf": (train, [*TRAIN, "--defense-arg", "lam=Infinity"], None),
    "train-fast-at-eps-0": (train, [*TRAIN, "--defense", "fast-at", "--defense-arg", "eps=0"],
                            None),
    "train-free-at-replays-0": (train, [*TRAIN, "--defense", "free-at", "--defense-arg",
                                        "replays=0"], None),
    "train-pgd-at-steps-text": (train, [*TRAIN, "--defense", "pgd-at", "--defense-arg",
                                        "steps=many"], None),
    "evolve-free-at-eps-above-1": (evolve, [*SMOKE, "--defense", "free-at", "--defense-arg",
                                            "eps=3"], None),
    "train-batch-size-0": (train, [*TRAIN, "--batch-size", "0"], None),
    "train-eps-above-1": (train, [*TRAIN, "--eps", "2"], None),
    "train-epochs-0": (train, [*TRAIN, "--epochs", "0"], None),
    "train-held-out-is-the-reference": (train, [*TRAIN, "--held-out", "he-ref"], None),
    "train-held-out-unknown": (train, [*TRAIN, "--held-out", "resnet9"], None),
    "train-held-out-attack-unknown": (train, [*TRAIN, "--held-out", "he-baseline",
                                              "--held-out-attacks", "pgd-linf,cw"], None),
    # nas.study
    "study-seeds-repeated": (study, ["--out", "{tmp}/st", "--seeds", "1,1"], None),
    "study-seeds-text": (study, ["--out", "{tmp}/st", "--seeds", "one"], None),
    "study-set-the-seed": (study, ["--out", "{tmp}/st", "--preset", "smoke", "--set", "seed=3"],
                           None),
    "study-unknown-key": (study, ["--out", "{tmp}/st", "--preset", "smoke", "--set", "colour=1"],
                          None),
    "study-unknown-strategy": (study, ["--out", "{tmp}/st", "--preset", "smoke",
                                       "--strategies", "ga,bayes"], None),
    "study-unknown-held-out-attack": (study, ["--out", "{tmp}/st", "--preset", "smoke", "--set",
                                              "held_out=he-baseline", "--set",
                                              "held_out_attacks=cw"], None),
    "study-out-is-a-file": (study, ["--out", "{tmp}/file", "--preset", "smoke"], a_file),
    # nas.genome, nas.bench, nas.report
    "genome-sample-seed-negative": (genome_cli, ["sample", "--seed", "-1", "--out",
                                                 "{tmp}/g.json"], None),
    "genome-mutate-seed-negative": (genome_cli, ["mutate", "he-ref", "--seed", "-1", "--out",
                                                 "{tmp}/g.json"], None),
    "genome-export-std-0": (genome_cli, ["export", "he-ref", "--std", "0", "--out",
                                         "{tmp}/n.py"], None),
    "bench-threads-negative": (bench, ["--threads", "-1"], None),
    "bench-threads-0": (bench, ["--threads", "0"], None),
    "bench-batch-size-0": (bench, ["--batch-size", "0"], None),
    "bench-reps-negative": (bench, ["--reps", "-1"], None),
    "report-baseline-epochs-negative": (report, ["{run}", "--baseline-epochs", "-1"], None),
    "report-source-epochs-0": (report, ["{run}", "--source-epochs", "0"], None),
    "report-seed-negative": (report, ["{run}", "--seed", "-1"], None),
    "report-out-is-a-file": (report, ["{run}", "--out", "{tmp}/file"], a_file),
    # nas.table6
    "table6-rows-unknown": (table6, [*T6, "--rows", "Ref,NE+GM"], None),
    "table6-epochs-0": (table6, [*T6, "--epochs", "0"], None),
    "table6-defense-arg-unknown-defense": (table6, [*T6, "--defense-arg", "madry:steps=3"], None),
    "table6-defense-arg-no-name": (table6, [*T6, "--defense-arg", "steps=3"], None),
    "table6-defense-arg-bad-value": (table6, [*T6, "--defense-arg", "pgd-at:steps=0"], None),
    "table6-transform-arg-bad-value": (table6, [*T6, "--transform-arg", "jpeg:quality=0"], None),
    "table6-transform-arg-unknown-key": (table6, [*T6, "--transform-arg", "bilateral:size=3"],
                                         None),
    "table6-run-and-dataset": (table6, ["{run}", "--dataset", "mnist", "--out", "{tmp}/t6"],
                               None),
    "table6-out-is-a-file": (table6, [*T6[:-2], "--out", "{tmp}/file"], a_file),
}


def must_not_run(*_args, **_kwargs):
    raise AssertionError("bad input reached the expensive step")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, finished_run, tmp_path, capsys,
                                                          monkeypatch):
    module, argv, spoil = CASES[case]
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    if spoil is not None:
        spoil(tmp_path, run_dir)
    monkeypatch.setattr("nas.evaluation.fitness.prepare", must_not_run)
    monkeypatch.setattr(bench, "bench", must_not_run)
    monkeypatch.setattr(report, "build_report", must_not_run)
    before = snapshot(tmp_path)
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in argv]
    code = run(module.main, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def test_a_number_error_names_the_flag(capsys, tmp_path):
    assert run(evolve.main, [a.format(tmp=tmp_path) for a in SMOKE] + ["--eps", "nan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas.evolve: error:") and "--eps" in err and "finite" in err
    (tmp_path / "c.json").write_text(json.dumps({"batch_size": 0}))
    assert run(evolve.main, ["--config", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert "--batch-size" in err and ">= 1" in err


@pytest.mark.parametrize("argv", [["nas.evolve", "--preset", "smoke", "--batch-size", "0"],
                                  ["nas.bench", "--threads", "-1"]])
def test_module_entry_points_give_one_line_without_traceback(argv, tmp_path):
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
