"""``cldl``: Conditional Label Dependency Learning ensemble
(``cldl-label-dependency-ensemble.txt`` §III).

``N`` members plus a label confusion model (LCM) that turns each member's image
representation into an instance-dependent soft label:

* eq. (5): ``v_i = encoder_i(x)`` (here: global average pool of ``forward_features``),
  ``p_i = softmax(f_i(x))``
* eq. (6): ``Vec = f^L(labels)`` (embedding + dense + tanh, one row per class),
  ``c_i = softmax(W (Vec v_i) + b)`` (label confusion vector),
  ``s_i = softmax(gamma * y + c_i)`` (simulated label distribution = soft label)
* eq. (7): ``l_i = KL(s_i || p_i)``
* eq. (8): ``JSD(a || b) = KL(a || m)/2 + KL(b || m)/2``, ``m = (a + b)/2``, on the soft
  labels without their maximal entry (renormalised, see below)
* eq. (9): ``l_ld = log( 2/(N(N-1)) sum_{i<j} exp JSD(s_i^y || s_j^y) )``
* eq. (10): ``l_gd = 2/(N(N-1)) sum_{i<j} |CS(grad_x l_i, grad_x l_j)|``
* eq. (12): ``Loss = (1/N) sum_i l_i - alpha * l_ld + beta * l_gd``

Every term is per sample and averaged over the batch (Algorithm 1, line 16). The LCM is
trained by the same loss (Algorithm 1, line 20): it lives inside the wrapped module.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.ensemble import Ensemble, build_members, combine_logits, input_gradients
from defenses.registry import register_defense

_TINY = 1e-12


class LabelConfusionModel(nn.Module):
    """The LCM of eq. (6): label encoder ``f^L`` + similarity layer + SLD layer.

    Args:
        num_classes: C.
        feature_dim: d, the width of the members' representation ``v_i``.
        hidden: width of the label embedding (64 in the authors' code, ``models/lcm.py``).
    """

    def __init__(self, num_classes: int, feature_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, hidden)
        self.dense = nn.Linear(hidden, feature_dim)
        self.sld = nn.Linear(num_classes, num_classes)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Label confusion vector ``c`` (N, C) for representations ``v`` (N, d)."""
        labels = torch.arange(self.embedding.num_embeddings, device=v.device)  # (C,)
        vec = torch.tanh(self.dense(self.embedding(labels)))  # (C, d): label representations
        similarity = v @ vec.T  # (N, C): dot products
        return F.softmax(self.sld(similarity), dim=1)  # (N, C)


def soft_labels(c: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Simulated label distribution of eq. (6): ``softmax(gamma * onehot(y) + c)`` -> (N, C)."""
    onehot = F.one_hot(y, c.shape[1]).to(c.dtype)  # (N, C)
    return F.softmax(gamma * onehot + c, dim=1)


def kl_div(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_c p log(p / q)`` over the last dim -> (...,)."""
    return (p * (torch.log(p + _TINY) - torch.log(q + _TINY))).sum(dim=-1)


def jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of eq. (8) (natural log) over the last dim -> (...,)."""
    m = (p + q) / 2
    return kl_div(p, m) / 2 + kl_div(q, m) / 2


def drop_max(s: torch.Tensor) -> torch.Tensor:
    """``s^y``: the (N, C-1) distribution of the non-maximal entries of ``s``, renormalised."""
    keep = torch.ones_like(s, dtype=torch.bool).scatter_(1, s.argmax(dim=1, keepdim=True), False)
    rest = s[keep].view(s.shape[0], s.shape[1] - 1)  # (N, C-1)
    return rest / rest.sum(dim=1, keepdim=True)


def label_diversity(soft: list[torch.Tensor]) -> torch.Tensor:
    """Soft-label diversity of eq. (9) per sample: (N,) from N-member list of (N, C) SLDs."""
    rest = [drop_max(s) for s in soft]
    pairs = [jsd(rest[i], rest[j]) for i in range(len(rest)) for j in range(i + 1, len(rest))]
    stacked = torch.stack(pairs)  # (P, N)
    return torch.logsumexp(stacked, dim=0) - math.log(len(pairs))


def gradient_diversity(grads: torch.Tensor) -> torch.Tensor:
    """Gradient diversity of eq. (10) per sample: mean over pairs of ``|cos|`` -> (N,).

    Args:
        grads: (k, N, D) input gradients of the members' losses.
    """
    k = grads.shape[0]
    pairs = [
        F.cosine_similarity(grads[i], grads[j], dim=1, eps=1e-8).abs()
        for i in range(k)
        for j in range(i + 1, k)
    ]
    return torch.stack(pairs).mean(dim=0)


def _representation(member: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, K), v (N, d)) of one member from a single feature pass."""
    feats = member.forward_features(x)  # (N, d, h, w)
    return member.forward_head(feats), feats.mean(dim=(2, 3))


@register_defense("cldl")
class CLDL(Defense):
    """CLDL-assisted ensemble training, eq. (12) of the CLDL paper.

    Args:
        k: number of members. Default 3 (the paper's 3-member Fashion-MNIST tables VIII, X).
        gamma: weight of the one-hot label in the soft label, eq. (6). Default 3.
        alpha: weight of the soft-label diversity, eq. (12). Default 2.
        beta: weight of the gradient diversity, eq. (12). Default 4. ``gamma, alpha, beta =
            3, 2, 4`` is the paper's Fashion-MNIST setting CLDL_{3,2,4} (Tables VIII-IX).
        lcm_hidden: label-embedding width; 64 as in the authors' ``models/lcm.py``.
    """

    needs = frozenset()

    def __init__(
        self,
        *,
        k: int = 3,
        gamma: float = 3.0,
        alpha: float = 2.0,
        beta: float = 4.0,
        lcm_hidden: int = 64,
    ) -> None:
        self.k = int(k)
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.lcm_hidden = int(lcm_hidden)
        if self.k < 2 or self.lcm_hidden < 1:
            raise ValueError(f"need k >= 2 and lcm_hidden >= 1, got k={k}, lcm_hidden={lcm_hidden}")

    def wrap(
        self,
        factory: Callable[[], nn.Module],
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
    ) -> nn.Module:
        """An :class:`Ensemble` of ``k`` members whose ``aux`` is the label confusion model."""
        members = build_members(factory, self.k)
        for m in members:
            if not all(hasattr(m, a) for a in ("forward_features", "forward_head")):
                raise TypeError("cldl needs members with forward_features/forward_head")
        d = int(getattr(members[0], "num_features", 0)) or _probe_width(members[0], input_shape)
        lcm = LabelConfusionModel(num_classes, d, self.lcm_hidden)
        return Ensemble(members, num_classes=num_classes, aux=lcm)

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        """Eq. (12) on one batch; logits are the ensemble's."""
        if not isinstance(model, Ensemble) or model.aux is None:
            raise TypeError("cldl trains an Ensemble with an LCM: build it with CLDL.wrap(...)")
        x = batch.x.detach().clone().requires_grad_(True)  # (N, C, H, W)
        logits, soft, kls = [], [], []
        for member in model.members:
            z, v = _representation(member, x)  # (N, K), (N, d)
            s = soft_labels(model.aux(v), batch.y, self.gamma)  # (N, K)
            kls.append(kl_div(s, F.softmax(z, dim=1)))  # (N,) eq. (7)
            logits.append(z)
            soft.append(s)
        grads = input_gradients([kl.sum() for kl in kls], x)  # (k, N, D)
        l_e = torch.stack(kls).mean(dim=0)  # (N,)
        l_ld = label_diversity(soft)  # (N,)
        l_gd = gradient_diversity(grads)  # (N,)
        loss = (l_e - self.alpha * l_ld + self.beta * l_gd).mean()  # eq. (12)
        logs = {
            "kl": float(l_e.mean().detach()),
            "label_div": float(l_ld.mean().detach()),
            "grad_div": float(l_gd.mean().detach()),
        }
        return DefenseOutput(loss=loss, logits=combine_logits(logits).detach(), logs=logs)


def _probe_width(member: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Channel count of ``forward_features`` found with one dummy forward (eval, no grad)."""
    was_training = member.training
    member.eval()
    with torch.no_grad():
        width = member.forward_features(torch.zeros(1, *input_shape)).shape[1]
    member.train(was_training)
    return int(width)
