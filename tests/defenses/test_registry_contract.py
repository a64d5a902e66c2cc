"""Tests generated over the registry: every defense trains through the same contract."""

from __future__ import annotations

import json

import pytest
import torch

from defenses import create_defense, list_defenses, register_defense
from defenses.base import Batch
from nas.evaluation.training import build_training_model, to_training_layout, train_step
from nasbase.registry import UnknownName

ALL = list_defenses()


NUM_CLASSES = 3


def _setup(name, factory, data, make_ctx, seed=0):
    torch.manual_seed(seed)
    defense = create_defense(name)
    model = defense.wrap(factory, num_classes=NUM_CLASSES, input_shape=(1, 12, 12))
    ctx = make_ctx(seed)
    x, y = data
    defense.prepare(x, y, ctx)
    model.train()
    batch = Batch(x=x.float() / 255.0, y=y, index=torch.arange(len(y)))
    return defense, model, ctx, batch


def test_the_paper_defenses_are_registered():
    assert {"none", "gm", "ot", "ncen", "cldl", "stylized", "fast-at", "pgd-at",
            "free-at"} <= set(ALL)
    with pytest.raises(UnknownName, match="valid: .*ncen"):
        create_defense("no-such-defense")


@pytest.mark.parametrize("name", ALL)
def test_a_registered_defense_carries_its_name_and_a_duplicate_is_refused(name):
    cls = type(create_defense(name))
    assert cls.name == name
    with pytest.raises(ValueError, match="already registered"):
        register_defense(name)(type("Again", (cls,), {}))
    assert type(create_defense(name)) is cls  # the refused duplicate replaced nothing


@pytest.mark.parametrize("name", ALL)
def test_hparams_are_keyword_json_scalars(name):
    defense = create_defense(name)
    hp = defense.hparams()
    assert json.loads(json.dumps(hp)) == hp
    assert create_defense(name, **hp).hparams() == hp  # round-trips through the run config


@pytest.mark.parametrize("name", ALL)
def test_finite_loss_and_gradient_on_every_parameter(name, factory, data, make_ctx):
    defense, model, ctx, batch = _setup(name, factory, data, make_ctx)
    out = defense.loss(model, batch, ctx)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (len(batch.y), NUM_CLASSES)
    assert all(isinstance(v, float) for v in out.logs.values())
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {n}"
    # the module to evaluate gives class logits for plain pixels
    model.eval()
    with torch.no_grad():
        assert model(batch.x).shape == (len(batch.y), NUM_CLASSES)


@pytest.mark.parametrize("name", ALL)
def test_a_training_step_under_bf16_autocast_gives_finite_gradients(name, factory, data,
                                                                    make_ctx):
    """``--amp bf16`` (the default on CUDA with bf16 support) through the loop's training
    layout (channels-last, hand-written second derivatives): every parameter gets a finite
    float32 gradient."""
    torch.manual_seed(0)
    defense = create_defense(name)
    model = build_training_model(defense, factory, num_classes=NUM_CLASSES,
                                 input_shape=(1, 12, 12), device=torch.device("cpu"))
    ctx = make_ctx(0)
    x, y = data
    defense.prepare(x, y, ctx)
    model.train()
    batch = Batch(x=to_training_layout(x.float() / 255.0), y=y, index=torch.arange(len(y)))
    params = [p for p in model.parameters() if p.requires_grad]
    loss, _ = train_step(model, defense, torch.optim.SGD(params, lr=0.0), batch, ctx,
                         torch.autocast("cpu", dtype=torch.bfloat16))
    assert torch.isfinite(loss)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == torch.float32, f"{name}: {n}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {n}"


@pytest.mark.parametrize("name", ALL)
def test_loss_falls_on_a_learnable_problem(name, factory, data, make_ctx):
    defense, model, ctx, batch = _setup(name, factory, data, make_ctx, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for step in range(12):
        ctx.step = step
        out = defense.loss(model, batch, ctx)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, f"{name}: {losses}"


@pytest.mark.parametrize(
    "name, bad",
    [("ncen", {"k": 1}), ("cldl", {"k": 1}), ("ot", {"eps": 0}), ("stylized", {"weight_free": "x"}),
     ("ncen", {"k": "many"}), ("ot", {"no_such_arg": 1}),
     ("fast-at", {"eps": 0}), ("fast-at", {"eps": 2.0}), ("pgd-at", {"steps": 0}),
     ("pgd-at", {"steps": 2.5}), ("pgd-at", {"alpha": -0.1}), ("free-at", {"replays": 0}),
     ("free-at", {"replays": True}), ("free-at", {"eps": "big"}), ("fast-at", {"steps": 3})],
)
def test_bad_hyper_parameters_fail_before_training(name, bad):
    """At construction, or at ``check()`` (what the commands call first) where the constructor
    only stores (STYLE.md §3)."""
    with pytest.raises((ValueError, TypeError)):
        create_defense(name, **bad).check()
