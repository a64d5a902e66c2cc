"""The PyTorch modules one genome node compiles to.

This module imports torch only: :mod:`genome.export` copies these class definitions verbatim
into the standalone source it writes, so the exported network computes exactly what the
compiled one does and has the same ``state_dict`` keys.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: the first layer, so the model takes pixels in [0, 1]."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (N, C, H, W)


class ConvBNReLU(nn.Module):
    """Conv(k, stride, padding k // 2, no bias) - BatchNorm - ReLU (``conv``: stride 1,
    ``sconv``: stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))  # (N, out_channels, H / stride, W / stride)


class Pool(nn.Module):
    """2x2 max or average pooling, stride 2 (floor): (N, C, H, W) -> (N, C, H // 2, W // 2)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, 2, 2)
        return F.avg_pool2d(x, 2, 2)


def match_spatial(a: torch.Tensor, b: torch.Tensor,
                  pool=F.adaptive_max_pool2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptively max-pool (``pool``) the larger of two maps to the smaller spatial size
    (per axis)."""
    h, w = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
    if tuple(a.shape[2:]) != (h, w):
        a = pool(a, (h, w))
    if tuple(b.shape[2:]) != (h, w):
        b = pool(b, (h, w))
    return a, b  # both (N, *, h, w)


class Sum(nn.Module):
    """Skip block adding two maps; the one with fewer channels is zero-padded (paper 3.2)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = match_spatial(a, b)  # (N, Ca, h, w), (N, Cb, h, w)
        c = max(a.shape[1], b.shape[1])
        a = F.pad(a, (0, 0, 0, 0, 0, c - a.shape[1]))  # zero channels appended: (N, c, h, w)
        b = F.pad(b, (0, 0, 0, 0, 0, c - b.shape[1]))
        return a + b


class Concat(nn.Module):
    """Skip block stacking the channels of two maps: (N, Ca + Cb, h, w)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = match_spatial(a, b)
        return torch.cat([a, b], dim=1)


class Head(nn.Module):
    """Global average pool -> [Linear(hidden) - ReLU] -> Linear(num_classes); logits, no softmax."""

    def __init__(self, in_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden) if hidden else None
        self.fc = nn.Linear(hidden or in_features, num_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = self.global_pool(f)  # (N, C)
        if self.hidden is not None:
            z = F.relu(self.hidden(z))  # (N, hidden)
        return self.fc(z)  # (N, num_classes)

    @staticmethod
    def global_pool(f: torch.Tensor) -> torch.Tensor:
        return f.mean(dim=(2, 3))  # (N, C, H, W) -> (N, C)
