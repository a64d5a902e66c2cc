"""Datasets from files (``folder:DIR``, ``npz:FILE``): what the data says, the same splits as any
registered dataset, and one line with exit 2 for every bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nas.cli import run
from nas.errors import UserError
from nas.evaluation.data import dataset_info, load_splits, synthetic_images
from nas.evaluation.filedata import with_image_size
from nas.evolve import main as evolve_main
from nas.train import main as train_main


def write_folder(root, x: torch.Tensor, y: torch.Tensor, split: str, names=None) -> None:
    """PNG files ``root/split/c<label>/<i>.png`` of uint8 images (N, C, H, W)."""
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        folder = root / split / f"c{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        a = img.permute(1, 2, 0).numpy()
        Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(folder / f"{i:05d}.png")


def images(per_class: int, classes: int = 10, shape=(1, 28, 28), seed: int = 0):
    return synthetic_images(per_class, classes, shape, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """A gray folder dataset (12 / 4 images per class) and the arrays written into it."""
    root = tmp_path_factory.mktemp("gray")
    (x_tr, y_tr), (x_te, y_te) = images(12), images(4, seed=1)
    write_folder(root, x_tr, y_tr, "train")
    write_folder(root, x_te, y_te, "test")
    return root, (x_tr, y_tr, x_te, y_te)


def test_a_folder_reads_back_the_exact_pixels_and_takes_classes_shape_and_stats_from_them(gray):
    root, (x_tr, y_tr, x_te, y_te) = gray
    info = dataset_info(f"folder:{root}")
    assert (info.num_classes, info.input_shape) == (10, (1, 28, 28))
    pixels = x_tr.double() / 255
    assert info.mean == (round(float(pixels.mean()), 4),)
    assert info.std == (round(float(pixels.std(unbiased=False)), 4),)
    splits = load_splits(f"folder:{root}", train_size=80, val_size=20, test_size=40, seed=3)
    # synthetic images are label-major, as a folder is read: the same order, the same subsets
    ref = load_splits(f"npz:{_npz(root.parent / 'same.npz', x_tr, y_tr, x_te, y_te)}",
                      train_size=80, val_size=20, test_size=40, seed=3)
    for split in ("train", "val", "test"):
        assert torch.equal(splits.split(split)[0], ref.split(split)[0])
        assert torch.equal(splits.split(split)[1], ref.split(split)[1])
    assert len(set(splits.y_train.tolist())) == 10 and splits.x_train.dtype == torch.uint8


def _npz(path, x_tr, y_tr, x_te, y_te, **extra):
    np.savez(path, x_train=x_tr.numpy(), y_train=y_tr.numpy(), x_test=x_te.numpy(),
             y_test=y_te.numpy(), **extra)
    return path


def test_npz_takes_channels_last_and_float_pixels_to_the_same_uint8_images(tmp_path):
    (x_tr, y_tr), (x_te, y_te) = images(5, 3, (3, 8, 8)), images(2, 3, (3, 8, 8), seed=1)
    a = _npz(tmp_path / "a.npz", x_tr, y_tr, x_te, y_te)
    b = tmp_path / "b.npz"
    np.savez(b, x_train=x_tr.permute(0, 2, 3, 1).numpy() / 255.0, y_train=y_tr.numpy(),
             x_test=x_te.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0,
             y_test=y_te.numpy())
    ia, ib = dataset_info(f"npz:{a}"), dataset_info(f"npz:{b}")
    assert ia == ib and ia.input_shape == (3, 8, 8) and len(ia.mean) == 3
    assert ia.name.startswith("npz-")  # named by the content, not the path


def test_rgb_and_mixed_sizes_resized_with_image_size(tmp_path):
    (x, y) = images(3, 2, (3, 20, 20))
    write_folder(tmp_path, x, y, "train")
    write_folder(tmp_path, x[:2], y[:2], "test")
    Image.fromarray(np.zeros((30, 24, 3), np.uint8)).save(tmp_path / "train" / "c0" / "big.png")
    with pytest.raises(UserError, match=r"big.png: 24x30 pixels.*--image-size"):
        dataset_info(f"folder:{tmp_path}")
    spec = with_image_size(f"folder:{tmp_path}", "16")
    info = dataset_info(spec)
    assert spec.endswith("@16") and info.input_shape == (3, 16, 16) and info.num_classes == 2
    assert with_image_size(spec, "12x10").endswith("@12x10")


def _bad_folder(tmp_path, case: str):
    (x, y) = images(3, 2)
    write_folder(tmp_path, x, y, "train")
    if case != "missing split":
        write_folder(tmp_path, x, y, "test")
    if case == "mixed sizes":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "train" / "c1" / "odd.png")
    if case == "one class":
        for f in (tmp_path / "train" / "c1").iterdir():
            f.unlink()
        (tmp_path / "train" / "c1").rmdir()
        for f in (tmp_path / "test" / "c1").iterdir():
            f.unlink()
        (tmp_path / "test" / "c1").rmdir()
    if case == "unreadable image":
        (tmp_path / "train" / "c0" / "broken.png").write_bytes(b"not a png")
    if case == "test class unknown":
        write_folder(tmp_path, x[:1], torch.tensor([7]), "test")
    return f"folder:{tmp_path}"


def _bad_npz(tmp_path, case: str):
    (x, y) = images(3, 3)
    tmp_path.mkdir(parents=True, exist_ok=True)
    if case == "npz missing key":
        np.savez(tmp_path / "d.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=x.numpy())
    elif case == "npz labels out of range":
        _npz(tmp_path / "d.npz", x, y, x, y + 5)
    elif case == "npz float out of range":
        _npz(tmp_path / "d.npz", x.float(), y, x, y)
    return f"npz:{tmp_path / 'd.npz'}"


BAD = [("missing split", "test: missing split folder"), ("mixed sizes", "odd.png: 20x20 pixels"),
       ("one class", "one class only"), ("unreadable image", "broken.png: unreadable image"),
       ("test class unknown", "c7: labels out of range"),
       ("npz missing key", "d.npz: missing y_test"),
       ("npz labels out of range", "d.npz: labels out of range: y_test has label 7"),
       ("npz float out of range", "d.npz: x_train is float outside [0, 1]")]


@pytest.mark.parametrize(("case", "words"), BAD)
@pytest.mark.parametrize("command", ["evolve", "train"])
def test_bad_files_are_one_line_naming_the_file_and_exit_2(tmp_path, capsys, case, words,
                                                           command):
    spec = (_bad_npz if case.startswith("npz") else _bad_folder)(tmp_path / "data", case)
    if command == "evolve":
        code = run(evolve_main, ["--preset", "smoke", "--dataset", spec, "--run-dir",
                                 str(tmp_path / "runs"), "--no-progress"])
    else:
        code = run(train_main, ["he-ref", "--dataset", spec, "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert words in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_image_size_comes_from_the_flag_the_config_file_and_is_refused_for_other_datasets(
        tmp_path, gray, capsys):
    from nas.search.config import resolve

    root, _ = gray
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"dataset": f"folder:{root}", "image_size": 14}))
    cfg = resolve({}, preset="smoke", config_file=str(cfg_file), run_dir="r")
    assert cfg.fitness.dataset == f"folder:{root}@14"
    assert resolve({"dataset": f"folder:{root}", "image_size": "14"}, preset="smoke",
                   config_file=None, run_dir="r") == cfg
    code = run(evolve_main, ["--preset", "smoke", "--image-size", "14", "--run-dir",
                             str(tmp_path / "runs")])
    assert code == 2 and "--image-size: resizes folder: datasets only" in capsys.readouterr().err


def test_a_smoke_search_runs_on_a_folder_dataset_and_names_the_run_by_a_folder_name(tmp_path,
                                                                                    gray):
    from nas import api

    root, _ = gray
    result = api.search("smoke", run_dir=str(tmp_path), dataset=f"folder:{root}", generations=1,
                        population=2, train_size=60, val_size=30, test_size=40, image_size=20)
    assert result.path.parent == tmp_path and "/" not in result.path.name
    assert result.config["fitness"]["dataset"] == f"folder:{root}@20"
    assert all(c["metrics"]["status"] == "ok" for c in result.children.values())
