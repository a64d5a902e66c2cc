"""A full disk, a full cache disk and a read-only run folder: one line, exit 1, nothing
half-written, and the next command continues (real tmpfs mounts; skipped where the test may
not mount one)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nasbase.errors import disk_fault
from nasbase.files import save_torch_atomically, write_text_atomically

ROOT = Path(__file__).resolve().parents[2]


class SmallDisk:
    """A tmpfs of a few hundred KiB mounted for one test; :meth:`resize` frees space,
    :meth:`read_only` makes it read-only."""

    def __init__(self, path: Path, size_kib: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                               str(path)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def resize(self, size_kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(self.path)], check=True)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disks: list[SmallDisk] = []

    def make(size_kib: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk-{uuid.uuid4().hex[:6]}", size_kib))
        return disks[-1]

    yield make
    for disk in disks:
        disk.unmount()


def evolve(run_dir: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NAS_CACHE_DIR": str(cache),
           "NAS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "nas.evolve", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def smoke(run_dir: Path) -> list[str]:
    return ["--preset", "smoke", "--run-dir", str(run_dir.parent), "--name", run_dir.name,
            "--no-progress"]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


def test_a_full_run_disk_stops_with_one_line_and_resume_finishes_the_run(small_disk, tmp_path):
    disk = small_disk(160)
    run = disk.path / "run"
    done = evolve(run, tmp_path / "cache", *smoke(run))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0], done.stderr
    assert f"python -m nas.evolve --resume {run}" in lines[0]
    assert "Traceback" not in done.stderr
    assert not temporaries(run)  # nothing half-written
    for line in (run / "events.jsonl").read_text().splitlines()[:-1]:
        json.loads(line)  # every complete line is whole (a torn last line is dropped on resume)
    disk.resize(4096)
    again = evolve(run, tmp_path / "cache", "--resume", str(run), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "final.json").read_text())["population"]
    assert not temporaries(run)


def test_a_full_cache_disk_stops_with_one_line_and_the_same_command_then_works(small_disk,
                                                                              tmp_path):
    disk = small_disk(200)
    run = tmp_path / "runs" / "cached"
    done = evolve(run, disk.path, *smoke(run))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0], done.stderr
    assert str(disk.path) in lines[0] and "Traceback" not in done.stderr
    assert not temporaries(disk.path)
    disk.resize(8192)
    if (run / "config.json").exists():
        again = evolve(run, disk.path, "--resume", str(run), "--no-progress")
    else:
        again = evolve(run, disk.path, *smoke(run))
    assert again.returncode == 0, again.stderr
    assert (run / "final.json").exists()


def test_a_read_only_run_folder_is_one_line_and_exit_1(small_disk, tmp_path):
    disk = small_disk(4096)
    run = disk.path / "run"
    first = evolve(run, tmp_path / "cache", *smoke(run), "--generations", "1")
    assert first.returncode == 0, first.stderr
    (run / "final.json").unlink()  # as if the run had been stopped before it finished
    disk.read_only()
    done = evolve(run, tmp_path / "cache", "--resume", str(run), "--no-progress")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "read-only" in lines[0] and "Traceback" not in done.stderr


def test_the_disk_writers_raise_the_operating_systems_error_and_leave_no_temporary(small_disk):
    import torch

    disk = small_disk(64)
    with pytest.raises(OSError) as caught:
        save_torch_atomically({"w": torch.zeros(100_000)}, disk.path / "big.pt")
    assert caught.value.errno == errno.ENOSPC and disk_fault(caught.value)
    assert str(disk.path / "big.pt") in disk_fault(caught.value)
    with pytest.raises(OSError) as caught:
        write_text_atomically(disk.path / "big.txt", "x" * 200_000)
    assert caught.value.errno == errno.ENOSPC
    assert not list(disk.path.iterdir())


def test_only_errors_of_the_disk_are_faults():
    assert disk_fault(OSError(errno.ENOSPC, "No space left on device", "/x/y"))
    assert disk_fault(OSError(errno.EROFS, "Read-only file system")) == \
        "the file system is read-only"
    assert disk_fault(OSError(errno.ENOENT, "No such file")) is None
    assert disk_fault(ValueError("no space")) is None
