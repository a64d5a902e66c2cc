"""OT alignment: Sinkhorn against exact transport, tap selection, warm-up, wrapping."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from defenses import create_defense
from defenses.base import Batch
from defenses.ot import GraphProjection, OTModel, pick_taps, sinkhorn_w2


def _clouds(seed=0, b=3, n=6, d=2):
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(b, n, d, generator=g, dtype=torch.float64)
    xt = torch.rand(b, n, d, generator=g, dtype=torch.float64)
    exact = [
        ot.emd2(ot.unif(n), ot.unif(n), ot.dist(xs[i].numpy(), xt[i].numpy())) for i in range(b)
    ]
    return xs, xt, np.array(exact)


def test_sinkhorn_converges_to_exact_transport_as_eps_shrinks():
    xs, xt, exact = _clouds()
    errors = []
    for eps, iters in [(1.0, 100), (0.1, 300), (0.01, 2000), (0.001, 5000)]:
        got = sinkhorn_w2(xs, xt, eps=eps, iters=iters).numpy()
        assert (got >= exact - 1e-9).all()  # <P_eps, C> of a feasible plan >= the optimum
        errors.append(np.abs(got - exact).max())
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-2 * exact.min()  # within 1% of the exact cost (ot.emd2)


def test_sinkhorn_gradient_flows_and_vanishes_for_identical_clouds():
    xs, xt, _ = _clouds(1)
    xs.requires_grad_(True)
    sinkhorn_w2(xs, xt, eps=0.1, iters=100).sum().backward()
    assert xs.grad is not None and xs.grad.abs().sum() > 0
    same = sinkhorn_w2(xt, xt.clone(), eps=1e-3, iters=500)
    assert same.abs().max() < 1e-3 * float(ot.dist_batch(xt, xt).mean())


def test_raw_feature_scale_costs_stay_finite():
    g = torch.Generator().manual_seed(0)
    a, b = 30 * torch.randn(4, 16, 16, generator=g), 30 * torch.randn(4, 16, 16, generator=g)
    assert torch.isfinite(sinkhorn_w2(a, b, eps=0.1, iters=100)).all()  # log-domain solver


def test_pick_taps_evenly_spaced():
    names = [f"n{i}" for i in range(7)]
    assert pick_taps(names, 3) == ["n0", "n3", "n6"]
    assert pick_taps(names[:2], 3) == ["n0", "n1"]
    assert pick_taps(names, 0) == []


def test_graph_projection_shapes():
    head = GraphProjection(channels=8, state=5, nodes=4)
    assert head(torch.randn(2, 8, 6, 6)).shape == (2, 4, 5)


def test_wrap_taps_layers_and_keeps_the_model_contract(factory):
    model = create_defense("ot", layers=2, state=4, nodes=3).wrap(
        factory, num_classes=3, input_shape=(1, 12, 12)
    )
    assert isinstance(model, OTModel)
    assert model.taps == ["block1", "block2"]
    assert [h.state.in_channels for h in model.heads] == [8, 16]
    assert model.tap_names == ("net.block1", "net.block2")
    model.get_submodule(model.tap_names[0])
    x = torch.rand(2, 1, 12, 12)
    assert torch.equal(model(x), model.net(x))
    assert model.forward_features(x).shape[1] == model.num_features


def test_warmup_is_clean_ce_only_and_adversary_is_required_after(factory, data, make_ctx):
    defense = create_defense("ot", warmup=2)
    model = defense.wrap(factory, num_classes=3, input_shape=(1, 12, 12))
    x, y = data
    batch = Batch(x=x.float() / 255, y=y, index=torch.arange(len(y)))
    calls = []

    def adversary(m, xb, yb):
        calls.append(1)
        return xb

    ctx = make_ctx(adversary=adversary)
    ctx.epoch = 1
    out = defense.loss(model, batch, ctx)
    assert set(out.logs) == {"ce"} and not calls
    ctx.epoch = 2
    out = defense.loss(model, batch, ctx)
    assert calls and {"ce", "ce_adv", "w2_0"} <= set(out.logs)
    # x_adv == x: the two CE terms coincide
    assert out.logs["ce_adv"] == pytest.approx(out.logs["ce"], rel=1e-4)
    no_adversary = make_ctx(adversary=None)
    no_adversary.epoch = 2
    with pytest.raises(ValueError, match="adversary"):
        defense.loss(model, batch, no_adversary)
