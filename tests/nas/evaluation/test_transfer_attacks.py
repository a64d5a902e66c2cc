"""MI-FGSM and DI-MI-FGSM against straightforward implementations written from the papers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.evaluation.attacks import AttackSettings, input_diversity, run_attack


def _toy(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(6, 1, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    return x.grad


def _mi_fgsm_reference(model, x, y, eps, alpha, steps, transform=lambda v: v):
    """Dong et al. (2018) Algorithm 1: g_{t+1} = mu g_t + grad / ||grad||_1 (mu = 1),
    x_{t+1} = clip_{x,eps}(x_t + alpha sign(g_{t+1})), one image at a time."""
    out = []
    for i in range(len(x)):
        xi, yi = x[i : i + 1], y[i : i + 1]
        adv, g = xi.clone(), torch.zeros_like(xi)
        for _ in range(steps):
            grad = _grad(lambda v: model(transform(v)), adv, yi)
            g = g + grad / grad.abs().sum()
            adv = adv + alpha * g.sign()
            adv = torch.maximum(torch.minimum(adv, xi + eps), xi - eps).clamp(0, 1)
        out.append(adv.detach())
    return torch.cat(out)


def test_mi_fgsm_matches_the_paper_algorithm():
    model, (x, y) = _toy().eval(), _batch()
    got = run_attack(model, x, y, AttackSettings("mi-fgsm", 0.1, 0.02, 6))
    want = _mi_fgsm_reference(model, x, y, 0.1, 0.02, 6)
    assert torch.allclose(got, want, atol=1e-6)
    assert (got - x).abs().max() <= 0.1 + 1e-6


def _di_reference(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Xie et al. (2019) input diversity at 8x8: resize to r in [8, 9), pad to 9, back to 8,
    with probability 0.5, drawn in the documented order (coin, r, top, left)."""
    coin = float(torch.rand(1, generator=g))
    r = int(torch.randint(8, 9, (1,), generator=g))
    top = int(torch.randint(0, 9 - r + 1, (1,), generator=g))
    left = int(torch.randint(0, 9 - r + 1, (1,), generator=g))
    if coin >= 0.5:
        return x
    canvas = torch.zeros(x.shape[0], x.shape[1], 9, 9)
    canvas[:, :, top : top + r, left : left + r] = F.interpolate(x, size=(r, r), mode="bilinear")
    return F.interpolate(canvas, size=(8, 8), mode="bilinear")


def test_di_mi_fgsm_matches_a_direct_implementation_with_the_same_seed():
    model, (x, y) = _toy().eval(), _batch()
    settings = AttackSettings("di-mi-fgsm", 0.1, 0.02, 8)
    got = run_attack(model, x, y, settings, torch.Generator().manual_seed(3))
    again = run_attack(model, x, y, settings, torch.Generator().manual_seed(3))
    assert torch.equal(got, again)  # same seed, same tensor
    # The batch shares one transform per step: replay the same draws on the whole batch.
    g = torch.Generator().manual_seed(3)
    adv, m = x.clone(), torch.zeros_like(x)
    for _ in range(8):
        grad = _grad(lambda v: model(_di_reference(v, g)), adv, y)
        m = m + grad / grad.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
        adv = torch.maximum(torch.minimum(adv + 0.02 * m.sign(), x + 0.1), x - 0.1).clamp(0, 1)
    assert torch.allclose(got, adv, atol=1e-6)
    assert (got - x).abs().max() <= 0.1 + 1e-6 and got.min() >= 0 and got.max() <= 1
    # the transform changes the attack (else DI would be MI-FGSM under another name)
    assert not torch.allclose(got, run_attack(model, x, y, AttackSettings("mi-fgsm", 0.1,
                                                                         0.02, 8)))


@pytest.mark.parametrize("seed", range(4))
def test_input_diversity_keeps_the_shape_and_is_seeded(seed):
    x = torch.rand(2, 3, 28, 28)
    a = input_diversity(x, torch.Generator().manual_seed(seed))
    b = input_diversity(x, torch.Generator().manual_seed(seed))
    assert a.shape == x.shape and torch.equal(a, b)
