"""``none``: plain cross-entropy training (the paper's "Ref. Net." baseline objective)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import register_defense


@register_defense("none")
class PlainCE(Defense):
    """L = CE(f(x), y), mean over the batch (label-smoothed by ``ctx.label_smoothing``)."""

    def __init__(self) -> None:
        pass

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        logits = model(batch.x)  # (N, K)
        ce = F.cross_entropy(logits, batch.y, label_smoothing=ctx.label_smoothing)
        return DefenseOutput(loss=ce, logits=logits, logs={"ce": float(ce.detach())})
