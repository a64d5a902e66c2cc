"""The Python API (nas.api) does what the commands do, and long stages say what they did."""

from __future__ import annotations

import json

import pytest

from nas import api
from nas.errors import UserError
from nas.evolve import main as evolve_main

TIMINGS = {"time", "seconds"}


def _events(run_dir):
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMINGS}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [strip(json.loads(line)) for line in lines]


@pytest.fixture(scope="module")
def api_and_cli_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    cache = tmp / "cache"
    run = api.search("smoke", run_dir=str(tmp), name="api", cache_dir=str(cache))
    assert evolve_main(["--preset", "smoke", "--run-dir", str(tmp), "--name", "cli",
                        "--cache-dir", str(cache), "--no-progress"]) == 0
    return run, tmp / "cli"


def test_a_search_from_python_equals_the_command_line_s(api_and_cli_runs):
    run, cli_dir = api_and_cli_runs
    assert _events(run.path) == _events(cli_dir)
    cli_final = json.loads((cli_dir / "final.json").read_text())
    assert {m["id"] for m in run.finalists} == {m["id"] for m in cli_final["population"]}
    assert run.config["search"]["generations"] == 2
    assert [row["generation"] for row in run.history] == [0, 1, 2]


def test_a_run_read_from_python_gives_best_front_and_export(api_and_cli_runs, tmp_path):
    run, _ = api_and_cli_runs
    again = api.open_run(run.path)
    assert again.best["id"] == run.finalists[0]["id"]
    front = run.front()
    assert front.front and set(p.id for p in front.front) <= set(run.children)
    written = run.export(tmp_path / "out", which="best")
    assert [p.name for p in written] == [f"net_{run.best['id'].replace('-', '_')}.py"]
    with pytest.raises(UserError, match="already exists"):
        api.search("smoke", run_dir=str(run.path.parent), name="api")


def test_a_run_writes_its_report_from_python_and_refuses_an_unknown_option(api_and_cli_runs,
                                                                          tmp_path):
    run, _ = api_and_cli_runs
    page = run.report(tmp_path / "report", models=False)
    assert page == tmp_path / "report" / "index.html"
    html = page.read_text()
    assert run.best["id"] in html and "<img" in html
    with pytest.raises(UserError, match="invalid report options"):
        run.report(tmp_path / "x", models=False, colour="red")


def test_train_one_architecture_from_python(tmp_path):
    metrics = api.train("he-baseline", reference="he-ref", dataset="synthetic", train_size=60,
                        val_size=30, test_size=30, reference_epochs=1, epochs=1,
                        batch_size=32, cache_dir=str(tmp_path))
    assert metrics["status"] == "ok" and 0.0 <= metrics["fitness"] <= 1.0
    with pytest.raises(UserError, match="lr"):
        api.train("he-ref", dataset="synthetic", lr=-1.0, cache_dir=str(tmp_path))


def test_every_long_stage_of_a_search_says_what_it_did_and_how_long(tmp_path, capsys):
    assert evolve_main(["--preset", "smoke", "--run-dir", str(tmp_path), "--name", "r",
                        "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for stage in ("stage data synthetic:", "stage reference he-ref:",
                  "stage transferred pgd-linf set of split val:",
                  "stage transferred pgd-linf set of split test:",
                  "stage reference gradients:", "stage search (2 generations):",
                  "stage refinement of 3 finalists"):
        assert stage in out, stage
    assert "reference he-ref: epoch 1/1: loss " in out  # the reference's epochs
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("stage search"))
    assert any(line.startswith("generation 2/2") for line in lines[:first])
