"""Early rejection (``--early-reject``): racing a child against its replacement threshold."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time

import pytest
from search_toys import (
    RACING,
    TOYS,  # noqa: E402
    child_events,
    comparable,
    run_toy,
)

from nas.evaluation.fitness import rung_epochs
from nas.search.rundir import read_events
from nas.search.worker import evaluate_genome


def test_rungs_are_a_third_and_two_thirds_of_the_epochs():
    assert rung_epochs(1) == ()
    assert rung_epochs(2) == (1,)
    assert rung_epochs(3) == (1, 2)
    assert rung_epochs(9) == (3, 6)


@pytest.fixture(scope="module")
def he_baseline():
    from genome import to_json
    from search_spaces import named_genome

    return to_json(named_genome("he-baseline"))


def test_a_child_that_cannot_beat_its_threshold_is_stopped(workspace, small_settings, he_baseline,
                                                           tmp_path):
    r = evaluate_genome(he_baseline, settings=small_settings, epochs=3, seed=1,
                        out_dir=str(tmp_path / "c"), reject_below=1.01)  # no accuracy beats 1.01
    assert r.status == "rejected", r.reason
    assert r.epochs == 1 and r.rungs is not None and len(r.rungs) == 1
    assert r.fitness == pytest.approx(r.rungs[0][1]) and r.fitness == min(r.clean_acc, r.adv_acc)
    assert r.reject_below == 1.01 and "below" in r.reason


def test_a_child_that_can_beat_its_threshold_trains_exactly_as_without_racing(
        workspace, small_settings, he_baseline):
    raced = evaluate_genome(he_baseline, settings=small_settings, epochs=3, seed=1,
                            reject_below=-1.0)  # every fitness clears -1
    plain = evaluate_genome(he_baseline, settings=small_settings, epochs=3, seed=1)
    assert raced.status == "ok" and raced.epochs == 3
    assert [e for e, _ in raced.rungs] == [1, 2]
    assert (raced.fitness, raced.clean_acc, raced.adv_acc) == (plain.fitness, plain.clean_acc,
                                                               plain.adv_acc)
    assert "rungs" not in plain.to_dict() and "reject_below" not in plain.to_dict()


def test_a_rejected_child_never_replaces_even_when_its_fitness_is_higher():
    from nas.search.ga import make_individual, select_replace, setup_creator

    setup_creator()

    class Ops:
        spectrum = staticmethod(lambda g: (int(g), 0, 0, 0, 0))
        canonical_hash = staticmethod(lambda g: g)

    member, child = make_individual(Ops, "1", 0, 0, None), make_individual(Ops, "2", 1, 0,
                                                                           "g000-c000")
    member.fitness.values, child.fitness.values = (0.2,), (0.9,)
    emitted = []
    toolbox = type("T", (), {"emit": staticmethod(emitted.append)})
    child.metrics = {"status": "rejected", "fitness": 0.9}
    population = [member]
    assert not select_replace(population, child, 1, toolbox) and population == [member]
    child.metrics = {"status": "ok", "fitness": 0.9}
    assert select_replace(population, child, 1, toolbox) and population == [child]


@pytest.fixture(scope="module")
def raced_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("raced") / "run"
    final = run_toy(run, racing=True, **RACING)
    return run, final


def test_raced_search_logs_thresholds_rejects_some_and_counts_the_saved_epochs(raced_run):
    run, final = raced_run
    events = child_events(run)
    raced = [e for e in events if e["generation"] > 0]
    assert raced and all(e["reject_below"] == pytest.approx(e["threshold"] - 0.05) for e in raced)
    assert all("threshold" not in e for e in events if e["generation"] == 0)
    rejected = [e for e in raced if e["metrics"]["status"] == "rejected"]
    kept = [e for e in raced if e["metrics"]["status"] == "ok" and not e["reused"]]
    assert rejected and kept  # the toy has both kinds
    assert all(e["metrics"]["fitness"] < e["reject_below"] for e in rejected)
    assert all(e["metrics"]["epochs"] < e["epochs"] for e in rejected)
    replaced = {e["id"] for e in read_events(run / "events.jsonl")[0] if e["type"] == "replacement"}
    assert not replaced & {e["id"] for e in rejected}
    cost = final["search_cost"]
    trained = [e for e in events if not e["reused"]]
    saved = sum(e["epochs"] - e["metrics"]["epochs"]
                for e in trained if e["metrics"]["status"] == "rejected")
    assert cost["rejected"] == sum(e["metrics"]["status"] == "rejected" for e in trained)
    assert cost["child_epochs_planned"] - cost["child_epochs_trained"] == saved > 0
    assert cost["child_epochs_saved_fraction"] == pytest.approx(
        saved / cost["child_epochs_planned"], abs=1e-4)


def test_the_cost_command_reads_the_same_cost_from_the_log_and_refuses_a_non_run(
        raced_run, tmp_path, capsys):
    from nas.cli import run as run_command
    from nas.cost import main as cost_main

    run, final = raced_run
    assert cost_main([str(run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: printed[k] for k in final["search_cost"]} == final["search_cost"]
    assert printed["children"] == len(child_events(run))
    assert cost_main([str(run)]) == 0
    assert f"rejected {final['search_cost']['rejected']};" in capsys.readouterr().out
    assert run_command(cost_main, [str(run), str(tmp_path)]) == 2  # not a run: one line, no output
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1


def test_runs_without_early_rejection_log_no_racing_fields(tmp_path):
    run_toy(tmp_path / "plain", generations=1)
    events = child_events(tmp_path / "plain")
    assert not any("threshold" in e or "rungs" in e["metrics"] for e in events)
    assert "search_cost" not in json.loads((tmp_path / "plain" / "final.json").read_text())


def test_sigkill_inside_a_raced_child_then_resume_ends_identical(raced_run, tmp_path):
    reference, _ = raced_run
    run = tmp_path / "killed"
    cmd = [sys.executable, str(TOYS), str(run), "--delay", "0.05", "--racing"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    log = run / "events.jsonl"
    while time.monotonic() < deadline:  # kill mid-way through a generation-1+ child's rungs
        if log.exists() and log.read_text().count('"child_finished"') >= 8:
            break
        time.sleep(0.01)
    time.sleep(0.07)  # inside the next child's first or second rung (0.05 s per epoch)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = child_events(run)
    assert 8 <= len(before) < 4 + 4 * 4 * 2 and not (run / "final.json").exists()
    run_toy(run, resume=True, racing=True, **RACING)
    counts = collections.Counter(e["id"] for e in child_events(run))
    assert max(counts.values()) == 1
    assert comparable(run) == comparable(reference)


def test_checking_rejected_children_retrains_them_exactly_and_applies_the_replacement_rule(
        tmp_path, capsys):
    """A real (synthetic-data) raced search; ``nas.cost --check-rejected`` trains its rejected
    children to the end: the rung that stopped each is reproduced bit for bit, and "would
    replace" is the child's full fitness against its threshold."""
    from nas.cost import main as cost_main
    from nas.evolve import main as evolve

    assert evolve(["--preset", "smoke", "--run-dir", str(tmp_path), "--name", "raced",
                   "--no-progress", "--epochs", "3", "--generations", "2", "--early-reject",
                   "--reject-margin", "0", "--refine-epochs", "0", "--workers", "1",
                   "--train-size", "200", "--val-size", "60", "--max-channels", "8"]) == 0
    run = tmp_path / "raced"
    rejected = [e for e in child_events(run) if e["metrics"]["status"] == "rejected"]
    assert rejected, "the smoke search should race some children out"
    capsys.readouterr()
    assert cost_main([str(run), "--check-rejected", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = summary["children"]
    assert summary["checked"] == len(rows) == min(2, len(rejected))
    logged = {e["id"]: e for e in rejected}
    for row in rows:
        e = logged[row["id"]]
        assert row["reproduced"], row
        assert row["rejected_fitness"] < e["reject_below"] <= row["threshold"]
        assert [ep for ep, _ in row["rungs"]] == list(rung_epochs(e["epochs"]))
        assert row["would_replace"] == (row["full_fitness"] > e["threshold"])
    assert summary["would_replace"] == sum(r["would_replace"] for r in rows)
    assert not list(run.glob("children/*/check*"))  # nothing written into the run
