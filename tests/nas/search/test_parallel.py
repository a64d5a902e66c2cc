"""Parallel and distributed evaluation: loky processes and a real Dask LocalCluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from search_toys import comparable, probe, run_toy

from nas.errors import UserError
from nas.search.parallel import Task, evaluate_tasks, worker_threads


def tasks(n: int, tmp_path) -> list[Task]:
    genome = '{"format": "nas-genome", "format_version": 1, "nodes": [], "edges": []}'
    return [Task(f"c{i}", genome, 1, 100 + i, str(tmp_path / f"c{i}")) for i in range(n)]


def test_worker_threads_split_the_cores():
    assert worker_threads(2, cores=8) == 4 and worker_threads(3, cores=2) == 1
    assert worker_threads(1, cores=2) == 2


def test_in_process_when_one_worker(tmp_path):
    out = dict(evaluate_tasks(probe, tasks(3, tmp_path), workers=1))
    assert sorted(out) == ["c0", "c1", "c2"]
    assert {r["pid"] for r in out.values()} == {os.getpid()}
    assert ((tmp_path / "c1" / "genome.json").exists()
            and (tmp_path / "c1" / "metrics.json").exists())


def test_loky_runs_children_in_worker_processes_with_limited_threads(tmp_path):
    out = dict(evaluate_tasks(probe, tasks(4, tmp_path), workers=2, backend="loky"))
    assert sorted(out) == [f"c{i}" for i in range(4)]
    assert os.getpid() not in {r["pid"] for r in out.values()}
    assert {r["threads"] for r in out.values()} == {worker_threads(2)}
    assert [out[f"c{i}"]["seed"] for i in range(4)] == [100, 101, 102, 103]


def test_unknown_backend_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        list(evaluate_tasks(probe, tasks(2, tmp_path), backend="mpi"))


def test_toy_search_with_two_loky_workers_equals_in_process(tmp_path):
    run_toy(tmp_path / "one", lazy=True, generations=2)
    run_toy(tmp_path / "two", lazy=True, generations=2, workers=2)
    assert comparable(tmp_path / "two") == comparable(tmp_path / "one")


def test_toy_search_through_a_dask_local_cluster_equals_in_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        run_toy(tmp_path / "dask", lazy=True, generations=2, backend="dask",
                scheduler=cluster.scheduler_address)
    run_toy(tmp_path / "local", lazy=True, generations=2)
    assert comparable(tmp_path / "dask") == comparable(tmp_path / "local")


def test_smoke_search_through_a_dask_local_cluster(tmp_path):
    """The real smoke preset (training included) evaluated by a Dask LocalCluster."""
    import json

    distributed = pytest.importorskip("distributed")
    from nas.evolve import main

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        code = main(["--preset", "smoke", "--generations", "1", "--run-dir", str(tmp_path),
                     "--name", "dask", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                     "--backend", "dask", "--scheduler", cluster.scheduler_address])
    assert code == 0
    events = [json.loads(x) for x in (tmp_path / "dask" / "events.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "child_finished" for e in events) == 6
    assert events[-1]["type"] == "run_finished" and (tmp_path / "dask" / "final.json").exists()


def _gone(pid: int) -> bool:
    """The process has exited (it no longer exists, or is a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_loky_workers_die_with_a_killed_driver_and_write_no_child_file_after(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from search_toys import TOYS

    run = tmp_path / "r"
    delay = 4.0
    driver = subprocess.Popen([sys.executable, str(TOYS), str(run), "--delay", str(delay),
                               "--workers", "2", "--mark"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    marks: list[Path] = []
    while len(marks) < 2 and time.monotonic() < deadline and driver.poll() is None:
        marks = (sorted((run / "children").glob("*/worker.pid")) if (run / "children").is_dir()
                 else [])
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed = time.monotonic()
    assert len(marks) >= 2, "the workers did not start"
    pids = {int(m.read_text()) for m in marks}
    assert driver.pid not in pids  # evaluated in worker processes
    while time.monotonic() < killed + 2 and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    assert all(_gone(p) for p in pids), "a worker outlived its driver"
    # The workers are gone, so nothing can write a child's file any more: a metrics.json now
    # would have been written after the kill (each child takes ``delay`` seconds to finish).
    assert time.monotonic() < killed + delay, "too slow to tell a dead worker from a done one"
    assert not [m for m in marks if (m.parent / "metrics.json").exists()]
