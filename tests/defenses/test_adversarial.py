"""Adversarial training (defenses/adversarial.py): the examples trained on stay inside the
eps-ball, free-AT's replays update its perturbation with the weights' own backward, and the
radius defaults to the dataset's eps named by the loop's adversary."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from defenses import create_defense
from defenses.base import Batch
from nas.evaluation.training import train_step


def _batch(data) -> Batch:
    x, y = data
    return Batch(x=x.float() / 255.0, y=y, index=torch.arange(len(y)))


@pytest.mark.parametrize("name, args", [("fast-at", {}), ("pgd-at", {}), ("pgd-at", {"steps": 2}),
                                        ("fast-at", {"alpha": 0.5})])
def test_examples_lie_in_the_eps_ball_and_raise_the_loss(name, args, factory, data):
    torch.manual_seed(0)
    model, batch = factory().train(), _batch(data)
    defense = create_defense(name, **args)
    eps = 0.05
    x_adv = defense.perturb(model, batch.x, batch.y, eps, torch.Generator().manual_seed(1))
    assert x_adv.shape == batch.x.shape and not x_adv.requires_grad
    assert float((x_adv - batch.x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - batch.x).abs().max()) > eps / 2  # it moved, not the clean batch
    with torch.no_grad():
        clean = F.cross_entropy(model(batch.x), batch.y)
        adv = F.cross_entropy(model(x_adv), batch.y)
    assert adv > clean


def test_the_radius_defaults_to_the_adversarys_eps_and_an_argument_overrides_it(
        factory, data, make_ctx):
    model, batch, ctx = factory().train(), _batch(data), make_ctx()
    for name in ("fast-at", "pgd-at", "free-at"):
        assert create_defense(name).loss(model, batch, ctx).logs["eps"] == pytest.approx(0.1)
        assert create_defense(name, eps=0.03).loss(model, batch, ctx).logs["eps"] == 0.03
        bare = make_ctx(adversary=lambda m, x, y: x)  # an attack that names no radius
        with pytest.raises(ValueError, match="needs eps"):
            create_defense(name).loss(model, batch, bare)


def test_free_at_replays_step_the_weights_and_ascend_the_perturbation(factory, data, make_ctx):
    """Replay 1 trains on delta = 0; replay 2 on eps * sign(the input gradient of replay 1's
    backward), computed here independently on a copy of the untrained model (also at the
    black pixels, where a gradient through the clamp to the box would be zero)."""
    torch.manual_seed(0)
    model, batch, ctx = factory().train(), _batch(data), make_ctx()
    before = copy.deepcopy(model)
    x = batch.x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(before(x), batch.y), x)
    eps = 0.1
    defense = create_defense("free-at", eps=eps, replays=2)
    defense.prepare(*data, ctx)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, _ = train_step(model, defense, opt, batch, ctx)
    assert torch.isfinite(loss)
    assert all(int(opt.state[p]["step"]) == 2 for p in model.parameters())  # two weight steps
    delta = defense.perturbation
    moved = g != 0
    assert moved.float().mean() > 0.5
    assert torch.equal(delta[moved], eps * g[moved].sign())
    assert float(delta.abs().max()) <= eps + 1e-7


def test_free_at_carries_the_perturbation_across_minibatches_inside_the_ball(
        factory, data, make_ctx):
    torch.manual_seed(0)
    model, batch, ctx = factory().train(), _batch(data), make_ctx()
    defense = create_defense("free-at", eps=0.05, alpha=0.03, replays=3)
    defense.prepare(*data, ctx)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = []
    for _ in range(3):
        train_step(model, defense, opt, batch, ctx)
        seen.append(defense.perturbation.clone())
    assert float(seen[0].abs().max()) > 0  # replays 2-3 of the first minibatch moved it
    assert not torch.equal(seen[1], seen[2])  # and it keeps moving across minibatches
    for delta in seen:
        assert float(delta.abs().max()) <= 0.05 + 1e-7
    small = Batch(x=batch.x[:5], y=batch.y[:5], index=batch.index[:5])  # a short last batch
    train_step(model, defense, opt, small, ctx)
    assert defense.perturbation.shape == small.x.shape
    defense.prepare(*data, ctx)  # a new training starts from delta = 0
    assert defense.perturbation is None
