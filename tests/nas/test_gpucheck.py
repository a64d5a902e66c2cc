"""The GPU check's CPU side: its no-GPU path, the gpu preset, the step budget, the CIFAR-shaped
Fashion-MNIST variant, and the check's stages run on the CPU."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from nas.errors import UserError
from nas.evaluation.data import as_3x32, dataset_info, load_splits
from nas.gpucheck import NO_GPU, build_parser, expected, main
from nas.search import config as cfgmod
from nas.search.budget import expected_hours, preset_steps, search_steps
from nas.search.config import SearchSettings

SHARED = Path(os.environ.get("NAS_DATA_ROOT")
              or Path(__file__).resolve().parents[3] / "shared" / "data")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path needs a machine without")
def test_without_cuda_the_check_says_so_in_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.out == NO_GPU + "\n" and captured.err == ""
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_every_flag_has_help():
    for action in build_parser()._actions:
        assert action.help, action.dest


def test_bad_concurrency_is_a_user_error():
    with pytest.raises(UserError, match="concurrency"):
        main(["--concurrency", "0,2"])


def test_gpu_preset_resolves_to_the_reduced_cifar10_experiment():
    cfg = cfgmod.resolve({}, preset="gpu", config_file=None, run_dir="")
    fit, search, ex = cfg.fitness, cfg.search, cfg.execution
    assert (fit.dataset, fit.train_size, fit.test_size, fit.reference) == ("cifar10", 10000,
                                                                          1000, "he-ref")
    assert (fit.attack, fit.batch_size, fit.recipe) == ("pgd-linf", 128, "paper")
    assert (search.population, search.children, search.epochs, search.epochs_step) == (5, 2,
                                                                                      20, 5)
    assert ex.devices == ("cuda:0",) and ex.concurrency == 4
    shaped = cfgmod.resolve({"dataset": "fashion-mnist-3x32", "devices": "cuda:0,cuda:1"},
                            preset="gpu", config_file=None, run_dir="")
    assert shaped.execution.concurrency == 8 and shaped.fitness.dataset == "fashion-mnist-3x32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_gpu_preset_on_a_cpu_only_machine_is_refused_before_a_run_folder(tmp_path):
    from nas.evolve import main as evolve_main

    with pytest.raises(UserError, match="CUDA is not available"):
        evolve_main(["--preset", "gpu", "--run-dir", str(tmp_path), "--name", "r",
                     "--no-progress"])
    assert not (tmp_path / "r").exists()


def test_search_steps_count_every_child_epoch():
    s = SearchSettings(population=2, children=1, generations=2, epochs=3, epochs_step=1,
                       epochs_every=1, refine_epochs=4)
    steps = search_steps(s, train_size=100, batch_size=50, reference_epochs=5)
    # generation 0: 2 x 3 epochs; generation 1: 2 x 3; generation 2: 2 x 4 (+1 per generation)
    assert (steps.children, steps.child_epochs) == (6, 20)
    assert (steps.child_steps, steps.refine_steps, steps.reference_steps) == (40, 16, 10)
    hours = expected_hours(steps, gm_step_s=0.5, plain_step_s=0.1, gain=2.0, devices=2)
    assert hours == pytest.approx(((40 + 16) * 0.5 / 4 + 10 * 0.1) / 3600)


def test_warm_start_samples_count_in_generation_0():
    s = SearchSettings(population=2, children=1, generations=0, epochs=3, init_samples=5)
    assert search_steps(s, train_size=10, batch_size=10).children == 5


def test_expected_hours_use_the_measured_sharing_gain():
    report = {"sharing": {"rows": [{"concurrent": 1, "steps_per_s": 100.0},
                                   {"concurrent": 4, "steps_per_s": 250.0}]},
              "bench": {"children": {"he-ref": {"plain_s": 0.002}}}}
    e = expected(report)
    gpu = preset_steps("gpu")
    by_hand = ((gpu.child_steps + gpu.refine_steps) / 250.0 + gpu.reference_steps * 0.002) / 3600
    assert e["gpu_preset_h"] == round(by_hand, 2) and e["gpu_preset_concurrent"] == 4
    assert e["paper_full_h"] > e["paper_reduced_as_written_h"] > e["gpu_preset_h"]
    assert "skipped" in expected({})


def test_grey_28_images_become_cifar_shaped():
    x = torch.randint(1, 256, (4, 1, 28, 28), dtype=torch.uint8)
    y = as_3x32(x)
    assert y.shape == (4, 3, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, 1, 2:30, 2:30], x[:, 0]) and torch.equal(y[:, 0], y[:, 2])
    assert int(y[:, :, :2].max()) == 0 and int(y[:, :, :, 30:].max()) == 0  # black border
    assert dataset_info("fashion-mnist-3x32").input_shape == (3, 32, 32)


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(), reason="no local data")
def test_fashion_mnist_3x32_loads_with_its_stated_statistics(tmp_path):
    s = load_splits("fashion-mnist-3x32", train_size=1000, val_size=100, test_size=100,
                    data_root=str(SHARED), cache_dir=str(tmp_path))
    assert s.x_train.shape == (1000, 3, 32, 32)
    info = dataset_info("fashion-mnist-3x32")
    x = s.x_train.float() / 255
    assert abs(float(x.mean()) - info.mean[0]) < 0.01 and abs(float(x.std()) - info.std[0]) < 0.01


def test_a_timed_gm_step_runs_on_the_cpu():
    from nas.gpu_measure import children_per_hour, timed_steps

    r = timed_steps("cpu", steps=1, warmup=0, batch_size=8)
    assert r["end"] >= r["start"] and r["s_per_step"] > 0
    assert children_per_hour(10.0, 1800.0) == 20.0


def test_the_check_search_argv_resolves_to_the_gpu_preset(tmp_path):
    from nas.evolve import build_parser as evolve_parser
    from nas.evolve import flags_from_args
    from nas.gpu_measure import search_argv

    argv = search_argv(str(tmp_path), "s", devices="cuda:0", per_device=4, train_size=2000,
                       generations=2, epochs=10, cache_dir=str(tmp_path / "c"))
    args = evolve_parser().parse_args(argv)
    cfg = cfgmod.resolve(flags_from_args(args), preset=args.preset, config_file=None,
                         run_dir="")
    assert cfg.fitness.dataset == "fashion-mnist-3x32" and cfg.fitness.held_out == ()
    assert (cfg.fitness.train_size, cfg.fitness.val_size) == (2000, 200)
    assert cfg.search.generations == 2 and cfg.execution.concurrency == 4


@pytest.mark.slow
def test_the_whole_check_runs_on_the_cpu(tmp_path):
    """Every stage of the check, shrunk (``--quick``), on the CPU: the JSON holds them all."""
    out = tmp_path / "check.json"
    assert main(["--device", "cpu", "--quick", "--concurrency", "1,2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for stage in ("tests", "bench", "sharing", "search"):
        assert "error" not in report[stage], report[stage]
    assert [r["concurrent"] for r in report["sharing"]["rows"]] == [1, 2]
    assert report["search"]["children_trained"] > 0
    assert math.isfinite(report["expected"]["gpu_preset_h"])
