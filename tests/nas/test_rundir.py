"""The run directory: atomic files, the fsynced event log, torn lines, config diffs."""

from __future__ import annotations

import json

import pytest

from nas.cli import UserError
from nas.rundir import (
    EventLog,
    RunCorrupt,
    atomic_write_text,
    config_diff,
    create_run,
    event_key,
    load_config,
    open_run,
    read_events,
    strip_timing,
)


def child(cid: str, fit: float = 0.5) -> dict:
    return {"type": "child_finished", "id": cid, "metrics": {"fitness": fit, "seconds": 1.0}}


def test_create_run_writes_config_with_versions_and_refuses_existing(tmp_path):
    log = create_run(tmp_path / "r", {"search": {"seed": 1}})
    log.close()
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["config"] == {"search": {"seed": 1}}
    assert {"torch", "torchvision", "deap", "numpy", "networkx", "python"} <= set(stored["versions"])
    assert load_config(tmp_path / "r") == {"search": {"seed": 1}}
    with pytest.raises(UserError, match="already exists"):
        create_run(tmp_path / "r", {})
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing")


def test_emit_appends_whole_lines_and_is_idempotent(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    assert log.emit(child("a")) and not log.emit(child("a"))
    log.emit({"type": "generation_finished", "generation": 0})
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["time"] > 0 for x in lines)
    assert list(json.loads(lines[0]))[0] == "type"
    events, torn = read_events(path)
    assert torn == b"" and [event_key(e) for e in events] == [
        ("child_finished", "a"), ("generation_finished", 0)]


def test_replay_that_disagrees_with_the_log_is_refused(tmp_path):
    log = EventLog(tmp_path / "e.jsonl", [child("a", 0.5)])
    assert not log.emit({**child("a", 0.5), "time": 123.0})  # timing fields are ignored
    with pytest.raises(RunCorrupt, match="disagrees"):
        log.emit(child("a", 0.7))
    log.close()


def test_torn_last_line_is_dropped_and_kept_aside(tmp_path):
    run = tmp_path / "r"
    create_run(run, {}).close()
    good = json.dumps(child("a")) + "\n"
    (run / "events.jsonl").write_text(good + '{"type": "child_fini')
    messages = []
    log = open_run(run, log=messages.append)
    log.close()
    assert [e["id"] for e in log.events] == ["a"]
    assert (run / "events.jsonl").read_text() == good
    assert (run / "events.jsonl.torn").read_text() == '{"type": "child_fini'
    assert messages and "torn" in messages[0]


def test_corrupt_line_in_the_middle_is_an_error_and_leaves_the_file(tmp_path):
    run = tmp_path / "r"
    create_run(run, {}).close()
    text = json.dumps(child("a")) + "\nGARBAGE\n" + json.dumps(child("b")) + "\n"
    (run / "events.jsonl").write_text(text)
    with pytest.raises(RunCorrupt, match="line 2"):
        open_run(run)
    assert (run / "events.jsonl").read_text() == text


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "p.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_config_diff_and_strip_timing():
    old = {"search": {"population": 5, "seed": 0}, "fitness": {"dataset": "mnist"}}
    new = {"search": {"population": 4, "seed": 0}, "fitness": {"dataset": "mnist", "x": 1}}
    assert config_diff(old, new) == ["fitness.x: '<unset>' -> 1", "search.population: 5 -> 4"]
    assert config_diff(old, old) == []
    assert strip_timing({"a": 1, "time": 2, "m": {"seconds": 3, "f": 4}}) == {"a": 1, "m": {"f": 4}}
