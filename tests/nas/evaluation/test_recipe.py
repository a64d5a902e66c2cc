"""The training recipe: ``paper`` reproduces the loop as it was, the schedule's shape,
augmentation and GM, early stopping."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from defenses import create_defense
from defenses.base import Batch, TrainContext
from defenses.gm import GradientMisalignment
from nas.errors import UserError
from nas.evaluation.callbacks import EarlyStopping, accuracy_on, first_stop_epoch
from nas.evaluation.recipe import (
    CPU_RECIPE,
    PAPER_RECIPE,
    Recipe,
    WeightAverage,
    get_recipe,
    random_shift,
)
from nas.evaluation.training import (
    CachedReferenceGrad,
    LiveReferenceGrad,
    TrainConfig,
    TrainData,
    TrainOutcome,
    build_context,
    build_training_model,
    predict,
    reference_gradients,
    resolve_device,
    to_training_layout,
    train,
    train_step,
)


def _legacy_train(factory, defense, x_train, y_train, *, epochs, batch_size, lr, seed,
                  num_classes, reference_grad=None):
    """The training loop as it was before recipes existed (verbatim, minus progress bar)."""
    device = resolve_device("cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_training_model(defense, factory, num_classes=num_classes,
                                     input_shape=tuple(x_train.shape[1:]), device=device)
    ctx = build_context(defense, device=device, generator=generator,
                        reference_grad=reference_grad, adversary=None, cache_dir=None,
                        log=print)
    defense.prepare(x_train, y_train, ctx)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    outcome = TrainOutcome(model=model)
    model.train()
    x_dev, y_dev = x_train.to(device), y_train.to(device)
    for epoch in range(epochs):
        ctx.epoch = epoch
        for idx in torch.randperm(len(x_train), generator=generator).split(batch_size):
            idx_dev = idx.to(device)
            batch = Batch(x=to_training_layout(x_dev[idx_dev].float().div_(255.0)),
                          y=y_dev[idx_dev], index=idx_dev)
            loss, logs = train_step(model, defense, optimizer, batch, ctx, None)
            ctx.step += 1
    outcome.steps = ctx.step
    model.eval()
    return outcome


@pytest.mark.parametrize("defense", ["none", "gm"])
def test_paper_recipe_reproduces_the_old_loop_bitwise(defense, small_net_factory,
                                                       synthetic_splits):
    s = synthetic_splits
    kw = {}
    if defense == "gm":
        torch.manual_seed(5)
        grads = reference_gradients(small_net_factory().eval(), s.x_train, s.y_train)
        kw["reference_grad"] = CachedReferenceGrad(grads, torch.device("cpu"))
    old = _legacy_train(small_net_factory, create_defense(defense), s.x_train, s.y_train,
                        epochs=2, batch_size=50, lr=1e-3, seed=3, num_classes=10, **kw)
    new = train(small_net_factory, create_defense(defense),
                TrainData(s.x_train, s.y_train, 10, **kw),
                config=TrainConfig(epochs=2, batch_size=50, recipe=get_recipe("paper"),
                                   device="cpu", amp="off"),
                seed=3, log=lambda m: None)
    assert new.steps == old.steps == 8
    for (k, a), b in zip(old.model.state_dict().items(), new.model.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k


def test_paper_recipe_is_the_papers_adam():
    r = PAPER_RECIPE
    assert (r.optimizer, r.lr, r.weight_decay, r.schedule, r.label_smoothing, r.shift, r.ema) \
        == ("adam", 1e-3, 0.0, "constant", 0.0, 0, 0.0)
    opt = r.optimizer_for([torch.nn.Parameter(torch.zeros(1))])
    assert type(opt) is torch.optim.Adam and opt.defaults["betas"] == (0.9, 0.999)
    assert r.scheduler_for(opt, 10) is None
    with pytest.raises(UserError, match="valid: cpu, paper"):
        get_recipe("fast")
    with pytest.raises(ValueError):
        Recipe(schedule="step")


def test_onecycle_schedule_shape():
    r = CPU_RECIPE
    total = 200
    warm = round(r.warmup * total)
    opt = r.optimizer_for([torch.nn.Parameter(torch.zeros(1))])
    sched = r.scheduler_for(opt, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(r.lr / 25)
    assert max(lrs) == pytest.approx(r.lr) and lrs.index(max(lrs)) == warm
    up, down = lrs[: warm + 1], lrs[warm:]
    assert all(a < b for a, b in zip(up, up[1:], strict=False))  # linear warm-up
    assert all(a >= b for a, b in zip(down, down[1:], strict=False))  # cosine annealing
    assert lrs[warm + (total - warm) // 2] == pytest.approx(r.lr * (0.5 + 0.5e-4), rel=0.05)
    assert lrs[-1] < r.lr * 1e-3
    assert all(math.isfinite(v) for v in lrs)


def test_random_shift_moves_images_within_the_budget():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0  # a 2x2 square in the middle
    out = random_shift(x, 2, g)
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    rows = out.sum((1, 3)).argmax(1)  # (N,) first row of the square
    cols = out.sum((1, 2)).argmax(1)
    assert set(rows.tolist()) == set(range(1, 6)) and set(cols.tolist()) == set(range(1, 6))
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(out, random_shift(x, 2, g2))  # the generator decides


class _Recording(GradientMisalignment):
    """GM that records the inputs it was given."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: list[torch.Tensor] = []

    def loss(self, model, batch, ctx):
        self._seen.append((batch.x.detach().clone(), batch.index.clone()))
        return super().loss(model, batch, ctx)


def test_gm_with_live_reference_gradients_sees_augmented_inputs(small_net_factory,
                                                                 synthetic_splits):
    s = synthetic_splits
    torch.manual_seed(5)
    reference = small_net_factory().eval()
    given = []

    def ref_grad(x, y, index):
        given.append(x.detach().clone())
        return LiveReferenceGrad(reference)(x, y, index)

    gm = _Recording()
    cfg = TrainConfig(epochs=1, batch_size=50, recipe=CPU_RECIPE, device="cpu")
    train(small_net_factory, gm, TrainData(s.x_train, s.y_train, 10, reference_grad=ref_grad),
          config=cfg, seed=0, log=lambda m: None)
    assert len(given) == len(gm._seen) == 4
    shifted = 0
    for g, (x, idx) in zip(given, gm._seen, strict=True):
        assert torch.equal(g, x)  # the reference gradient is of the very (augmented) input
        shifted += not torch.equal(x, s.x_train[idx].float() / 255)
    assert shifted == 4


def test_gm_with_cached_reference_gradients_is_not_augmented(small_net_factory,
                                                              synthetic_splits):
    s = synthetic_splits
    torch.manual_seed(5)
    grads = reference_gradients(small_net_factory().eval(), s.x_train, s.y_train)
    gm, msgs = _Recording(), []
    cfg = TrainConfig(epochs=1, batch_size=50, recipe=CPU_RECIPE, device="cpu")
    data = TrainData(s.x_train, s.y_train, 10,
                     reference_grad=CachedReferenceGrad(grads, torch.device("cpu")))
    train(small_net_factory, gm, data, config=cfg, seed=0, log=msgs.append)
    for x, idx in gm._seen:
        assert torch.equal(x, s.x_train[idx].float() / 255)
    assert any("no input shifts" in m for m in msgs)


def test_gm_under_the_recipe_matches_straightforward_double_backprop(small_net_factory,
                                                                     synthetic_splits):
    """One step of the loop's GM (fast layers, channels-last, label smoothing, shifted input,
    live reference gradient) against eq. 1-2 written out with PyTorch's own autograd."""
    s = synthetic_splits
    torch.manual_seed(5)
    reference = small_net_factory().eval()
    torch.manual_seed(6)
    plain = small_net_factory().train()
    fast = build_training_model(create_defense("gm"), lambda: copy.deepcopy(plain),
                                num_classes=10, input_shape=(1, 28, 28),
                                device=torch.device("cpu")).train()
    idx = torch.arange(32)
    x = random_shift(s.x_train[idx].float() / 255, 2, torch.Generator().manual_seed(1))
    y = s.y_train[idx]
    ls = CPU_RECIPE.label_smoothing
    ctx = TrainContext(reference_grad=LiveReferenceGrad(reference), label_smoothing=ls)
    out = create_defense("gm").loss(fast, Batch(x=to_training_layout(x), y=y, index=idx), ctx)
    out.loss.backward()
    # straightforward: eq. 1 with the plain CE's input gradients, eq. 2 with the smoothed CE
    xr = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(reference(xr), y, reduction="sum"), xr)
    xc = x.clone().requires_grad_(True)
    logits = plain(xc)
    (g_child,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xc,
                                     create_graph=True)
    cos = F.cosine_similarity(g_child.flatten(1), g_ref.flatten(1), dim=1)
    loss = F.cross_entropy(logits, y, label_smoothing=ls) + cos.mean()
    loss.backward()
    assert float(out.loss.detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5), name


def test_early_stopping_keeps_the_best_validation_weights(small_net_factory, synthetic_splits):
    s = synthetic_splits
    msgs = []
    cfg = TrainConfig(epochs=8, batch_size=50, recipe=CPU_RECIPE, patience=2, device="cpu")
    stopping = EarlyStopping.for_config(cfg, 4, accuracy_on(s.x_val, s.y_val))
    out = train(small_net_factory, create_defense("none"), TrainData(s.x_train, s.y_train, 10),
                config=cfg, seed=0, callbacks=[stopping], log=msgs.append)
    assert 1 <= out.best_epoch <= out.epochs <= 8
    assert out.epochs == 8 or out.epochs - out.best_epoch == 2
    acc = float((predict(out.model, s.x_val) == s.y_val).float().mean())
    assert acc == pytest.approx(out.val_acc)
    assert any("early stopping" in m for m in msgs)


def test_first_stop_epoch_is_where_the_one_cycle_rate_has_annealed():
    assert first_stop_epoch(PAPER_RECIPE, 40, 79) == 0  # constant rate: any epoch
    for epochs in (3, 10, 40):
        first, total = first_stop_epoch(CPU_RECIPE, epochs, 79), epochs * 79
        assert CPU_RECIPE.lr_factor(first * 79 - 1, total) < 0.1
        if first > 1:
            assert CPU_RECIPE.lr_factor((first - 1) * 79 - 1, total) >= 0.1
    assert first_stop_epoch(CPU_RECIPE, 40, 79) < 40


@pytest.mark.parametrize("recipe, annealed, stops_after", [
    (CPU_RECIPE, True, "first"), (CPU_RECIPE, False, 2), (PAPER_RECIPE, True, 2)])
def test_patience_never_cuts_a_one_cycle_run_before_its_annealing(
        small_net_factory, synthetic_splits, recipe, annealed, stops_after):
    s = synthetic_splits
    scores = iter([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01])  # never better than epoch 1
    cfg = TrainConfig(epochs=8, batch_size=50, recipe=recipe, patience=1, device="cpu",
                      stop_when_annealed=annealed)
    msgs: list[str] = []
    stopping = EarlyStopping.for_config(cfg, 4, lambda _m: next(scores), label="val score")
    out = train(small_net_factory, create_defense("none"), TrainData(s.x_train, s.y_train, 10),
                config=cfg, seed=0, callbacks=[stopping], log=msgs.append)
    first = first_stop_epoch(recipe, 8, 4)  # 200 images / 50 per batch
    assert out.epochs == (max(2, first) if stops_after == "first" else stops_after)
    assert out.best_epoch == 1 and out.val_acc == pytest.approx(0.9)
    assert any("kept epoch 1 (val score 0.9000)" in m for m in msgs)
    if recipe is CPU_RECIPE:
        assert first > 2  # the case is not vacuous


def test_weight_average_is_an_exponential_moving_average():
    model = torch.nn.Linear(2, 1)
    avg = WeightAverage(model, 0.5)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    avg.update(model)
    assert torch.allclose(avg.averaged()["weight"], w0 + 1.0)


def test_the_recipe_enters_the_training_key():
    from nas.evaluation.references import training_fields

    a = TrainConfig(epochs=3)
    b = dataclasses.replace(a, recipe=CPU_RECIPE)
    assert training_fields(a) != training_fields(b)
    assert training_fields(a)["recipe"]["name"] == "paper"
    assert "device" not in training_fields(a) and "progress" not in training_fields(a)


def test_presets_name_their_recipe_and_the_paper_preset_matches_the_docs():
    from pathlib import Path

    from nas.search import config as cfgmod

    paper = cfgmod.resolve({}, preset="paper", config_file=None, run_dir="").fitness
    quick = cfgmod.resolve({}, preset="quick", config_file=None, run_dir="").fitness
    assert paper.training_recipe() == PAPER_RECIPE and quick.training_recipe() == CPU_RECIPE
    assert paper.reference_config().recipe == PAPER_RECIPE
    assert quick.reference_config().patience == cfgmod.QUICK["reference_patience"]
    docs = (Path(__file__).parents[3] / "docs" / "howto.md").read_text()
    assert f"`reference_epochs = {paper.reference_epochs}`" in docs
    assert f"`reference_patience = {paper.reference_patience}`" in docs
    assert "--reference-epochs 100" in docs and paper.reference_epochs == 100
