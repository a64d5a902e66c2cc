"""Shared building blocks of the ensemble defenses (``ncen``, ``cldl``).

An :class:`Ensemble` holds ``k`` members built from the same factory (same architecture,
independent initialisation) plus an optional auxiliary trainable module (CLDL's label
confusion model), all inside one ``nn.Module`` so that one optimizer sees every parameter.
Its ``forward`` is what gets evaluated: the log of the mean member softmax,

    log p_ens(x) = log (1/k) sum_i softmax(f_i(x)),

computed stably as ``logsumexp_i log_softmax(f_i(x)) - log k``. Taking ``argmax`` of these
logits is the ensemble's prediction; ``cross_entropy`` on them is the ensemble's NLL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Ensemble(nn.Module):
    """``k`` members + optional auxiliary module; forward = log mean member softmax.

    Attributes:
        members: the member networks (each follows the model contract, outputs logits).
        aux: an extra trainable module (or ``None``); trained by the defense's loss only.
        num_classes: number of classes (from the first member when it declares it).
        num_features: feature width of a member (from the first member when declared).
        tap_names: empty: an ensemble has no single intermediate feature map.
    """

    tap_names: tuple[str, ...] = ()

    def __init__(
        self, members: Sequence[nn.Module], *, num_classes: int, aux: nn.Module | None = None
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.aux = aux
        self.num_classes = int(getattr(members[0], "num_classes", num_classes))
        self.num_features = int(getattr(members[0], "num_features", 0))

    @property
    def k(self) -> int:
        """Number of members."""
        return len(self.members)

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every member, each (N, K)."""
        return [m(x) for m in self.members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble logits (N, K) = log of the mean member softmax."""
        return combine_logits(self.member_logits(x))


def combine_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Log of the mean softmax of a list of (N, K) logits -> (N, K)."""
    stacked = torch.stack([F.log_softmax(z, dim=1) for z in logits])  # (k, N, K)
    return torch.logsumexp(stacked, dim=0) - math.log(len(logits))


def build_members(factory: Callable[[], nn.Module], k: int) -> list[nn.Module]:
    """``k`` fresh networks from ``factory`` (independent initialisations)."""
    if int(k) < 2:
        raise ValueError(f"k must be >= 2 ensemble members, got {k}")
    return [factory() for _ in range(int(k))]


def input_gradients(
    losses: Sequence[torch.Tensor], x: torch.Tensor, *, create_graph: bool = True
) -> torch.Tensor:
    """Input gradients of several scalar losses w.r.t. ``x``, flattened per sample.

    Args:
        losses: ``k`` scalar losses (sums over the batch, so each sample's gradient is not
            scaled by 1/N).
        x: the input (N, C, H, W) with ``requires_grad``.
        create_graph: keep the graph for double backpropagation (needed when the gradients
            enter the training loss).

    Returns:
        (k, N, C*H*W) gradients.
    """
    grads = [
        torch.autograd.grad(loss, x, create_graph=create_graph)[0].flatten(1) for loss in losses
    ]  # k x (N, D)
    return torch.stack(grads)
