"""Datasets: balanced disjoint subsets, the synthetic set, offline loading rules, batches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nas.errors import UserError
from nas.evaluation.data import (
    balanced_indices,
    batch_indices,
    dataset_info,
    list_datasets,
    load_splits,
    synthetic_images,
)

SHARED = Path(os.environ.get("NAS_DATA_ROOT")
              or Path(__file__).resolve().parents[4] / "shared" / "data")


def test_registry_lists_the_documented_datasets():
    names = list_datasets()
    for name in ("cifar10", "fashion-mnist", "kmnist", "mnist", "synthetic"):
        assert name in names
    assert dataset_info("cifar10").input_shape == (3, 32, 32)
    assert len(dataset_info("cifar10").mean) == 3


def test_splits_are_balanced_uint8_and_deterministic(synthetic_splits):
    s = synthetic_splits
    assert s.x_train.dtype == torch.uint8 and s.x_train.shape == (200, 1, 28, 28)
    for y, n in ((s.y_train, 20), (s.y_val, 5), (s.y_test, 5)):
        assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), n))
    again = load_splits("synthetic", train_size=200, val_size=50, test_size=50, seed=0)
    assert torch.equal(again.x_train, s.x_train) and torch.equal(again.y_val, s.y_val)
    other = load_splits("synthetic", train_size=200, val_size=50, test_size=50, seed=1)
    assert not torch.equal(other.x_train, s.x_train)


def test_balanced_indices_are_disjoint_and_equal_per_class():
    y = torch.arange(10).repeat(30)  # 30 per class
    a, b = balanced_indices(y, [20, 7], 10, torch.Generator().manual_seed(0))
    assert not set(a.tolist()) & set(b.tolist())
    assert torch.equal(torch.bincount(y[a]), torch.full((10,), 20))
    assert torch.equal(torch.bincount(y[b]), torch.full((10,), 7))
    with pytest.raises(UserError, match="class 0 has 30 samples"):
        balanced_indices(y, [25, 10], 10, torch.Generator())


def test_sizes_must_be_multiples_of_the_class_count():
    with pytest.raises(UserError, match="multiple of 10"):
        load_splits("synthetic", train_size=105, val_size=0, test_size=10)


def test_synthetic_is_learnable_by_a_nearest_class_mean_classifier():
    g = torch.Generator().manual_seed(0)
    x, y = synthetic_images(40, 10, (1, 28, 28), g)
    xt, yt = synthetic_images(20, 10, (1, 28, 28), g)
    means = torch.stack([x[y == c].float().mean(0) for c in range(10)]).flatten(1)  # (10, D)
    pred = torch.cdist(xt.float().flatten(1), means).argmin(1)
    assert (pred == yt).float().mean() > 0.5  # chance is 0.1
    rgb, _ = synthetic_images(2, 10, (3, 32, 32), g)
    assert rgb.shape == (20, 3, 32, 32) and rgb.dtype == torch.uint8


def test_batch_indices_cover_every_sample_once():
    parts = list(batch_indices(10, 4, torch.Generator().manual_seed(0)))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))


def test_offline_without_files_is_one_clear_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        load_splits("kmnist", train_size=10, val_size=0, test_size=10, data_root=str(tmp_path),
                    cache_dir=str(tmp_path / "cache"))
    msg = str(err.value)
    assert "kmnist" in msg and "train-images-idx3-ubyte.gz" in msg and "--data-root" in msg
    assert "\n" not in msg


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(), reason="no local data")
def test_real_fashion_mnist_is_copied_into_the_cache_from_a_read_only_root(tmp_path):
    before = sorted(os.listdir(SHARED / "FashionMNIST" / "raw"))
    s = load_splits("fashion-mnist", train_size=100, val_size=10, test_size=10,
                    data_root=str(SHARED), cache_dir=str(tmp_path))
    assert s.x_train.shape == (100, 1, 28, 28) and s.x_train.max() > 200
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()
    assert sorted(os.listdir(SHARED / "FashionMNIST" / "raw")) == before


def _stage_fashion(cache: Path, **kw):
    return load_splits("fashion-mnist", train_size=100, val_size=10, test_size=10,
                       data_root=str(SHARED), cache_dir=str(cache), **kw)


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(), reason="no local data")
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_broken_staged_raw_file_is_logged_and_staged_again(tmp_path, damage):
    """Issue 12.2: a 0-byte staged file made every offline run say 'not found offline'."""
    first = _stage_fashion(tmp_path)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    for extracted in raw.glob("*-ubyte"):  # as after a kill during the first staging
        extracted.unlink()
    staged = raw / "t10k-labels-idx1-ubyte.gz"
    staged.write_bytes(b"" if damage == "empty" else staged.read_bytes()[:100])
    msgs: list[str] = []
    again = _stage_fashion(tmp_path, log=msgs.append)
    assert torch.equal(first.x_test, again.x_test) and torch.equal(first.y_test, again.y_test)
    assert len(msgs) == 1 and str(staged) in msgs[0] and "staging it again" in msgs[0]
    assert staged.read_bytes() == (SHARED / "FashionMNIST" / "raw" / staged.name).read_bytes()


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(), reason="no local data")
def test_a_truncated_extracted_file_is_extracted_again(tmp_path):
    first = _stage_fashion(tmp_path)
    extracted = tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    extracted.write_bytes(extracted.read_bytes()[:5000])
    msgs: list[str] = []
    again = _stage_fashion(tmp_path, log=msgs.append)
    assert torch.equal(first.x_train, again.x_train)
    assert len(msgs) == 1 and "extracting them again" in msgs[0] and "\n" not in msgs[0]


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(), reason="no local data")
def test_a_kill_while_staging_leaves_no_partial_file(tmp_path):
    """Issue 12.2: the copy is atomic; a kill before its rename leaves no staged file."""
    import signal
    import subprocess
    import sys

    code = ("import sys; from nas.evaluation.data import load_splits; load_splits('fashion-mnist', "
            "train_size=100, val_size=10, test_size=10, data_root=sys.argv[1], "
            "cache_dir=sys.argv[2])")
    env = {**os.environ, "NAS_TEST_KILL_AT": "stage:before-rename",
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.run([sys.executable, "-c", code, str(SHARED), str(tmp_path)], env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not [p for p in raw.iterdir() if not p.name.startswith(".")]  # only the temp file
    assert _stage_fashion(tmp_path).x_train.shape == (100, 1, 28, 28)
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # leftover cleaned
