"""``python -m nas.evolve`` end to end on synthetic data (smoke preset) and its bad inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from search_toys import comparable

from nas.cli import run
from nas.errors import UserError
from nas.evolve import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def smoke(tmp: Path, cache: str, name: str, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--run-dir", str(tmp), "--name", name, "--cache-dir", cache,
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache):
    tmp = tmp_path_factory.mktemp("runs")
    assert main(smoke(tmp, cache, "one")) == 0
    return tmp / "one"


def files(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def test_smoke_search_in_process_writes_a_complete_run(smoke_run):
    cfg = json.loads((smoke_run / "config.json").read_text())
    assert (cfg["config"]["search"]["population"] == 3
            and cfg["config"]["fitness"]["dataset"] == "synthetic")
    assert {"torch", "deap", "python"} <= set(cfg["versions"])
    events = [json.loads(x) for x in (smoke_run / "events.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("child_finished") == 3 + 2 * 3 and kinds.count("generation_finished") == 3
    assert kinds.count("refined") == 3
    for e in (e for e in events if e["type"] == "child_finished"):
        child = smoke_run / "children" / e["id"]
        assert (child / "genome.json").exists() and (child / "metrics.json").exists()
        assert e["reused"] or (child / "weights.pt").exists()
        assert 0.0 <= e["metrics"]["fitness"] <= 1.0
    final = json.loads((smoke_run / "final.json").read_text())
    assert len(final["population"]) == 3
    assert all(m["test"]["epochs"] == 1 and "clean_acc" in m["test"] for m in final["population"])
    population = json.loads((smoke_run / "population.json").read_text())
    assert [m["id"] for m in population["members"]] == [m["id"] for m in final["population"]]


def test_smoke_search_with_two_loky_workers_gives_the_same_search(smoke_run, cache):
    tmp = smoke_run.parent
    assert main(smoke(tmp, cache, "two", "--workers", "2")) == 0
    assert comparable(tmp / "two") == comparable(smoke_run)


def test_resume_of_a_finished_run_trains_nothing(smoke_run, cache, capsys):
    before = (smoke_run / "events.jsonl").read_text()
    assert main(["--resume", str(smoke_run), "--no-progress"]) == 0
    after = (smoke_run / "events.jsonl").read_text()
    assert after.startswith(before)
    added = [json.loads(x)["type"] for x in after[len(before):].splitlines()]
    assert added == ["run_resumed"]
    assert "test F" in capsys.readouterr().out  # the final table is printed again


def test_resume_with_another_config_is_refused_with_the_diff(smoke_run, capsys):
    before = files(smoke_run)
    code = run(main, ["--resume", str(smoke_run), "--population", "4", "--lambda", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "search.population: 3 -> 4" in err[0] and "fitness.defense_args" in err[0]
    assert files(smoke_run) == before


def test_missing_run_directory_is_a_clear_error(tmp_path, capsys):
    code = run(main, ["--resume", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]


@pytest.mark.parametrize("flag,value,word", [("--reference", "resnet999", "reference"),
                                             ("--defense", "magic", "defense"),
                                             ("--dataset", "imagenet", "dataset")])
def test_unknown_names_exit_2_with_one_line_and_no_run(tmp_path, cache, capsys, flag, value, word):
    code = run(main, smoke(tmp_path, cache, "bad", flag, value))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and word in err[0] and value in err[0]
    assert not (tmp_path / "bad").exists()


def test_help_documents_every_flag():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        assert action.help, action.option_strings
    for flag in ("--population", "--children", "--generations", "--min-distance", "--epochs",
                 "--epochs-step", "--refine-epochs", "--defense-arg", "--lambda", "--workers",
                 "--backend", "--scheduler", "--resume", "--preset", "--config", "--sequential"):
        assert flag in text


def test_command_line_entry_point_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.evolve", "--preset", "smoke", "--reference",
                           "nope", "--run-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_layering_defaults_preset_config_file_flags(tmp_path):
    from nas.search.config import resolve

    paper = resolve({}, preset=None, config_file=None, run_dir="r")
    assert (paper.search.population, paper.search.generations, paper.search.epochs) == (5, 50, 20)
    assert (paper.fitness.dataset, paper.fitness.reference) == ("cifar10", "resnet34")
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"preset": "smoke", "population": 4, "generations": 7,
                                    "defense_args": {"lam": 0.5}}))
    cfg = resolve({"generations": 9, "sequential": True}, preset=None,
                  config_file=str(cfg_file), run_dir="r")
    assert cfg.fitness.dataset == "synthetic"  # preset from the file
    assert cfg.search.population == 4 and cfg.search.generations == 9  # file < flags
    assert cfg.search.sequential and cfg.fitness.defense_args == (("lam", 0.5),)
    cfg_file.write_text(json.dumps({"populaton": 4}))
    with pytest.raises(UserError, match="unknown configuration keys: populaton"):
        resolve({}, preset="smoke", config_file=str(cfg_file), run_dir="r")


def test_flags_parse_defense_args_and_lambda():
    from nas.evolve import flags_from_args

    args = build_parser().parse_args(["--defense-arg", "k=3", "--defense-arg", "mode=fast",
                                      "--lambda", "0.25", "--sequential"])
    flags = flags_from_args(args)
    assert flags["defense_args"] == {"k": 3, "mode": "fast", "lam": 0.25}
    assert flags["sequential"] is True and flags["population"] is None


def test_resume_of_a_run_in_use_is_refused_in_one_line_and_changes_nothing(smoke_run, capsys):
    from search_toys import hold_lock

    holder = hold_lock(smoke_run)
    try:
        before = files(smoke_run)
        code = run(main, ["--resume", str(smoke_run), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert (code == 2 and len(err) == 1
                and f"in use by another process (pid {holder.pid})" in err[0])
        assert files(smoke_run) == before
    finally:
        holder.kill()
        holder.wait()


def test_an_unreachable_dask_scheduler_leaves_no_run_behind(tmp_path, cache, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("nas.search.parallel.CONNECT_TIMEOUT", 1.0, raising=False)
    argv = smoke(tmp_path, cache, "dask", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:1")
    for _ in range(2):  # the same command, again: the same error, not "already exists"
        assert run(main, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot connect to Dask scheduler tcp://127.0.0.1:1" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_the_cpu_preset_is_tuned_for_mnist_and_flags_still_win(tmp_path):
    from nas.search.config import resolve

    fmnist = resolve({}, preset="cpu", config_file=None, run_dir="r")
    mnist = resolve({"dataset": "mnist"}, preset="cpu", config_file=None, run_dir="r")
    assert fmnist.fitness.dataset == "fashion-mnist" and mnist.fitness.dataset == "mnist"
    def tuned(s):
        return s.epochs, s.init_samples, s.refine_draws

    def children(s):
        return max(s.init_samples, s.population) + s.generations * s.population * s.children

    assert tuned(fmnist.search) == (6, 0, 1) and tuned(mnist.search) == (12, 36, 3)
    # the same number of evaluated children: 4 + 16 x 8 = 36 + 12 x 8
    assert children(fmnist.search) == children(mnist.search)
    # the dataset from a config file selects the tuning too; a flag or the file wins over it
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"preset": "cpu", "dataset": "mnist", "refine_draws": 2}))
    cfg = resolve({"epochs": 6}, preset=None, config_file=str(cfg_file), run_dir="r")
    assert (cfg.search.epochs, cfg.search.init_samples, cfg.search.refine_draws) == (6, 36, 2)
    assert resolve({"dataset": "mnist"}, preset="quick", config_file=None,
                   run_dir="r").search.refine_draws == 1  # only the cpu preset is tuned


def test_resume_with_the_cpu_preset_accepts_the_mnist_run_it_made(tmp_path):
    from nas.search.config import resolve, resolve_resume

    made = resolve({"dataset": "mnist", "seed": 2}, preset="cpu", config_file=None, run_dir="r")
    # the command that made it, again, with another worker count
    again = resolve_resume(made.to_dict(), {"dataset": "mnist", "seed": 2, "workers": 1},
                           preset="cpu", config_file=None, run_dir="r")
    assert again.identity() == made.identity() and again.execution.workers == 1
    with pytest.raises(UserError, match="epochs: 12 -> 6"):
        resolve_resume(made.to_dict(), {"dataset": "mnist", "seed": 2, "epochs": 6},
                       preset="cpu", config_file=None, run_dir="r")
