"""Device lists, worker slots and pinning (``--devices``), with fake device lists on CPU."""

from __future__ import annotations

import argparse
import dataclasses
import os

import pytest
from search_toys import comparable, run_toy, toy_config

from nas.devices import (
    DeviceSlots,
    check_available,
    check_device_setting,
    claim_slot,
    parse_devices,
    pinned,
    pinned_device,
    slot_devices,
)
from nas.errors import UserError
from nas.evaluation.training import resolve_device
from nas.search import config as cfgmod
from nas.search.parallel import Task, evaluate_tasks


def device_probe(genome_json: str, *, epochs: int, seed: int, out_dir: str | None = None,
                 split: str | None = None) -> dict:
    """Which process evaluated a task, and the device it was pinned to."""
    return {"fitness": 0.0, "pid": os.getpid(), "device": pinned_device(), "seed": seed}


def tasks(n: int) -> list[Task]:
    genome = '{"format": "nas-genome", "format_version": 1, "nodes": [], "edges": []}'
    return [Task(f"c{i}", genome, 1, 100 + i) for i in range(n)]


@pytest.mark.parametrize("text, expected", [
    ("cuda:0,cuda:1", ("cuda:0", "cuda:1")),
    (" cuda , cuda:3", ("cuda:0", "cuda:3")),
    ("cpu", ("cpu",)),
    (["cuda:1", "cuda:0"], ("cuda:1", "cuda:0")),
    ("", ()),
])
def test_device_lists_parse(text, expected):
    assert parse_devices(text) == expected


@pytest.mark.parametrize("text, message", [
    ("gpu0", "unknown device 'gpu0'"),
    ("cuda:0,cuda:0", "listed twice"),
    ("cuda,cuda:0", "listed twice"),
    ("cpu,cuda:0", "cannot be mixed"),
    ("cuda:-1", "unknown device"),
    (3, "expected devices"),
])
def test_bad_device_lists_are_refused(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_devices(text)


def test_slots_are_laid_out_round_robin():
    assert slot_devices(("cuda:0", "cuda:1"), 2) == ("cuda:0", "cuda:1", "cuda:0", "cuda:1")
    assert slot_devices(("cpu",), 3) == ("cpu", "cpu", "cpu")


def test_config_resolves_devices_and_their_concurrency():
    cfg = cfgmod.resolve({"devices": "cuda:0,cuda:1", "workers_per_device": 2, "workers": 7},
                         preset="smoke", config_file=None, run_dir="")
    assert cfg.execution.devices == ("cuda:0", "cuda:1")
    assert cfg.execution.concurrency == 4  # the slots, not --workers
    assert cfgmod.from_dict(cfg.to_dict(), run_dir="").execution == cfg.execution  # round trip
    plain = cfgmod.resolve({"workers": 3}, preset="smoke", config_file=None, run_dir="")
    assert plain.execution.devices == () and plain.execution.concurrency == 3


def test_config_refuses_a_device_that_contradicts_the_list():
    with pytest.raises(UserError, match="contradicts --device cpu"):
        cfgmod.resolve({"devices": "cuda:0", "device": "cpu"}, preset="smoke", config_file=None,
                       run_dir="")
    check_device_setting("cuda", ("cuda:0",))  # the list's kind is fine
    with pytest.raises(UserError, match="contradicts"):
        check_device_setting("cuda", ("cpu",))


def test_devices_with_a_remote_scheduler_are_refused():
    with pytest.raises(UserError, match="dask-cuda-worker"):
        cfgmod.resolve({"devices": "cuda:0", "backend": "dask", "scheduler": "tcp://h:1"},
                       preset="smoke", config_file=None, run_dir="")
    # --devices alone lays out a local cluster: no scheduler address needed
    cfg = cfgmod.resolve({"devices": "cpu", "backend": "dask"}, preset="smoke",
                         config_file=None, run_dir="")
    assert cfg.execution.scheduler is None


def test_a_device_list_from_a_config_file_is_checked(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"devices": ["cuda:0", "cuda:0"]}')
    with pytest.raises(UserError, match="devices: device cuda:0 is listed twice"):
        cfgmod.resolve({}, preset="smoke", config_file=str(path), run_dir="")


def test_missing_cuda_devices_are_refused_before_a_run():
    import torch

    if torch.cuda.is_available():
        with pytest.raises(UserError, match="does not exist"):
            check_available((f"cuda:{torch.cuda.device_count()}",))
    else:
        with pytest.raises(UserError, match="CUDA is not available"):
            check_available(("cuda:0",))
    check_available(("cpu",))


def test_slots_are_claimed_lowest_free_first_and_freed_on_close(tmp_path):
    first, h0 = claim_slot(str(tmp_path), 2)
    second, h1 = claim_slot(str(tmp_path), 2)
    assert (first, second) == (0, 1)
    with pytest.raises(RuntimeError, match="no free device slot"):
        claim_slot(str(tmp_path), 2, timeout=0.0)
    h0.close()
    again, h2 = claim_slot(str(tmp_path), 2)
    assert again == 0
    h1.close(), h2.close()


def test_a_pin_makes_auto_and_cuda_that_device_and_ends_with_its_scope():
    assert pinned_device() is None
    with pinned("cpu"):
        assert pinned_device() == "cpu"
        assert resolve_device("auto").type == "cpu" and resolve_device("cuda").type == "cpu"
    assert pinned_device() is None


def check_loky_slots(devices: tuple[str, ...], per_device: int, n: int) -> None:
    """Every worker process is pinned to one slot's device for all its children, and no
    device has more processes than its slots."""
    slots = slot_devices(devices, per_device)
    out = dict(evaluate_tasks(device_probe, tasks(n), workers=1, backend="loky", devices=slots))
    assert sorted(out) == sorted(f"c{i}" for i in range(n))
    by_pid: dict[int, set[str]] = {}
    for r in out.values():
        by_pid.setdefault(r["pid"], set()).add(r["device"])
    assert os.getpid() not in by_pid and len(by_pid) <= len(slots)
    assert all(len(devs) == 1 for devs in by_pid.values())  # one device per worker, for life
    per_device_seen = [next(iter(d)) for d in by_pid.values()]
    assert set(per_device_seen) <= set(devices)
    assert max(per_device_seen.count(d) for d in set(per_device_seen)) <= per_device
    assert [out[f"c{i}"]["seed"] for i in range(n)] == list(range(100, 100 + n))
    assert pinned_device() is None  # the driver is not pinned


def test_loky_workers_each_hold_one_slot_of_a_fake_device_list():
    """Two fake GPUs, one worker each: each worker process receives its device string."""
    check_loky_slots(("cuda:0", "cuda:1"), 1, 6)


@pytest.mark.slow
def test_loky_workers_two_per_fake_device():
    """Two fake GPUs x 2 workers per device (four worker processes)."""
    check_loky_slots(("cuda:0", "cuda:1"), 2, 12)


def test_one_slot_runs_in_the_driver_pinned_for_each_child_only():
    out = dict(evaluate_tasks(device_probe, tasks(2), devices=("cuda:1",)))
    assert {r["device"] for r in out.values()} == {"cuda:1"}
    assert {r["pid"] for r in out.values()} == {os.getpid()}
    assert pinned_device() is None


def test_driver_slots_have_one_lock_folder_per_driver_and_list():
    a = DeviceSlots.for_driver(("cuda:0", "cuda:1"))
    assert a == DeviceSlots.for_driver(("cuda:0", "cuda:1"))
    assert a.lock_dir != DeviceSlots.for_driver(("cuda:0",)).lock_dir
    assert str(os.getpid()) in a.lock_dir


def test_toy_search_on_device_slots_equals_in_process(tmp_path):
    """The slot a child lands on does not change the search: seeds come from (run seed, child)."""
    from search_toys import lazy_ops, spectrum_fitness

    from nas.search.driver import run_search
    from nas.search.rundir import create_run

    run_toy(tmp_path / "one", lazy=True, generations=2)
    cfg = toy_config(tmp_path / "slots", generations=2)
    cfg = dataclasses.replace(cfg, execution=dataclasses.replace(
        cfg.execution, devices=("cpu",), workers_per_device=2))
    events = create_run(tmp_path / "slots", cfg.to_dict())
    try:
        run_search(cfg, ops=lazy_ops(cfg.search), evaluate=spectrum_fitness, events=events,
                   log=lambda m: None)
    finally:
        events.close()
    assert comparable(tmp_path / "slots") == comparable(tmp_path / "one")


@pytest.mark.slow
def test_dask_local_cluster_pins_each_worker_to_its_slot():
    """Without dask-cuda: one single-threaded worker process per slot, each pinned by the
    DevicePin plugin (fake CUDA devices on CPU)."""
    pytest.importorskip("distributed")
    from nas.search.gpu_cluster import DevicePin, local_device_cluster, uses_cuda_cluster

    devices = ("cuda:0", "cuda:1")
    assert not uses_cuda_cluster(("cpu",), 1) and not uses_cuda_cluster(devices, 2)
    assert DevicePin(slot_devices(devices, 1)).device_of(1) == "cuda:1"
    with local_device_cluster(devices, 1, log=lambda m: None):
        out = dict(evaluate_tasks(device_probe, tasks(6), backend="dask",
                                  devices=slot_devices(devices, 1)))
    assert sorted(out) == sorted(f"c{i}" for i in range(6))
    by_pid: dict[int, set[str]] = {}
    for r in out.values():
        by_pid.setdefault(r["pid"], set()).add(r["device"])
    assert os.getpid() not in by_pid
    assert all(len(d) == 1 for d in by_pid.values())
    assert set().union(*by_pid.values()) <= set(devices)
    assert len(by_pid) == len({next(iter(d)) for d in by_pid.values()})  # one worker per slot


@pytest.mark.parametrize("argv, message", [
    (["--devices", "gpu0"], "--devices: unknown device 'gpu0'"),
    (["--devices", "cuda:0,cuda:0"], "--devices: device cuda:0 is listed twice"),
    (["--devices", "cuda:0", "--workers-per-device", "0"], "--workers-per-device"),
    (["--devices", "cuda:0", "--device", "cpu"], "contradicts --device cpu"),
])
def test_bad_device_flags_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    from nas.cli import run
    from nas.evolve import main

    code = run(main, ["--preset", "smoke", "--run-dir", str(tmp_path), "--name", "r",
                      "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_evolve_with_one_device_slot_runs_and_stores_its_devices(tmp_path):
    """One slot: the children run in the driver, pinned to the listed device; the run's
    config.json keeps the device list (an execution setting)."""
    import json

    from nas.evolve import main

    code = main(["--preset", "smoke", "--generations", "1", "--devices", "cpu",
                 "--run-dir", str(tmp_path), "--name", "r", "--cache-dir",
                 str(tmp_path / "cache"), "--no-progress"])
    assert code == 0 and pinned_device() is None
    run = tmp_path / "r"
    stored = json.loads((run / "config.json").read_text())["config"]["execution"]
    assert stored["devices"] == ["cpu"] and stored["workers_per_device"] == 1
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    finished = [e for e in events if e["type"] == "child_finished"]
    assert len(finished) == 6 and all(e["metrics"]["status"] == "ok" for e in finished)


def test_a_resume_may_change_the_devices_but_not_the_search():
    stored = cfgmod.resolve({}, preset="smoke", config_file=None, run_dir="r").to_dict()
    moved = cfgmod.resolve_resume(stored, {"devices": "cuda:0,cuda:1", "workers_per_device": 3},
                                  preset=None, config_file=None, run_dir="r")
    assert moved.execution.devices == ("cuda:0", "cuda:1") and moved.execution.concurrency == 6
    with pytest.raises(UserError, match="refusing to resume"):
        cfgmod.resolve_resume(stored, {"devices": "cuda:0", "device": "cuda"}, preset=None,
                              config_file=None, run_dir="r")  # --device is the fitness's
