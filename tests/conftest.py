"""Project-wide test fixtures: an isolated cache directory and a small synthetic problem.

The cache directory is created once per session and exported as ``NAS_CACHE_DIR`` so every
command and library call under test writes there, never into the user's cache. ``NAS_OFFLINE``
is set so no test ever tries to download a dataset. Every test runs on one torch thread.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

# Shared test helpers (the toy search, the run-folder helpers, the Chromium driver) are plain
# modules in tests/helpers; every test imports them by name.
sys.path.insert(0, str(Path(__file__).with_name("helpers")))


@pytest.fixture(scope="session", autouse=True)
def nas_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide cache directory exported as ``NAS_CACHE_DIR`` (and offline mode)."""
    path = tmp_path_factory.mktemp("nas-cache")
    old = {k: os.environ.get(k) for k in ("NAS_CACHE_DIR", "NAS_OFFLINE")}
    os.environ["NAS_CACHE_DIR"] = str(path)
    os.environ["NAS_OFFLINE"] = "1"
    yield path
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run tiny networks: one intra-op thread is faster and immune to oversubscribed cores
    (worker processes of the parallel tests set their own thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_splits():
    """The ``synthetic`` dataset reduced to 200 / 50 / 50 images (uint8, 1x28x28, 10 classes)."""
    from nas.evaluation.data import load_splits

    return load_splits("synthetic", train_size=200, val_size=50, test_size=50, seed=0)


@pytest.fixture(scope="session")
def small_settings(nas_cache_dir: Path):
    """FitnessSettings of a seconds-long problem: synthetic data, he-ref reference, 2-step PGD."""
    from nas.evaluation.fitness import FitnessSettings

    return FitnessSettings(dataset="synthetic", train_size=200, val_size=50, test_size=50,
                           reference="he-ref", reference_epochs=2, steps=2, batch_size=50,
                           device="cpu", cache_dir=str(nas_cache_dir))


@pytest.fixture(scope="session")
def workspace(small_settings):
    """The prepared workspace of :func:`small_settings` (reference trained once per session)."""
    from nas.evaluation.fitness import prepare

    return prepare(small_settings, progress=False, log=lambda _m: None)


class SmallNet(nn.Module):
    """Conv-BN-ReLU, pool, Conv-BN-ReLU, GAP + Linear on 1x28x28; follows the model contract."""

    tap_names = ("block1", "block2")

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width),
                                    nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1),
                                    nn.BatchNorm2d(2 * width), nn.ReLU())
        self.fc = nn.Linear(2 * width, num_classes)
        self.num_classes, self.num_features = num_classes, 2 * width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1((x - 0.5) / 0.25))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def small_net_factory():
    """A factory of fresh :class:`SmallNet` modules."""
    return SmallNet
