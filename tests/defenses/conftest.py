"""Shared fixtures of the defense tests: a tiny CNN following the model contract, a small
learnable synthetic problem, a fixed reference network and a few-step PGD adversary."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Adversary, TrainContext
from nasbase.files import write_atomically

NUM_CLASSES = 3
INPUT_SHAPE = (1, 12, 12)


class TinyNet(nn.Module):
    """Conv-BN-ReLU x2 with a pool, GAP + Linear head; follows docs/architecture.md."""

    tap_names = ("block1", "block2")

    def __init__(self, in_ch: int = 1, num_classes: int = NUM_CLASSES, width: int = 8) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), nn.BatchNorm2d(width),
                                    nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1),
                                    nn.BatchNorm2d(2 * width), nn.ReLU())
        self.fc = nn.Linear(2 * width, num_classes)
        self.num_classes = num_classes
        self.num_features = 2 * width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.pool(self.block1(x)))  # (N, 2w, H/2, W/2)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean(dim=(2, 3)))  # (N, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def synthetic(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 1, 12, 12) images whose class is the bright quadrant (0, 1 or 2) + noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    x = 0.25 * torch.rand(n, *INPUT_SHAPE, generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, :, r * 6 : r * 6 + 6, col * 6 : col * 6 + 6] += 0.7
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), y


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.1,
        step: float = 0.05, steps: int = 3,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD with random start on ``model`` (pixel space, [0, 1])."""
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()



@pytest.fixture
def factory() -> Callable[[], nn.Module]:
    return TinyNet


@pytest.fixture
def spec() -> dict:
    """Shape of the synthetic problem: ``num_classes`` and ``input_shape``."""
    return {"num_classes": NUM_CLASSES, "input_shape": INPUT_SHAPE}


@pytest.fixture
def pgd_attack() -> Callable[..., torch.Tensor]:
    return pgd


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic()


@pytest.fixture
def make_ctx(tmp_path) -> Callable[..., TrainContext]:
    """Build a TrainContext with a fixed reference's gradients and a PGD adversary."""

    def build(seed: int = 0, **overrides) -> TrainContext:
        torch.manual_seed(123)
        reference = TinyNet().eval()
        gen = torch.Generator().manual_seed(seed)

        def reference_grad(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            x = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(reference(x), y, reduction="sum")
            return torch.autograd.grad(loss, x)[0].detach()

        def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return pgd(model, x, y, generator=gen)

        adversary = Adversary(attack, eps=0.1)  # the radius pgd above uses

        messages: list[str] = []
        fields = dict(generator=gen, reference_grad=reference_grad, adversary=adversary,
                      cache_dir=str(tmp_path / "cache"), write_file=write_atomically,
                      log=messages.append)
        fields.update(overrides)
        ctx = TrainContext(**fields)
        ctx.messages = messages  # type: ignore[attr-defined]
        return ctx

    return build
