"""Property: a smoke search killed (SIGKILL, a real process) at a random point and resumed ends
equal to the uninterrupted search, every time.

The uninterrupted run's log is cut into equal strata, one per case; each case draws from its
own seeded generator a point in its stratum (the number of log lines to wait for, 0 = as soon
as the run folder exists) plus a random fraction of a second, so the kills spread over
creation, the search and the refinement and land between, during and after events. Three
kill points run by default, eight more (every third with two loky workers) in the ``slow``
tier, where a second ``--resume`` started beside a running one is also checked to be refused.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_toys import comparable

from nas.cli import run
from nas.evolve import main

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def smoke(tmp: Path, cache: Path, name: str, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--run-dir", str(tmp), "--name", name, "--cache-dir", str(cache),
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kill-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> tuple[Path, int]:
    """The uninterrupted smoke search and the number of lines of its log."""
    tmp = tmp_path_factory.mktemp("kill-ref")
    assert main(smoke(tmp, cache, "ref")) == 0
    return tmp / "ref", len((tmp / "ref" / "events.jsonl").read_text().splitlines())


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return -1


def start_and_kill(argv: list[str], log: Path, wait_lines: int, extra: float) -> int:
    """Start ``nas.evolve argv``; SIGKILL it once ``log`` has ``wait_lines`` lines + ``extra`` s."""
    proc = subprocess.Popen([sys.executable, "-m", "nas.evolve", *argv], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and lines(log) < wait_lines and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def leftovers(tmp: Path) -> list[str]:
    """Temporary files and half-built run folders anywhere under ``tmp``."""
    return [str(p) for p in tmp.rglob("*") if ".tmp" in p.name or ".new-" in p.name]


def kill_resume_compare(case: int, strata: int, reference: tuple[Path, int], cache: Path,
                        tmp: Path) -> None:
    """Kill at a random point of stratum ``case`` of ``strata``, resume, compare."""
    ref, total = reference
    rng = random.Random(f"kill-{strata}-{case}")
    # strata over the lines before run_finished (a kill after it tests nothing)
    wait_lines, extra = int((case + rng.random()) * (total - 1) / strata), rng.uniform(0.0, 0.5)
    workers = "2" if case % 3 == 2 else "1"
    argv = smoke(tmp, cache, "k", "--workers", workers)
    point = f"kill after {wait_lines} log lines + {extra:.2f} s, {workers} worker(s)"
    code = start_and_kill(argv, tmp / "k" / "events.jsonl", wait_lines, extra)
    assert code in (-signal.SIGKILL, 0), point
    again = ["--resume", str(tmp / "k"), "--no-progress"] if (tmp / "k").exists() else argv
    assert run(main, again) == 0, point
    assert comparable(tmp / "k") == comparable(ref), point
    assert leftovers(tmp) == [], point


@pytest.mark.parametrize("case", range(3))
def test_a_smoke_search_killed_at_a_random_point_resumes_to_the_same_end(case, reference, cache,
                                                                         tmp_path):
    kill_resume_compare(case, 3, reference, cache, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(8))
def test_more_random_kill_points(case, reference, cache, tmp_path):
    kill_resume_compare(case, 8, reference, cache, tmp_path)


@pytest.mark.slow
def test_two_resumes_started_together_one_is_refused(reference, cache, tmp_path):
    ref, total = reference
    argv = smoke(tmp_path, cache, "k")
    start_and_kill(argv, tmp_path / "k" / "events.jsonl", 5, 0.0)
    cmd = [sys.executable, "-m", "nas.evolve", "--resume", str(tmp_path / "k"), "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=600), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 2]
    refused = results[1][1].strip().splitlines()
    assert len(refused) == 1 and "in use by another process" in refused[0]
    assert comparable(tmp_path / "k") == comparable(ref)


@pytest.mark.parametrize("point", ["create:config",
                                   pytest.param("create:locked", marks=pytest.mark.slow),
                                   pytest.param("create:events", marks=pytest.mark.slow)])
def test_a_search_killed_while_its_run_folder_is_made_starts_again_with_the_same_command(
        point, reference, cache, tmp_path):
    """Issue windows: killed after children/ or after config.json, before events.jsonl."""
    argv = smoke(tmp_path, cache, "k")
    proc = subprocess.run([sys.executable, "-m", "nas.evolve", *argv], cwd=ROOT, timeout=300,
                          env={**ENV, "NAS_TEST_KILL_AT": point}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "k").exists()
    assert run(main, argv) == 0
    assert comparable(tmp_path / "k") == comparable(reference[0])
    assert leftovers(tmp_path) == []
