"""Gradient misalignment (eq. 1, 2): value, per-sample gradients, double backprop, eps guard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses import create_defense
from defenses.base import Batch, TrainContext
from defenses.gm import GradientMisalignment, misalignment


def _net(seed: int = 0, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 36, 3)).to(dtype)


def _ref_grad_fn(reference: nn.Module):
    def fn(x, y, index):
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(reference(x), y, reduction="sum"), x)[0]

    return fn


def _batch(n: int = 6, dtype=torch.float32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 1, 6, 6, generator=g).to(dtype),
                 torch.randint(0, 3, (n,), generator=g),
                 torch.arange(n))


def test_registered_with_its_needs_and_hparams():
    d = create_defense("gm", lam=0.5)
    assert isinstance(d, GradientMisalignment)
    assert d.needs == frozenset({"reference_grad"})
    assert d.hparams() == {"lam": 0.5, "eps": 1e-12, "path": 0.0}
    with pytest.raises(ValueError, match="reference_grad"):
        d.loss(_net(), _batch(), TrainContext())


def test_misalignment_is_the_cosine_and_finite_at_zero():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    assert torch.allclose(misalignment(a, b), F.cosine_similarity(a.flatten(1), b.flatten(1)),
                          atol=1e-6)
    assert torch.allclose(misalignment(a, -a), -torch.ones(5), atol=1e-6)
    z = torch.zeros(2, 1, 4, 4, requires_grad=True)
    val = misalignment(z, b[:2])
    (grad,) = torch.autograd.grad(val.sum(), z)
    assert torch.isfinite(val).all() and torch.isfinite(grad).all()


def test_loss_is_ce_plus_lambda_times_mean_per_sample_cosine():
    model, reference, batch = _net(0), _net(1), _batch()
    ctx = TrainContext(reference_grad=_ref_grad_fn(reference))
    out = create_defense("gm", lam=2.0).loss(model, batch, ctx)
    cos = []
    for i in range(len(batch.y)):  # per-sample gradients, one sample at a time (oracle)
        xi = batch.x[i : i + 1].clone().requires_grad_(True)
        gc = torch.autograd.grad(F.cross_entropy(model(xi), batch.y[i : i + 1]), xi)[0]
        gr = _ref_grad_fn(reference)(batch.x[i : i + 1], batch.y[i : i + 1], None)
        cos.append(F.cosine_similarity(gc.flatten(), gr.flatten(), dim=0))
    ce = F.cross_entropy(model(batch.x), batch.y)
    expected = ce + 2.0 * torch.stack(cos).mean()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert out.logs["gm_cos"] == pytest.approx(torch.stack(cos).mean().item(), abs=1e-5)
    assert out.logits.shape == (6, 3)


def test_gm_term_gradient_matches_finite_differences_double_backprop():
    model = _net(0, torch.float64)
    reference = _net(1, torch.float64)
    batch = _batch(4, torch.float64)
    ctx = TrainContext(reference_grad=_ref_grad_fn(reference))
    d = create_defense("gm", lam=1.0)

    def gm_only() -> torch.Tensor:
        out = d.loss(model, batch, ctx)
        return out.loss - F.cross_entropy(out.logits, batch.y)

    w = model[0].weight
    (analytic,) = torch.autograd.grad(gm_only(), w)
    numeric = torch.zeros_like(w)
    h = 1e-6
    for idx in [(0, 0, 0, 0), (1, 0, 1, 2), (3, 0, 2, 1)]:
        w.data[idx] += h
        up = gm_only().item()
        w.data[idx] -= 2 * h
        down = gm_only().item()
        w.data[idx] += h
        numeric[idx] = (up - down) / (2 * h)
        assert analytic[idx].item() == pytest.approx(numeric[idx].item(), rel=1e-4, abs=1e-8)
    assert analytic.abs().sum() > 0  # the cosine term reaches the parameters (not detached)


def test_every_parameter_gets_a_gradient_and_the_reference_none():
    model, reference, batch = _net(0), _net(1), _batch()
    ctx = TrainContext(reference_grad=_ref_grad_fn(reference))
    create_defense("gm").loss(model, batch, ctx).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad is None for p in reference.parameters())


def test_a_few_steps_of_gm_misalign_the_gradients():
    model, reference = _net(0), _net(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    batch = Batch(x, y, torch.arange(32))
    ctx = TrainContext(reference_grad=_ref_grad_fn(reference))
    d = create_defense("gm", lam=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = d.loss(model, batch, ctx).logs["gm_cos"]
    for _ in range(30):
        opt.zero_grad()
        d.loss(model, batch, ctx).loss.backward()
        opt.step()
    last = d.loss(model, batch, ctx).logs["gm_cos"]
    assert last < first - 0.2 and last < 0


def test_path_takes_the_child_gradient_on_the_reference_fgsm_path_and_zero_is_eq_1():
    model, reference, batch = _net(0), _net(1), _batch()
    ref_grad = _ref_grad_fn(reference)
    ctx = lambda seed: TrainContext(reference_grad=ref_grad,  # noqa: E731
                                    generator=torch.Generator().manual_seed(seed))

    def by_hand(x):  # CE at the clean images + mean cosine of the child's gradient at x and
        x = x.detach().requires_grad_(True)  # the reference's at the clean images
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), batch.y, reduction="sum"), x)
        cos = F.cosine_similarity(g.flatten(1), ref_grad(batch.x, batch.y, None).flatten(1))
        return (float(F.cross_entropy(model(batch.x), batch.y).detach())
                + float(cos.mean().detach()))

    def loss(seed, **args):  # the defense's training loss as a number
        return float(create_defense("gm", **args).loss(model, batch, ctx(seed)).loss.detach())

    plain = loss(0)
    assert plain == pytest.approx(by_hand(batch.x), abs=1e-5)
    assert loss(0, path=0.0) == plain
    r = 0.3
    t = torch.rand(len(batch.x), 1, 1, 1, generator=torch.Generator().manual_seed(7)) * r
    moved = (batch.x + t * ref_grad(batch.x, batch.y, None).sign()).clamp(0, 1)
    on_path = loss(7, path=r)
    assert on_path == pytest.approx(by_hand(moved), abs=1e-5)
    assert on_path != pytest.approx(plain, abs=1e-3)
    with pytest.raises(ValueError, match="path"):
        create_defense("gm", path=-0.1).check()
