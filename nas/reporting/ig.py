"""Integrated-gradients maps (Captum) and the pixel distance between two maps (paper Fig. 3).

Integrated gradients (Sundararajan et al. 2017, the paper's ref. [43]) attribute a logit to
the input pixels by integrating the input gradient along the straight path from a baseline
``x'`` to the image ``x``::

    IG_i(x) = (x_i - x'_i) * integral_0^1 d f_t(x' + a (x - x')) / d x_i  da

The paper (Sec. 4.1.1, Fig. 3) draws these maps for the reference network, the reference
trained with GM and the evolved network, each scaled to ``[-1, 1]`` (red negative, green
positive), and compares them pixel by pixel with a "pixel distance" to the reference's map:
GM (paper eq. 1) pushes the child's input gradient away from the reference's, so a larger
distance means more misaligned gradients and, by the paper's hypothesis, lower transferability.

This module works on any ``nn.Module`` mapping pixels ``(N, C, H, W)`` to logits ``(N, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import IntegratedGradients
from torch import nn


@dataclass
class IGResult:
    """Integrated gradients of a batch.

    Attributes:
        attributions: raw attributions, same shape as the input ``(N, C, H, W)``.
        maps: per-image maps summed over channels and scaled to ``[-1, 1]`` ``(N, H, W)``.
        delta: Captum's convergence delta per image ``(N,)``: ``sum_i IG_i - (f(x) - f(x'))``;
            near 0 when the integral is well approximated (completeness axiom).
    """

    attributions: torch.Tensor
    maps: torch.Tensor
    delta: torch.Tensor


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    baseline: torch.Tensor | None = None,
    n_steps: int = 64,
    internal_batch_size: int | None = 64,
) -> IGResult:
    """Captum integrated gradients of the ``target`` logits with respect to the pixels.

    The model is put in eval mode for the computation (BatchNorm statistics frozen) and
    restored afterwards.

    Args:
        model: pixels in [0, 1] ``(N, C, H, W)`` -> logits ``(N, K)``.
        x: images ``(N, C, H, W)``, float in [0, 1].
        target: class index per image ``(N,)`` whose logit is attributed (the true label).
        baseline: ``(N, C, H, W)`` or broadcastable; default all zeros (a black image).
        n_steps: points of the Gauss-Legendre quadrature along the path.
        internal_batch_size: how many path points go through the model at once (memory).

    Returns:
        :class:`IGResult` with raw attributions, ``[-1, 1]`` maps and convergence deltas.
    """
    was_training = model.training
    model.eval()
    try:
        x = x.detach().float()
        base = torch.zeros_like(x) if baseline is None else baseline.to(x).expand_as(x)
        ig = IntegratedGradients(model)
        attr, delta = ig.attribute(
            x,  # (N, C, H, W)
            baselines=base,
            target=target.long(),
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
    finally:
        model.train(was_training)
    attr = attr.detach()  # (N, C, H, W)
    return IGResult(attributions=attr, maps=scale_maps(attr), delta=delta.detach().reshape(-1))


def scale_maps(attributions: torch.Tensor) -> torch.Tensor:
    """Sum attributions over channels and scale each image's map to ``[-1, 1]``.

    Each map is divided by its largest absolute value, so the sign (direction of the input
    gradient) and the relative importance of the pixels are kept, as in paper Fig. 3. An
    all-zero map stays zero.

    Args:
        attributions: ``(N, C, H, W)``.

    Returns:
        ``(N, H, W)`` maps with values in ``[-1, 1]``.
    """
    maps = attributions.sum(dim=1)  # (N, H, W)
    peak = maps.abs().flatten(1).amax(dim=1).clamp_min(1e-12)  # (N,)
    return maps / peak[:, None, None]


def pixel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised pixel distance between two batches of ``[-1, 1]`` maps, in ``[0, 1]``.

    ``d(a, b) = sum_p |a_p - b_p| / sum_p (|a_p| + |b_p|)`` over the pixels ``p`` of each
    image. By the triangle inequality ``|a_p - b_p| <= |a_p| + |b_p|``, so ``d`` is in
    ``[0, 1]``: 0 exactly when the maps are identical, 1 exactly when every pixel's
    attribution has the opposite sign (or is zero in one map), e.g. for a negated map
    ``b = -a``, the complete reversal of the input-gradient direction that GM (paper eq. 1)
    rewards. Unlike a plain mean absolute difference it does not grow just because one map
    is denser than the other. Two all-zero maps have distance 0.

    Args:
        a: ``(N, H, W)`` (or any ``(N, ...)``) maps, e.g. of the reference network.
        b: maps of the same shape, e.g. of the evolved network.

    Returns:
        ``(N,)`` distances.
    """
    if a.shape != b.shape:
        raise ValueError(f"map shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    num = (a - b).abs().flatten(1).sum(dim=1)  # (N,)
    den = (a.abs() + b.abs()).flatten(1).sum(dim=1)  # (N,)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))


def compare_maps(
    models: dict[str, nn.Module],
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    reference: str,
    n_steps: int = 64,
) -> dict[str, dict[str, object]]:
    """IG maps of several models on the same images and their distance to the reference's.

    Args:
        models: name -> model; must contain ``reference``.
        x: images ``(N, C, H, W)`` in [0, 1].
        target: labels ``(N,)`` whose logits are attributed.
        reference: the name whose maps the others are compared to.
        n_steps: quadrature points of the path integral.

    Returns:
        name -> ``{"maps": (N, H, W) tensor, "delta": (N,) tensor, "distance": (N,) tensor}``;
        the reference's own distance is all zeros.
    """
    if reference not in models:
        raise KeyError(f"reference {reference!r} not among the models {sorted(models)}")
    results = {name: integrated_gradients(m, x, target, n_steps=n_steps)
               for name, m in models.items()}
    ref_maps = results[reference].maps
    return {
        name: {"maps": r.maps, "delta": r.delta, "distance": pixel_distance(ref_maps, r.maps)}
        for name, r in results.items()
    }
