"""Datasets as in-memory uint8 tensors: registry, offline loading, balanced subsets, batches.

Every dataset is a function registered under a name (STYLE.md §1) that returns the *full*
train and test sets as ``uint8`` tensors ``(N, C, H, W)`` plus ``long`` labels. On top of it
:func:`load_splits` builds the reduced, class-balanced subsets of the paper (§4.2: 10,000
training images, 1,000 per class; 1,000 test images, 100 per class) and a validation split
held out from the *training* set (equal per class, disjoint from the training subset) that the
search uses for fitness, so the test split is only read for final reports.

Loading rules for the torchvision datasets: intact files already in the cache are used;
otherwise the raw files are copied from ``data_root`` (``--data-root`` / env ``NAS_DATA_ROOT``,
read-only) into the cache *before* torchvision extracts anything, each atomically (temporary
file, fsync, rename) and verified (the source's size, torchvision's md5); otherwise torchvision
downloads them (unless env ``NAS_OFFLINE=1``). A staged file that is empty, truncated or fails
its md5 (e.g. a kill during an older copy) is logged in one line and staged again, and files
torchvision extracted that it cannot read are extracted again. torchvision called with
``download=True`` and correct-md5 ``.gz`` files present verifies them and makes no network request.
When all three fail the user gets one line naming the dataset, the files looked for and the flag to
use (:class:`nas.cli.UserError`).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.errors import UserError
from nas.evaluation.cache import first_line
from nasbase.files import write_atomically
from nasbase.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: class count, image shape ``(C, H, W)``, normalisation."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def network_args(self) -> dict[str, Any]:
        """The keyword arguments that compile a genome for this data
        (``compile_genome(graph, **info.network_args())``)."""
        return {"num_classes": self.num_classes, "input_shape": self.input_shape,
                "mean": self.mean, "std": self.std}


@dataclass
class Splits:
    """Reduced dataset in memory. ``x_*`` uint8 ``(N, C, H, W)``, ``y_*`` long ``(N,)``.

    ``protocol``: when the test split is the dataset's whole test set (``full_test``), the
    indices into it of the balanced ``test_size`` subset the paper's protocol scores (the
    images of the test split a run without ``full_test`` has); ``None`` otherwise.
    """

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    protocol: torch.Tensor | None = None

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise UserError(f"unknown split {name!r}; valid: test, train, val")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


Loader = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
DATASETS: Registry[tuple[DatasetInfo, Loader]] = Registry("dataset",
                                                          group="nas.datasets")


def register_dataset(info: DatasetInfo) -> Callable[[Loader], Loader]:
    """Decorator registering a loader
    ``(cache, data_root, sizes, seed, log) -> (xtr, ytr, xte, yte)``."""

    def decorator(fn: Loader) -> Loader:
        DATASETS.register(info.name)((info, fn))
        return fn

    return decorator


def list_datasets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered datasets."""
    return DATASETS.names(pattern)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (raises ``UnknownName``)."""
    return DATASETS.get(name)[0]


def cache_root(cache_dir: str | None = None) -> Path:
    """The cache directory: ``cache_dir``, else env ``NAS_CACHE_DIR``, else ``~/.cache/nas``.

    Only computes the path; writers create the folders they write into."""
    root = cache_dir or os.environ.get("NAS_CACHE_DIR") or Path.home() / ".cache" / "nas"
    return Path(root).expanduser()


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float pixels in [0, 1] (same shape)."""
    return x.float().div_(255.0)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index tensors covering ``range(n)`` once, the last batch possibly smaller."""
    perm = torch.randperm(n, generator=generator)
    yield from perm.split(batch_size)


def balanced_indices(
    y: torch.Tensor, per_class: list[int], num_classes: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Disjoint index sets, the ``i``-th with ``per_class[i]`` samples of every class.

    Raises:
        UserError: a class has fewer than ``sum(per_class)`` samples.
    """
    chosen: list[list[torch.Tensor]] = [[] for _ in per_class]
    for c in range(num_classes):
        idx = (y == c).nonzero().flatten()
        if len(idx) < sum(per_class):
            raise UserError(f"class {c} has {len(idx)} samples, {sum(per_class)} requested")
        idx = idx[torch.randperm(len(idx), generator=generator)]
        start = 0
        for i, k in enumerate(per_class):
            chosen[i].append(idx[start : start + k])
            start += k
    return [torch.cat(parts).sort().values for parts in chosen]


def _per_class(size: int, num_classes: int, what: str) -> int:
    if size < num_classes or size % num_classes:
        raise UserError(f"{what} {size} must be a positive multiple of {num_classes} (classes)")
    return size // num_classes


def load_splits(
    name: str,
    *,
    train_size: int,
    val_size: int,
    test_size: int,
    seed: int = 0,
    data_root: str | None = None,
    cache_dir: str | None = None,
    log: Callable[[str], None] = print,
    full_test: bool = False,
) -> Splits:
    """Load a dataset and reduce it to balanced train / validation / test subsets.

    Args:
        name: registered dataset name.
        train_size, val_size, test_size: subset sizes, multiples of the class count
            (``val_size`` may be 0). Validation images come from the training set.
        seed: seeds the subset choice (and the images of ``synthetic``).
        data_root: read-only directory holding the raw files (else env ``NAS_DATA_ROOT``).
        cache_dir: writable cache (see :func:`cache_root`).
        log: where a line about a re-staged (broken) raw file goes.
        full_test: the test split is the whole test set (a 1,000-image split has a standard
            error of about a point of accuracy); the ``test_size`` subset is still drawn, as
            :attr:`Splits.protocol`, so it is the same images as without ``full_test``.
    """
    info, loader = DATASETS.get(name)
    k = info.num_classes
    n_tr, n_te = _per_class(train_size, k, "train size"), _per_class(test_size, k, "test size")
    n_va = 0 if val_size == 0 else _per_class(val_size, k, "val size")
    root = data_root or os.environ.get("NAS_DATA_ROOT")
    x_tr, y_tr, x_te, y_te = loader(
        cache=cache_root(cache_dir), data_root=root, sizes=(n_tr + n_va, n_te), seed=seed, log=log
    )
    g = torch.Generator().manual_seed(seed)
    i_tr, i_va = balanced_indices(y_tr, [n_tr, n_va], k, g)
    (i_te,) = balanced_indices(y_te, [n_te], k, g)
    if full_test:
        return Splits(info, x_tr[i_tr], y_tr[i_tr], x_tr[i_va], y_tr[i_va], x_te, y_te,
                      protocol=i_te)
    return Splits(info, x_tr[i_tr], y_tr[i_tr], x_tr[i_va], y_tr[i_va], x_te[i_te], y_te[i_te])


# --------------------------------------------------------------------------- torchvision sets


def _known_md5(cls: type) -> dict[str, str]:
    """``{file name: md5}`` torchvision knows for a dataset class's raw files."""
    if hasattr(cls, "resources"):
        return {os.path.basename(url): md5 for url, md5 in cls.resources}
    if hasattr(cls, "tgz_md5"):
        return {cls.filename: cls.tgz_md5}
    return {}


_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) checked by this process


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - torchvision's published checksums are md5
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_problem(path: Path, md5: str | None, source: Path | None) -> str | None:
    """Why a staged raw file is broken (a phrase), or ``None``: empty, a size other than the
    source's, or an md5 other than torchvision's (checked once per process and file state)."""
    st = path.stat()
    if (str(path), st.st_size, st.st_mtime_ns) in _VERIFIED:
        return None
    if st.st_size == 0:
        return "is empty"
    if source is not None and source.exists() and source.stat().st_size != st.st_size:
        return f"has {st.st_size} bytes, the data root's copy {source.stat().st_size}"
    if md5 and _md5(path) != md5:
        return "fails torchvision's md5 check"
    _VERIFIED.add((str(path), st.st_size, st.st_mtime_ns))
    return None


def _clear_extracted(raw: Path, files: list[str]) -> bool:
    """Delete what torchvision extracted next to the raw ``files`` (cache only); any removed?"""
    removed = False
    for entry in raw.iterdir() if raw.is_dir() else ():
        if entry.name in files or entry.name.startswith("."):
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        removed = True
    return removed


def _copy_verified(src: Path, dst: Path, md5: str | None) -> None:
    """Copy ``src`` to ``dst`` atomically (temporary file, fsync, rename) after checking the copy
    has the source's size and torchvision's md5; a bad source is one :class:`UserError`."""
    size = src.stat().st_size

    def write(fh) -> None:
        h = hashlib.md5()  # noqa: S324 - torchvision's published checksums are md5
        with open(src, "rb") as inp:
            for chunk in iter(lambda: inp.read(1 << 20), b""):
                fh.write(chunk)
                h.update(chunk)
        if fh.tell() != size:
            raise UserError(f"copying {src} gave {fh.tell()} of {size} bytes")
        if md5 and h.hexdigest() != md5:
            raise UserError(f"{src} fails torchvision's md5 check (a damaged copy of the dataset?)")

    write_atomically(dst, write, kill_name="stage")


def _stage_raw(cache: Path, data_root: str | None, folder: str, files: list[str],
               md5s: dict[str, str], log: Callable[[str], None]) -> None:
    """Make ``<cache>/data/<folder>/raw`` hold intact ``files``, copied from ``data_root``
    (``<root>/<folder>/raw``, ``<root>/<folder>`` or ``<root>``, read-only) where missing.

    A staged file that is empty, of another size than the root's copy or fails torchvision's
    md5 is logged in one line and staged again (with what torchvision had extracted from it).
    """
    target = cache / "data" / folder / "raw"
    source = None
    if data_root:
        for base in (Path(data_root) / folder / "raw", Path(data_root) / folder, Path(data_root)):
            if all((base / f).is_file() for f in files):
                source = base
                break
    for f in files:
        dst = target / f
        if dst.exists():
            problem = _file_problem(dst, md5s.get(f), source / f if source else None)
            if problem is None:
                continue
            log(f"staged file {dst} {problem}; "
                f"{'staging it again' if source else 'removing it'}")
            dst.unlink()
            _clear_extracted(target, files)
        if source is not None:
            _copy_verified(source / f, dst, md5s.get(f))
            _clear_extracted(target, files)  # extracted from an older copy


def _torchvision(name: str, cls_name: str, folder: str, files: list[str], cache: Path,
                 data_root: str | None,
                 log: Callable[[str], None] = print) -> tuple[torch.Tensor, ...]:
    """Load train + test of a torchvision dataset with the staging rules of the module doc."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    _stage_raw(cache, data_root, folder, files, _known_md5(cls), log)
    raw = cache / "data" / folder / "raw"
    root = cache / "data" if cls_name != "CIFAR10" else raw
    have = all((raw / f).exists() for f in files)
    offline = os.environ.get("NAS_OFFLINE", "") not in ("", "0")
    for attempt in (0, 1):
        try:
            if not have and offline:
                raise OSError("offline")
            sets = [cls(str(root), train=t, download=True) for t in (True, False)]
            break
        except Exception as exc:  # noqa: BLE001 - any failure becomes one user-facing line
            if attempt == 0 and have and _clear_extracted(raw, files):
                log(f"extracted files of {name} in {raw} are unreadable ({first_line(exc)}); "
                    "extracting them again")
                continue
            raise UserError(
                f"dataset {name!r} not found offline: looked for {', '.join(files)} in "
                f"{data_root or '(no --data-root)'}/{folder}/raw and {raw}; "
                f"pass --data-root DIR (or set NAS_DATA_ROOT) to a directory holding them"
            ) from None
    out: list[torch.Tensor] = []
    for ds in sets:
        data = torch.as_tensor(ds.data)
        x = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # (N, C, H, W)
        out += [x.contiguous().to(torch.uint8), torch.as_tensor(ds.targets, dtype=torch.long)]
    return tuple(out)


_MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@register_dataset(DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,)))
def _mnist(*, cache: Path, data_root: str | None, sizes: tuple[int, int], seed: int, log=print):
    return _torchvision("mnist", "MNIST", "MNIST", _MNIST_FILES, cache, data_root, log)


@register_dataset(DatasetInfo("fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,)))
def _fashion(*, cache: Path, data_root: str | None, sizes: tuple[int, int], seed: int, log=print):
    return _torchvision("fashion-mnist", "FashionMNIST", "FashionMNIST", _MNIST_FILES, cache,
                        data_root, log)


def as_3x32(x: torch.Tensor) -> torch.Tensor:
    """Grey 28 x 28 images as CIFAR-shaped 3 x 32 x 32: zero-padded by 2 pixels on every side
    (the digit or garment stays unscaled, as LeNet-5 padded MNIST) and the channel repeated.
    uint8 (N, 1, 28, 28) -> uint8 (N, 3, 32, 32)."""
    return torch.nn.functional.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


# Fashion-MNIST's mean and std over the padded 32 x 32 frame (the 28 x 28 statistics with 240
# black pixels added per image).
@register_dataset(DatasetInfo("fashion-mnist-3x32", 10, (3, 32, 32), (0.2190,) * 3,
                              (0.3318,) * 3))
def _fashion_3x32(*, cache: Path, data_root: str | None, sizes: tuple[int, int], seed: int,
                  log=print):
    """Fashion-MNIST in CIFAR-10's shape, for GPU measurements where CIFAR-10 cannot be had."""
    x_tr, y_tr, x_te, y_te = _fashion(cache=cache, data_root=data_root, sizes=sizes, seed=seed,
                                      log=log)
    return as_3x32(x_tr), y_tr, as_3x32(x_te), y_te


_KMNIST_FILES = _MNIST_FILES


@register_dataset(DatasetInfo("kmnist", 10, (1, 28, 28), (0.1918,), (0.3483,)))
def _kmnist(*, cache: Path, data_root: str | None, sizes: tuple[int, int], seed: int, log=print):
    return _torchvision("kmnist", "KMNIST", "KMNIST", _KMNIST_FILES, cache, data_root, log)


@register_dataset(DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465),
                              (0.2470, 0.2435, 0.2616)))
def _cifar10(*, cache: Path, data_root: str | None, sizes: tuple[int, int], seed: int, log=print):
    return _torchvision("cifar10", "CIFAR10", "CIFAR10", ["cifar-10-python.tar.gz"], cache,
                        data_root, log)


# --------------------------------------------------------------------------- synthetic


def synthetic_images(
    n_per_class: int, num_classes: int, shape: tuple[int, int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable procedural images: class ``c`` = stripes at angle ``pi*c/K`` plus a blob.

    Each image is ``0.5 + 0.35*sin(2*pi*f*(u cos t + v sin t) + phase)`` with a random phase,
    a Gaussian blob at a class-dependent position, per-channel gain and pixel noise, so the
    class is recoverable (orientation + blob position) but not from any single pixel.
    Returns uint8 ``(n_per_class*K, C, H, W)`` and labels ``(n_per_class*K,)``.
    """
    c, h, w = shape
    n = n_per_class * num_classes
    y = torch.arange(num_classes).repeat_interleave(n_per_class)  # (N,)
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    theta = (math.pi * y / num_classes).view(n, 1, 1)
    phase = torch.rand(n, 1, 1, generator=generator) * 2 * math.pi
    stripes = torch.sin(2 * math.pi * 2.5 * (u * theta.cos() + v * theta.sin()) + phase)
    ang = (2 * math.pi * y / num_classes).view(n, 1, 1)
    blob = torch.exp(-((u - 0.5 * ang.cos()) ** 2 + (v - 0.5 * ang.sin()) ** 2) / 0.08)
    img = 0.5 + 0.3 * stripes + 0.4 * blob - 0.2  # (N, H, W)
    gain = 0.8 + 0.4 * torch.rand(n, c, 1, 1, generator=generator)
    img = img.unsqueeze(1) * gain + 0.08 * torch.randn(n, c, h, w, generator=generator)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), y


def _synthetic_loader(shape: tuple[int, int, int]) -> Loader:
    def load(*, cache: Path, data_root: str | None, sizes: tuple[int, int], seed: int, log=print):
        g = torch.Generator().manual_seed(10_007 + seed)
        x_tr, y_tr = synthetic_images(sizes[0], 10, shape, g)
        x_te, y_te = synthetic_images(sizes[1], 10, shape, g)
        return x_tr, y_tr, x_te, y_te

    return load


register_dataset(DatasetInfo("synthetic", 10, (1, 28, 28), (0.5,), (0.25,)))(
    _synthetic_loader((1, 28, 28))
)
register_dataset(DatasetInfo("synthetic-rgb", 10, (3, 32, 32), (0.5, 0.5, 0.5),
                             (0.25, 0.25, 0.25)))(_synthetic_loader((3, 32, 32)))


# The file datasets (``folder:DIR``, ``npz:FILE``) register their resolvers on import; they
# import this module's registry, so they come last.
from nas.evaluation import filedata as _filedata  # noqa: E402, F401 - registers the resolvers
