"""The training recipe: optimizer, learning-rate schedule, label smoothing, augmentation, EMA.

One frozen :class:`Recipe` is used by the one training loop (:func:`nas.evaluation.training.train`)
for references, children, refinement and baselines. Two are registered (:data:`RECIPES`):

- ``paper``: the paper's Adam with PyTorch defaults (lr 1e-3), constant rate, no label
  smoothing, no augmentation, no weight averaging (gm-neuroevolution §4). With it the loop is
  bit-for-bit a plain Adam loop (tested), so the paper preset trains what the paper describes.
- ``cpu``: chosen by measurement for CPU-scale runs (docs/fitness.md, "How the cpu recipe
  was chosen"): AdamW, one-cycle learning rate (linear warm-up, cosine annealing), label
  smoothing, 2-pixel random shifts.

Augmentation and the GM defense: the cached reference input gradients are gradients of the
*un-augmented* training images, so the loop shifts inputs only when nothing the defense uses
is looked up by image index (:func:`nas.evaluation.training.train`): with cached reference gradients
(the search, ``nas.train``) GM trains on un-shifted images; with live reference gradients
(:class:`nas.evaluation.training.LiveReferenceGrad`) the images are shifted and the reference
gradient is taken of the shifted images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nas.errors import UserError


@dataclass(frozen=True)
class Recipe:
    """How the loop optimises (everything but epochs, batch size and the objective).

    Attributes:
        name: label recorded in configs and cache keys.
        optimizer: ``adam`` (L2 penalty coupled, PyTorch's Adam) or ``adamw`` (decoupled).
        lr: peak learning rate.
        weight_decay: weight decay of the optimizer (0 = none).
        schedule: ``constant`` or ``onecycle`` (linear warm-up from ``lr / 25`` over
            ``warmup`` of the steps, then cosine annealing to ``lr / 1e4``).
        warmup: fraction of the steps spent warming up (``onecycle`` only).
        label_smoothing: label smoothing of the CE training term (0 = none).
        shift: random translation in pixels (zero padding), 0 = no augmentation.
        ema: decay of an exponential moving average of the weights (0 = off); the averaged
            weights are the trained model.
    """

    name: str = "paper"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.0
    label_smoothing: float = 0.0
    shift: int = 0
    ema: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("constant", "onecycle"):
            raise ValueError(f"schedule must be 'constant' or 'onecycle', got {self.schedule!r}")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and 0 <= self.label_smoothing < 1
                and self.shift >= 0 and 0 <= self.ema < 1 and self.weight_decay >= 0):
            raise ValueError(f"recipe {self.name!r} has an out-of-range value: {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_lr(self, lr: float | None) -> Recipe:
        """This recipe with another peak learning rate (``None`` keeps it)."""
        return self if lr is None or lr == self.lr else Recipe(**{**asdict(self), "lr": lr})

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of ``lr`` at optimisation ``step`` (0-based) of ``total`` steps."""
        if self.schedule == "constant":
            return 1.0
        start, end = 1 / 25, 1e-4
        warm = max(1, round(self.warmup * total))
        if step < warm:
            return start + (1 - start) * step / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))

    def optimizer_for(self, params: Any) -> torch.optim.Optimizer:
        """The optimizer of this recipe over ``params`` (PyTorch defaults otherwise)."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def scheduler_for(self, optimizer: torch.optim.Optimizer,
                      total: int) -> torch.optim.lr_scheduler.LRScheduler | None:
        """A per-step scheduler, or ``None`` for a constant rate (no call touches the rate)."""
        if self.schedule == "constant":
            return None
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self.lr_factor(s, total))


PAPER_RECIPE = Recipe()
CPU_RECIPE = Recipe(name="cpu", optimizer="adamw", lr=3e-3, weight_decay=5e-2,
                    schedule="onecycle", warmup=0.2, label_smoothing=0.1, shift=2)
RECIPES: dict[str, Recipe] = {"paper": PAPER_RECIPE, "cpu": CPU_RECIPE}


def get_recipe(name: str) -> Recipe:
    """The registered recipe ``name``; unknown names raise with the sorted valid names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"unknown recipe {name!r}; valid: {', '.join(sorted(RECIPES))}") from None


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate every image by its own offset in ``[-pixels, pixels]`` (both axes), zero fill.

    Args:
        x: (N, C, H, W) float batch.
        pixels: largest shift.
        generator: CPU generator drawing the offsets (2N integers).
    Returns:
        (N, C, H, W) shifted batch (same layout as ``x``).
    """
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator).to(x.device)
    padded = nn.functional.pad(x, (pixels,) * 4)  # (N, C, H + 2p, W + 2p)
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]  # (N, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)  # (N, C, H, W), channels-last in memory


class WeightAverage:
    """Exponential moving average of a model's parameters and buffers (``decay`` per step)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].lerp_(v, 1 - self.decay)
            else:
                self.state[k].copy_(v)

    def averaged(self) -> dict[str, torch.Tensor]:
        return self.state
