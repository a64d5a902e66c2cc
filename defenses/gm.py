"""``gm``: gradient misalignment (gm-neuroevolution §3.1, eq. 1 and 2).

The child ``f_c`` is trained with

    L = L_CE + lambda * L_GM,                                             (eq. 2)
    L_GM = mean_{(x, y) in batch} cos(grad_x l(f_c(x), y), grad_x l(f_r(x), y))   (eq. 1)

so minimising ``L`` pushes the child's input gradients away from (toward the opposite of)
those of the fixed reference ``f_r``; adversarial perturbations of the reference then stop
being useful against the child (low transferability).

Implementation (the hot path of the search, one forward of the child):

1. ``logits = f_c(x)`` with ``x`` requiring grad; ``ce_sum = CE(logits, y, reduction="sum")``.
   The per-sample input gradient is taken of the *summed* CE, so each sample's gradient is
   ``grad_x l(f_c(x_i), y_i)`` and not scaled by ``1/N`` (irrelevant for the cosine itself,
   but it keeps the eps guard meaningful).
2. ``g_c = autograd.grad(ce_sum, x, create_graph=True)``: double backprop through the child
   only; the reference gradient ``g_r`` comes from ``ctx.reference_grad`` (eval mode,
   detached; cached for the training set by the loop, or computed live).
3. ``cos_i = <g_c, g_r> / sqrt((|g_c|^2 + eps^2)(|g_r|^2 + eps^2))`` per sample (eps guard keeps
   the value and its derivative finite for vanishing gradients).
4. ``loss = ce_sum / N + lambda * mean_i cos_i``; the CE value reuses the forward of step 1.
   With a training recipe's label smoothing (``ctx.label_smoothing`` > 0) the CE *training*
   term is the label-smoothed CE of the same logits; the input gradients of eq. 1 stay those
   of the plain CE (the reference's are plain CE too).

The default ``lam = 1.0`` is backed by a sweep over 0.1-10 on two architectures (docs/fitness.md,
"Gradient misalignment"); the paper leaves lambda to be tuned per dataset.

``path`` (default 0: eq. 1 exactly; a deviation from the paper when > 0). Eq. 1 controls the
child's gradient at the clean image only. What the transferred attack changes is the child's
loss along the reference's step, ``l(x + eps s) - l(x) = int_0^eps <grad_x l(x + t s), s> dt``
with ``s = sign(grad_x l_ref(x))`` (one FGSM step; PGD's path starts there). Children whose
gradient is misaligned at ``x`` but aligned a few hundredths further along ``s`` pass eq. 1 and
are still fooled (measured in docs/fitness.md, "Why GM sometimes does not protect"). With
``path = r`` the child's gradient is taken at ``x + t s`` clamped to the pixel range,
``t ~ U[0, r]`` per image from the loop's generator, and misaligned with the reference's
gradient at ``x``: a one-sample Monte-Carlo estimate of the cosine over the whole integral's
path instead of its first point. The CE term stays at the clean ``x`` (training on the moved
images would be adversarial training on the reference's examples, another defense). Costs one
more forward of the child per step (in train mode: batch-norm running statistics also see the
moved images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import register_defense


def misalignment(g_child: torch.Tensor, g_ref: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample cosine similarity of two input-gradient batches (eq. 1 summand).

    Args:
        g_child: (N, C, H, W) child input gradients (may carry a graph).
        g_ref: (N, C, H, W) reference input gradients (detached).
        eps: guard added (squared) to both squared norms.

    Returns:
        (N,) cosines in [-1, 1].
    """
    a, b = g_child.flatten(1), g_ref.flatten(1)  # (N, D)
    dot = (a * b).sum(dim=1)  # (N,)
    denom = torch.sqrt((a.square().sum(1) + eps**2) * (b.square().sum(1) + eps**2))  # (N,)
    return dot / denom


@register_defense("gm")
class GradientMisalignment(Defense):
    """CE + ``lam`` * mean cosine(grad_x CE_child, grad_x CE_ref) (eq. 2)."""

    needs = frozenset({"reference_grad"})

    def __init__(self, *, lam: float = 1.0, eps: float = 1e-12, path: float = 0.0) -> None:
        self.lam = float(lam)
        self.eps = float(eps)
        self.path = float(path)

    def check(self) -> None:
        if not self.path >= 0:
            raise ValueError(f"path must be >= 0 (an input-space radius), not {self.path}")

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        if ctx.reference_grad is None:
            raise ValueError("gm needs ctx.reference_grad (the reference's input gradients)")
        g_ref = ctx.reference_grad(batch.x, batch.y, batch.index).detach()  # (N, C, H, W)
        x = batch.x.detach().requires_grad_(True)  # (N, C, H, W)
        logits = model(x)  # (N, K)
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: CE in float32
            logits = logits.float()
        ce_sum = F.cross_entropy(logits, batch.y, reduction="sum")
        if self.path:  # eq. 1 at a point of the reference's FGSM path (module docstring)
            t = torch.rand(x.shape[0], 1, 1, 1, generator=ctx.generator,
                           device="cpu").to(x.device) * self.path  # (N, 1, 1, 1)
            moved = (x.detach() + t * g_ref.sign().to(x.dtype)).clamp(0.0, 1.0)
            moved.requires_grad_(True)
            moved_logits = model(moved).float()  # (N, K)
            (g_child,) = torch.autograd.grad(
                F.cross_entropy(moved_logits, batch.y, reduction="sum"), moved,
                create_graph=True)  # (N, C, H, W)
        else:
            (g_child,) = torch.autograd.grad(ce_sum, x, create_graph=True)  # (N, C, H, W)
        g_ref = g_ref.to(g_child.dtype)
        cos = misalignment(g_child, g_ref, self.eps)  # (N,)
        if ctx.label_smoothing:
            ce = F.cross_entropy(logits, batch.y, label_smoothing=ctx.label_smoothing)
        else:
            ce = ce_sum / x.shape[0]
        gm = cos.mean()
        loss = ce + self.lam * gm
        return DefenseOutput(loss=loss, logits=logits,
                             logs={"ce": float(ce.detach()), "gm_cos": float(gm.detach())})
