"""Datasets from the user's files: ``folder:DIR`` (ImageFolder layout) and ``npz:FILE``.

Both are *resolvers* of the dataset registry (:meth:`nasbase.registry.Registry.add_resolver`):
``load_splits("folder:data/signs", ...)`` works wherever a registered name does, so the balanced
subsets, the validation split, the caches and every check of :mod:`nas.evaluation.data` apply
unchanged.

- ``folder:DIR``: torchvision's ``ImageFolder`` layout, ``DIR/train/<class>/<image>`` and
  ``DIR/test/<class>/<image>``; classes are the sorted folder names of ``train/`` (label ``i`` =
  the ``i``-th), images are read in sorted file-name order within a class, any format Pillow
  reads. All grayscale images give 1 channel, otherwise every image is converted to RGB.
  Images of one size are kept as they are; mixed sizes need ``--image-size N`` (or ``HxW``),
  which resizes every image of another size (bilinear) and is written ``folder:DIR@N``.
- ``npz:FILE``: ``x_train``, ``y_train``, ``x_test``, ``y_test``; images ``(N, H, W)``,
  ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` 1 or 3, ``uint8`` or float in [0, 1] (scaled
  by 255 and rounded); labels integers ``0 .. K-1``.

The class count is ``K`` (every class needs training images, at least two classes), the shape
is the images', and the normalisation is the per-channel mean and standard deviation of the
training pixels in [0, 1], rounded to 4 decimals (as the built-in constants are: an npz of
MNIST gets exactly the built-in ``mnist``'s 0.1307 / 0.3081). The dataset's ``info.name`` is
``folder-<digest>`` / ``npz-<digest>`` with the digest of the decoded images and labels, so
the cached references and adversarial sets follow the content, not the path. Bad files are one
:class:`nas.errors.UserError` line naming the file and what is wrong.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from nas.errors import UserError
from nas.evaluation.cache import tensor_digest
from nas.evaluation.data import DATASETS, DatasetInfo, Loader

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
_SIZE = re.compile(r"^(\d+)(?:x(\d+))?$")
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def parse_image_size(text: str) -> tuple[int, int]:
    """``"32"`` -> ``(32, 32)``, ``"32x24"`` -> ``(32, 24)`` (height x width)."""
    match = _SIZE.match(str(text).strip())
    if not match or int(match.group(1)) < 1 or int(match.group(2) or 1) < 1:
        raise UserError(f"expected N or HxW (positive pixels), got {text!r}", setting="image_size")
    h = int(match.group(1))
    return h, int(match.group(2) or h)


def with_image_size(dataset: str, size: int | str) -> str:
    """``folder:DIR`` with ``--image-size`` folded in: ``folder:DIR@N`` (replacing any size)."""
    if not dataset.startswith("folder:"):
        raise UserError(f"resizes folder: datasets only, not {dataset!r}", setting="image_size")
    h, w = parse_image_size(str(size))
    root, _ = split_size(dataset[len("folder:"):])
    return f"folder:{root}@{h if h == w else f'{h}x{w}'}"


def fold_image_size(values: dict) -> dict:
    """Settings with an ``image_size`` key folded into their ``dataset`` (the one place the
    flag, the config file and the API turn ``--image-size`` into the dataset's name)."""
    values = dict(values)
    size = values.pop("image_size", None)
    if size is not None:
        values["dataset"] = with_image_size(str(values.get("dataset", "")), size)
    return values


def split_size(spec: str) -> tuple[str, tuple[int, int] | None]:
    """``"DIR@32"`` -> ``("DIR", (32, 32))``; ``"DIR"`` -> ``("DIR", None)``."""
    root, sep, size = spec.rpartition("@")
    if sep and _SIZE.match(size):
        return root, parse_image_size(size)
    return spec, None


def image_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, H, W)`` as pixels in
    [0, 1], rounded to 4 decimals (float64 sums: the same numbers whatever the image order)."""
    v = x.to(torch.float64).div_(255.0).transpose(0, 1).flatten(1)  # (C, N*H*W)
    mean = v.mean(dim=1)
    std = v.std(dim=1, unbiased=False)
    return (tuple(round(float(m), 4) for m in mean),
            tuple(max(round(float(s), 4), 1e-4) for s in std))


def _info(kind: str, arrays: Arrays, where: str) -> DatasetInfo:
    """The :class:`DatasetInfo` the data says: classes, shape, normalisation (module doc)."""
    x_tr, y_tr, x_te, y_te = arrays
    low = min(int(y_tr.min()) if len(y_tr) else 0, int(y_te.min()) if len(y_te) else 0)
    if low < 0:
        raise UserError(f"{where}: labels out of range: label {low} (labels are 0 .. K-1)")
    present = sorted(set(torch.unique(y_tr).tolist()))
    if len(present) < 2:
        raise UserError(f"{where}: one class only; a classifier needs at least two")
    k = present[-1] + 1
    missing = sorted(set(range(k)) - set(present))
    if missing:
        raise UserError(f"{where}: labels out of range: the training labels go to {k - 1} but "
                        f"class {missing[0]} has no training image")
    if len(y_te) and int(y_te.max()) >= k:
        raise UserError(f"{where}: labels out of range: y_test has label {int(y_te.max())}, "
                        f"the training labels are 0-{k - 1}")
    mean, std = image_stats(x_tr)
    name = f"{kind}-{tensor_digest(x_tr, y_tr, x_te, y_te)[:12]}"
    return DatasetInfo(name, k, tuple(x_tr.shape[1:]), mean, std)  # type: ignore[arg-type]


def _loader(arrays: Arrays) -> Loader:
    def load(*, cache: Path, data_root: str | None, sizes: tuple[int, int], seed: int,
             log=print) -> Arrays:
        return arrays

    return load


# --------------------------------------------------------------------------------- folder:DIR


def _class_files(split_dir: Path) -> dict[str, list[Path]]:
    """``{class folder name: sorted image paths}`` of one split (hidden entries skipped)."""
    if not split_dir.is_dir():
        raise UserError(f"{split_dir}: missing split folder (expected {split_dir.parent}/train/"
                        f"<class>/<image> and {split_dir.parent}/test/<class>/<image>)")
    classes = sorted(p.name for p in split_dir.iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    out = {c: sorted(p for p in (split_dir / c).iterdir()
                     if p.is_file() and not p.name.startswith(".")) for c in classes}
    if not out:
        raise UserError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    for c, files in out.items():
        if not files:
            raise UserError(f"{split_dir / c}: no images")
    return out


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: unreadable image ({detail})") from None
    return image


def _decode(paths: list[Path], size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` of the images: gray when all are, else RGB (module doc)."""
    from PIL import Image

    images = [_open(p) for p in paths]
    gray = all(im.mode in _GRAY_MODES for im in images)
    first = images[0].size
    out = []
    for path, im in zip(paths, images, strict=True):
        if size is None and im.size != first:
            raise UserError(f"{path}: {im.size[0]}x{im.size[1]} pixels, {paths[0]} has "
                            f"{first[0]}x{first[1]}; pass --image-size N to resize all images")
        im = im.convert("L" if gray else "RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        out.append(torch.from_numpy(a.copy()).unsqueeze(0) if a.ndim == 2
                   else torch.from_numpy(a.copy()).permute(2, 0, 1))
    return torch.stack(out)


def _folder_arrays(root: Path, size: tuple[int, int] | None) -> Arrays:
    train, test = _class_files(root / "train"), _class_files(root / "test")
    classes = list(train)
    strangers = [c for c in test if c not in train]
    if strangers:
        raise UserError(f"{root / 'test' / strangers[0]}: labels out of range: class "
                        f"{strangers[0]!r} has no folder in {root / 'train'}")
    paths = {s: [p for c in d for p in d[c]] for s, d in (("train", train), ("test", test))}
    labels = {s: torch.tensor([classes.index(c) for c in d for _ in d[c]], dtype=torch.long)
              for s, d in (("train", train), ("test", test))}
    x = _decode(paths["train"] + paths["test"], size)  # one decode: one mode, one size
    n = len(paths["train"])
    return x[:n], labels["train"], x[n:], labels["test"]


def _signature(root: Path) -> tuple:
    """What a folder is judged unchanged by within one process: the modification times of its
    split and class folders (they change when an image is added, removed or renamed), so a
    lookup costs a few ``stat`` calls however many images there are."""
    dirs = [root] + [d for split in ("train", "test") if (root / split).is_dir()
                     for d in (root / split, *sorted((root / split).iterdir())) if d.is_dir()]
    return tuple((str(d), d.stat().st_mtime_ns) for d in dirs)


@lru_cache(maxsize=4)
def _folder_cached(root: str, size: tuple[int, int] | None, signature: tuple
                   ) -> tuple[DatasetInfo, Loader]:
    arrays = _folder_arrays(Path(root), size)
    return _info("folder", arrays, root), _loader(arrays)


def folder_dataset(spec: str) -> tuple[DatasetInfo, Loader]:
    """The registry entry of ``folder:spec`` (``DIR`` or ``DIR@N``); read once per process."""
    text, size = split_size(spec)
    root = Path(text).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder does not exist (folder:DIR wants DIR/train and "
                        "DIR/test)", setting="dataset")
    return _folder_cached(str(root), size, _signature(root))


# --------------------------------------------------------------------------------- npz:FILE

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _images(path: Path, key: str, x: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` from an npz image array (layouts and dtypes of the module doc)."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise UserError(f"{path}: {key} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                        "(N, C, H, W) with C 1 or 3")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise UserError(f"{path}: {key} is float outside [0, 1] (min {x.min():.4g}, max "
                            f"{x.max():.4g}); give uint8 or float pixels in [0, 1]")
        return torch.from_numpy(np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8)))
    raise UserError(f"{path}: {key} has dtype {x.dtype}; expected uint8 or float in [0, 1]")


def _labels(path: Path, key: str, y: np.ndarray, n: int) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: {key} must be {n} integer labels (one per image), got "
                        f"{y.dtype} {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


def _npz_arrays(path: Path) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _NPZ_KEYS if k not in data.files]
            if missing:
                raise UserError(f"{path}: missing {', '.join(missing)} (an npz dataset holds "
                                f"{', '.join(_NPZ_KEYS)})")
            raw = {k: data[k] for k in _NPZ_KEYS}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise UserError(f"{path}: not a readable npz file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    x_tr, x_te = _images(path, "x_train", raw["x_train"]), _images(path, "x_test", raw["x_test"])
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(f"{path}: x_train images are {tuple(x_tr.shape[1:])}, x_test "
                        f"{tuple(x_te.shape[1:])}; both splits need one shape")
    return (x_tr, _labels(path, "y_train", raw["y_train"], len(x_tr)),
            x_te, _labels(path, "y_test", raw["y_test"], len(x_te)))


@lru_cache(maxsize=4)
def _npz_cached(path: str, signature: tuple) -> tuple[DatasetInfo, Loader]:
    arrays = _npz_arrays(Path(path))
    return _info("npz", arrays, path), _loader(arrays)


def npz_dataset(spec: str) -> tuple[DatasetInfo, Loader]:
    """The registry entry of ``npz:FILE``; read once per process (while the file is unchanged)."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: npz file does not exist", setting="dataset")
    st = path.stat()
    return _npz_cached(str(path), (st.st_size, st.st_mtime_ns))


DATASETS.add_resolver("folder", folder_dataset, "folder:DIR")
DATASETS.add_resolver("npz", npz_dataset, "npz:FILE")
