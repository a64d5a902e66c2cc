"""Real images through the file doors give the built-in datasets' searches, bit for bit.

- A folder of Fashion-MNIST PNGs (a few hundred, written by the test) searches exactly as the
  built-in loader's tensors of the same images: same subsets, same events, same weights.
- An npz of the whole of MNIST *is* the built-in ``mnist`` (its normalisation constants come
  out of the data) and gives the built-in ``--dataset mnist`` search.

They need the raw files under ``NAS_DATA_ROOT`` (CI sets it) and skip cleanly without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from search_toys import comparable

from nas.evaluation.cache import tensor_digest
from nas.evaluation.data import (
    DATASETS,
    DatasetInfo,
    dataset_info,
    load_splits,
    register_dataset,
)
from nas.evolve import main

ROOT = os.environ.get("NAS_DATA_ROOT")
_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _have(folder: str) -> bool:
    return bool(ROOT) and all((Path(ROOT) / folder / "raw" / f).is_file() for f in _FILES)


def _builtin(name: str, cache: Path):
    """The full train + test tensors of a built-in dataset, from its registered loader."""
    _, loader = DATASETS.get(name)
    return loader(cache=cache, data_root=ROOT, sizes=(0, 0), seed=0, log=lambda _m: None)


def _search(tmp: Path, cache: str, name: str, dataset: str) -> Path:
    assert main(["--preset", "smoke", "--dataset", dataset, "--run-dir", str(tmp), "--name", name,
                 "--cache-dir", cache, "--generations", "1", "--population", "2",
                 "--no-progress"]) == 0
    return tmp / name


def _weights(run: Path) -> dict[str, str]:
    out = {}
    for path in sorted(run.rglob("*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        out[str(path.relative_to(run))] = tensor_digest(*state.values())
    return out


def _same_subsets(a: str, b: str) -> None:
    """The smoke preset's subsets of datasets ``a`` and ``b`` are the same images and labels."""
    sa, sb = (load_splits(n, train_size=60, val_size=30, test_size=30, seed=0) for n in (a, b))
    for split in ("train", "val", "test"):
        assert all(torch.equal(u, v) for u, v in zip(sa.split(split), sb.split(split),
                                                     strict=True))


def _same_search(a: Path, b: Path) -> None:
    children = comparable(a)["children"]
    assert children and all(e["metrics"]["status"] == "ok" for e in children)
    assert comparable(a) == comparable(b)
    weights = _weights(a)
    assert weights and weights == _weights(b)


@pytest.mark.skipif(not _have("FashionMNIST"), reason="NAS_DATA_ROOT lacks Fashion-MNIST")
def test_a_folder_of_fashion_mnist_pngs_searches_as_the_builtin_tensors_of_those_images(
        tmp_path, nas_cache_dir):
    x_tr, y_tr, x_te, y_te = _builtin("fashion-mnist", nas_cache_dir)
    # the first 20 training and 5 test images of every class, in ImageFolder order
    # (class folders sorted, files sorted by name = by original index within a class)
    pick_tr = torch.cat([(y_tr == c).nonzero().flatten()[:20] for c in range(10)])
    pick_te = torch.cat([(y_te == c).nonzero().flatten()[:5] for c in range(10)])
    root = tmp_path / "fashion"
    for split, x, y, pick in (("train", x_tr, y_tr, pick_tr), ("test", x_te, y_te, pick_te)):
        for i in pick.tolist():
            folder = root / split / f"{int(y[i]):02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i, 0].numpy()).save(folder / f"{i:05d}.png")
    arrays = (x_tr[pick_tr], y_tr[pick_tr], x_te[pick_te], y_te[pick_te])
    pixels = arrays[0].double() / 255
    info = DatasetInfo("fashion-mnist-pngs", 10, (1, 28, 28), (round(float(pixels.mean()), 4),),
                       (round(float(pixels.std(unbiased=False)), 4),))
    if "fashion-mnist-pngs" not in DATASETS:
        register_dataset(info)(lambda **_: arrays)
    folder_info = dataset_info(f"folder:{root}")
    assert (folder_info.num_classes, folder_info.input_shape, folder_info.mean, folder_info.std) \
        == (10, (1, 28, 28), info.mean, info.std)
    _same_subsets(f"folder:{root}", "fashion-mnist-pngs")
    cache = str(tmp_path / "cache")
    _same_search(_search(tmp_path, cache, "folder", f"folder:{root}"),
                 _search(tmp_path, cache, "builtin", "fashion-mnist-pngs"))


@pytest.mark.skipif(not _have("MNIST"), reason="NAS_DATA_ROOT lacks MNIST")
def test_an_npz_of_mnist_is_the_builtin_mnist_and_gives_its_search(tmp_path, nas_cache_dir):
    x_tr, y_tr, x_te, y_te = _builtin("mnist", nas_cache_dir)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_tr[:, 0].numpy(), y_train=y_tr.numpy(),
             x_test=x_te[:, 0].numpy(), y_test=y_te.numpy())
    mine, builtin = dataset_info(f"npz:{path}"), dataset_info("mnist")
    assert (mine.num_classes, mine.input_shape, mine.mean, mine.std) == \
        (builtin.num_classes, builtin.input_shape, builtin.mean, builtin.std)
    _same_subsets(f"npz:{path}", "mnist")
    cache = str(tmp_path / "cache")
    _same_search(_search(tmp_path, cache, "npz", f"npz:{path}"),
                 _search(tmp_path, cache, "builtin", "mnist"))
