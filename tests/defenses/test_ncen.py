"""NCEn regularisers (eq. 2, 6, 10) on hand-computed gradient vectors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from defenses import create_defense
from defenses.base import Batch
from defenses.ensemble import Ensemble
from defenses.ncen import loss_cos, loss_norm


def _grads(*vectors):  # k members, one sample each -> (k, 1, D)
    return torch.tensor(vectors, dtype=torch.float64)[:, None, :]


def test_two_orthogonal_members_of_equal_norm():
    g = _grads([1.0, 0.0], [0.0, 1.0])  # g_ens = (0.5, 0.5): both at 45 degrees
    assert loss_cos(g)[:, 0].tolist() == pytest.approx([0.5, 0.5])
    assert loss_norm(g)[:, 0].tolist() == pytest.approx([0.0, 0.0])


def test_two_parallel_members_of_different_norm():
    g = _grads([3.0, 0.0], [1.0, 0.0])  # g = 2, deviations (+1, -1) / 2
    assert loss_cos(g)[:, 0].tolist() == pytest.approx([1.0, 1.0])
    assert loss_norm(g)[:, 0].tolist() == pytest.approx([-0.25, -0.25])


def test_three_members():
    g = _grads([1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0])
    # g_ens = (1/3, 2/3, 1), |g_ens| = sqrt(14)/3 -> CS_i = i / sqrt(14)
    assert loss_cos(g)[:, 0].tolist() == pytest.approx([5 / 14, 8 / 14, 9 / 14])
    # norms 1, 2, 3; g = 2; (|g_i| - g)/g = -1/2, 0, 1/2
    assert loss_norm(g)[:, 0].tolist() == pytest.approx([-0.25, 0.0, -0.25])


def test_terms_are_per_sample_and_scale_invariant():
    torch.manual_seed(0)
    g = torch.randn(3, 5, 7, dtype=torch.float64)
    assert loss_cos(g).shape == (3, 5)
    assert torch.allclose(loss_cos(g), loss_cos(10 * g))
    assert torch.allclose(loss_norm(g), loss_norm(10 * g))
    one = loss_cos(g[:, 2:3])[:, 0]
    assert torch.allclose(loss_cos(g)[:, 2], one)


def test_defense_loss_is_ce_plus_weighted_nce(factory, data, make_ctx):
    torch.manual_seed(0)
    defense = create_defense("ncen", k=2, lam_cos=0.5, lam_norm=0.25)
    model = defense.wrap(factory, num_classes=3, input_shape=(1, 12, 12))
    assert isinstance(model, Ensemble) and model.k == 2
    x, y = data
    batch = Batch(x=x.float() / 255, y=y, index=torch.arange(len(y)))
    model.eval()  # deterministic BN so the recomputation below matches
    out = defense.loss(model, batch, make_ctx())
    xg = batch.x.clone().requires_grad_(True)
    logits = [m(xg) for m in model.members]
    ce = [F.cross_entropy(z, y, reduction="sum") for z in logits]
    grads = torch.stack([torch.autograd.grad(c, xg)[0].flatten(1) for c in ce])
    expected = (ce[0] + ce[1]) / 2 / len(y) + (
        0.25 * loss_norm(grads).mean(1) + 0.5 * loss_cos(grads).mean(1)
    ).mean()
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # the logits are the ensemble's: log of the mean member softmax
    mean_p = (F.softmax(logits[0], 1) + F.softmax(logits[1], 1)) / 2
    assert torch.allclose(out.logits, mean_p.log(), atol=1e-5)
    assert math.isclose(out.logs["ce"], float(sum(ce).detach()) / 2 / len(y), rel_tol=1e-5)
