"""``ncen``: Negative Correlation Ensemble (NCEn paper,
``ncen-negative-correlation-ensemble.txt`` §III).

``k`` members of the child architecture are trained jointly. Besides the mean member
cross-entropy (eq. 5), two regularisers make the members' input gradients negatively
correlated, so that a perturbation along one member's gradient does not raise the loss of
the others (§III-A, §III-B). With ``g_i = grad_x CE(f_i(x), y)`` per sample:

* eq. (3): ``g_ens = (1/k) sum_i g_i``
* eq. (2): ``Loss_cos_i = CS(g_i, g_ens) * sum_{j != i} CS(g_j, g_ens)``
* eq. (7): ``g = (1/k) sum_i ||g_i||_2``
* eq. (6): ``Loss_norm_i = (1/g^2) (||g_i|| - g) * sum_{j != i} (||g_j|| - g)``
* eq. (10): ``NCE = (1/k) sum_i (lam_norm * Loss_norm_i + lam_cos * Loss_cos_i)``
* eq. (9): ``Loss = CE + NCE``

Both regularisers are scale-invariant in the gradients, so whether the CE is summed or
averaged over the batch does not change them. The regularisers are computed per sample and
averaged over the batch (the paper leaves this open; the authors' code does the same).
The evaluated model is the ensemble (mean of member softmax).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.ensemble import Ensemble, build_members, combine_logits, input_gradients
from defenses.registry import register_defense

_EPS = 1e-12


def loss_cos(grads: torch.Tensor) -> torch.Tensor:
    """Per-member, per-sample direction term of eq. (2).

    Args:
        grads: (k, N, D) input gradients of the ``k`` members.

    Returns:
        (k, N): ``CS(g_i, g_ens) * sum_{j != i} CS(g_j, g_ens)`` with ``g_ens`` of eq. (3).
    """
    g_ens = grads.mean(dim=0, keepdim=True)  # (1, N, D)
    cs = F.cosine_similarity(grads, g_ens.expand_as(grads), dim=2, eps=1e-8)  # (k, N)
    others = cs.sum(dim=0, keepdim=True) - cs  # (k, N): sum over j != i
    return cs * others


def loss_norm(grads: torch.Tensor) -> torch.Tensor:
    """Per-member, per-sample magnitude term of eq. (6) with ``g`` of eq. (7).

    Args:
        grads: (k, N, D) input gradients of the ``k`` members.

    Returns:
        (k, N): ``(||g_i|| - g) * sum_{j != i} (||g_j|| - g) / g^2``. Because the deviations
        from the mean sum to zero this equals ``-((||g_i|| - g) / g)^2`` (always <= 0, as the
        paper notes below eq. 7).
    """
    norms = grads.norm(dim=2)  # (k, N)
    g = norms.mean(dim=0, keepdim=True)  # (1, N)
    dev = (norms - g) / (g + _EPS)  # (k, N)
    others = dev.sum(dim=0, keepdim=True) - dev
    return dev * others


@register_defense("ncen")
class NCEn(Defense):
    """Negative Correlation Ensemble, eq. (9)-(10) of the NCEn paper.

    Args:
        k: number of members. Default 3: the smallest ensemble of the paper's Table II
            (k = 3, 4, 5 are evaluated).
        lam_cos: weight of Loss_cos. Default 0.02: the paper's Fashion-MNIST setting (§IV-A;
            CIFAR-10 uses 0.06).
        lam_norm: weight of Loss_norm. Default 0.02: Fashion-MNIST setting (§IV-A; CIFAR-10
            uses 0.04).
    """

    needs = frozenset()

    def __init__(self, *, k: int = 3, lam_cos: float = 0.02, lam_norm: float = 0.02) -> None:
        self.k = int(k)
        self.lam_cos = float(lam_cos)
        self.lam_norm = float(lam_norm)
        if self.k < 2:
            raise ValueError(f"k must be >= 2 ensemble members, got {k}")

    def wrap(
        self,
        factory: Callable[[], nn.Module],
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
    ) -> nn.Module:
        """An :class:`Ensemble` of ``k`` members of the child architecture."""
        return Ensemble(build_members(factory, self.k), num_classes=num_classes)

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        """CE + NCE (eq. 9) on one batch; logits are the ensemble's."""
        if not isinstance(model, Ensemble):
            raise TypeError("ncen trains an Ensemble: build the model with NCEn.wrap(...)")
        x = batch.x.detach().clone().requires_grad_(True)  # (N, C, H, W)
        logits = model.member_logits(x)  # k x (N, K)
        ce_sums = [F.cross_entropy(z, batch.y, reduction="sum") for z in logits]
        grads = input_gradients(ce_sums, x)  # (k, N, D)
        ce = torch.stack(ce_sums).mean() / x.shape[0]  # eq. (5)
        l_cos = loss_cos(grads).mean(dim=1)  # (k,) batch mean
        l_norm = loss_norm(grads).mean(dim=1)  # (k,)
        nce = (self.lam_norm * l_norm + self.lam_cos * l_cos).mean()  # eq. (10)
        loss = ce + nce  # eq. (9)
        logs = {
            "ce": float(ce.detach()),
            "loss_cos": float(l_cos.mean().detach()),
            "loss_norm": float(l_norm.mean().detach()),
            "nce": float(nce.detach()),
        }
        return DefenseOutput(loss=loss, logits=combine_logits(logits).detach(), logs=logs)
