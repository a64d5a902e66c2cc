"""Durable runs: kill -9 at any moment, resume, end identical to an uninterrupted run."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time

import pytest
from search_toys import TOYS, child_events, comparable, run_toy


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    run_toy(run, lazy=True)
    return run


def test_same_seed_gives_identical_logs(reference_run, tmp_path):
    run_toy(tmp_path / "again", lazy=True)
    assert comparable(tmp_path / "again") == comparable(reference_run)
    ids = [e["id"] for e in child_events(reference_run)]
    assert len(ids) == len(set(ids)) == 4 + 4 * 4 * 2


def test_hash_duplicates_reuse_the_result_and_say_so(reference_run):
    events = child_events(reference_run)
    first = {}  # (hash, epochs) -> first child trained that way
    for e in events:
        if e["reused"]:
            assert first[e["hash"], e["epochs"]] == e["reused_from"]
            assert not (reference_run / "children" / e["id"] / "weights.pt").exists()
        else:
            assert (e["hash"], e["epochs"]) not in first
            first[e["hash"], e["epochs"]] = e["id"]
    assert any(e["reused"] for e in events)  # the toy search revisits architectures


def test_sigkill_then_resume_ends_identical_and_trains_no_child_twice(reference_run, tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, str(TOYS), str(run), "--delay", "0.15", "--lazy"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = run / "events.jsonl"
        if log.exists() and log.read_text().count('"child_finished"') >= 9:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = child_events(run)
    assert 9 <= len(before) < 4 + 4 * 4 * 2 and not (run / "final.json").exists()
    finished_before = {e["id"]: e for e in before}
    run_toy(run, resume=True, lazy=True)
    counts = collections.Counter(e["id"] for e in child_events(run))
    assert max(counts.values()) == 1  # no child id logged (evaluated) twice
    after = {e["id"]: e for e in child_events(run)}
    assert all(after[i] == e for i, e in finished_before.items())  # old lines untouched
    assert comparable(run) == comparable(reference_run)


def test_resume_after_a_torn_write_re_runs_that_child(reference_run, tmp_path):
    run = tmp_path / "torn"
    run_toy(run, generations=1)
    log = run / "events.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    cut = next(i for i, x in enumerate(lines) if '"g001-c000"' in x and "child_finished" in x)
    log.write_text("".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    (run / "final.json").unlink()
    run_toy(run, resume=True, generations=1)
    assert (run / "events.jsonl.torn").exists()
    ids = [e["id"] for e in child_events(run)]
    assert ids.count("g001-c000") == 1 and len(ids) == len(set(ids))
    fresh = tmp_path / "fresh"
    run_toy(fresh, generations=1)
    assert comparable(run)["final"] == comparable(fresh)["final"]


def test_replay_that_builds_another_architecture_is_refused(tmp_path):
    from nas.search.rundir import RunCorrupt

    run = tmp_path / "r"
    run_toy(run, generations=1)
    log = run / "events.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    i = next(k for k, x in enumerate(lines) if '"g001-c001"' in x and "child_finished" in x)
    event = json.loads(lines[i])
    lines[i] = json.dumps({**event, "hash": "0" * 32}) + "\n"
    log.write_text("".join(lines))
    before = log.read_text()
    with pytest.raises(RunCorrupt, match="g001-c001"):
        run_toy(run, resume=True, generations=1)
    assert log.read_text().startswith(before)
