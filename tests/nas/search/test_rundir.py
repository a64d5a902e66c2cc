"""The run directory: atomic files, the fsynced event log, torn lines, config diffs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from search_toys import hold_lock

from nas.errors import UserError
from nas.search.rundir import (
    EventLog,
    RunCorrupt,
    RunLocked,
    config_diff,
    create_run,
    event_key,
    load_config,
    lock_run,
    open_run,
    read_events,
    strip_timing,
)
from nasbase.files import write_atomically, write_text_atomically

ROOT = Path(__file__).resolve().parents[3]


def child(cid: str, fit: float = 0.5) -> dict:
    return {"type": "child_finished", "id": cid, "metrics": {"fitness": fit, "seconds": 1.0}}


def test_create_run_writes_config_with_versions_and_refuses_existing(tmp_path):
    log = create_run(tmp_path / "r", {"search": {"seed": 1}})
    log.close()
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["config"] == {"search": {"seed": 1}}
    assert ({"torch", "torchvision", "deap", "numpy", "networkx", "python"}
            <= set(stored["versions"]))
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
    write_text_atomically(path, "old")
    write_text_atomically(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_config_diff_and_strip_timing():
    old = {"search": {"population": 5, "seed": 0}, "fitness": {"dataset": "mnist"}}
    new = {"search": {"population": 4, "seed": 0}, "fitness": {"dataset": "mnist", "x": 1}}
    assert config_diff(old, new) == ["fitness.x: '<unset>' -> 1", "search.population: 5 -> 4"]
    assert config_diff(old, old) == []
    assert strip_timing({"a": 1, "time": 2, "m": {"seconds": 3, "f": 4}}) == {"a": 1, "m": {"f": 4}}


# ----------------------------------------------------------- locking and atomic creation



def test_a_run_is_locked_by_one_process_and_a_kill_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "r"
    create_run(run, {}).close()
    holder = hold_lock(run)
    try:
        with pytest.raises(RunLocked, match=f"in use by another process \\(pid {holder.pid}\\)"):
            open_run(run)
        with pytest.raises(RunLocked):
            lock_run(run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    log = open_run(run)  # the OS released the killed holder's lock
    with pytest.raises(RunLocked):  # and this process holds it now
        open_run(run)
    log.close()
    open_run(run).close()


def test_a_new_run_is_locked_from_its_first_moment(tmp_path):
    log = create_run(tmp_path / "r", {})
    with pytest.raises(RunLocked):
        open_run(tmp_path / "r")
    log.close()
    open_run(tmp_path / "r").close()


CREATE = ("import sys; from nas.search.rundir import create_run; "
          "create_run(sys.argv[1], {'search': {'seed': 1}}).close()")


@pytest.mark.parametrize("point", ["create:locked", "create:config", "create:events"])
def test_a_creation_killed_midway_leaves_no_run_and_the_same_creation_then_succeeds(
        tmp_path, point):
    run = tmp_path / "runs" / "r"
    proc = subprocess.run([sys.executable, "-c", CREATE, str(run)], cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "NAS_TEST_KILL_AT": point})
    assert proc.returncode == -signal.SIGKILL
    assert not run.exists()  # either no run at all ...
    create_run(run, {"search": {"seed": 1}}).close()  # ... and the same creation succeeds
    assert load_config(run) == {"search": {"seed": 1}} and (run / "events.jsonl").read_text() == ""
    assert sorted(p.name for p in run.parent.iterdir()) == ["r"]  # the killed build is gone


def test_a_creation_in_progress_elsewhere_is_left_alone(tmp_path):
    other = tmp_path / ".r.new-1"
    other.mkdir()
    holder = hold_lock_dir(other)
    try:
        create_run(tmp_path / "r", {}).close()
        assert other.is_dir()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def hold_lock_dir(folder):
    code = ("import sys, time; from nas.search.rundir import lock_run; l = lock_run(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_resume_removes_temporary_files_a_kill_left_behind(tmp_path):
    run = tmp_path / "r"
    create_run(run, {}).close()
    (run / "children" / "g000-c000" / "refined").mkdir(parents=True)
    leftovers = [run / ".population.json.tmp4242",
                 run / "children" / "g000-c000" / ".metrics.json.tmp17",
                 run / "children" / "g000-c000" / "refined" / ".weights.pt.tmp99"]
    for path in leftovers:
        path.write_text("half")
    keep = run / "children" / "g000-c000" / "metrics.json"
    keep.write_text("{}")
    open_run(run).close()
    assert not any(p.exists() for p in leftovers) and keep.exists()


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    def half_then_full(fh):
        fh.write(b'{"half": ')
        raise OSError("disk full")

    write_text_atomically(tmp_path / "p.json", "old")
    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "p.json", half_then_full)
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left
    assert (tmp_path / "p.json").read_text() == "old"  # and the old content untouched
