"""The one training loop: learning, determinism, divergence, reference-gradient cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses import create_defense
from defenses.base import Defense, DefenseOutput
from nas.errors import UserError
from nas.evaluation.recipe import PAPER_RECIPE
from nas.evaluation.training import (
    CachedReferenceGrad,
    LiveReferenceGrad,
    TrainConfig,
    TrainData,
    build_context,
    input_gradients,
    predict,
    reference_gradients,
    resolve_device,
    train,
)


class NanLoss(Defense):
    name = "nan-test"

    def loss(self, model, batch, ctx):
        logits = model(batch.x)
        return DefenseOutput(loss=logits.sum() * float("nan"), logits=logits)


def _train(factory, splits, defense="none", seed=0, epochs=2, **needs):
    return train(factory, create_defense(defense) if isinstance(defense, str) else defense,
                 TrainData(splits.x_train, splits.y_train, 10, **needs),
                 config=TrainConfig(epochs=epochs, batch_size=50,
                                    recipe=PAPER_RECIPE.with_lr(3e-3), device="cpu"), seed=seed)


def test_training_learns_and_is_deterministic_per_seed(small_net_factory, synthetic_splits):
    s = synthetic_splits
    state = torch.random.get_rng_state()
    a = _train(small_net_factory, s, epochs=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert a.status == "ok" and a.steps == 16 and not a.model.training
    acc = (predict(a.model, s.x_val) == s.y_val).float().mean()
    assert acc > 0.2  # chance is 0.1
    b = _train(small_net_factory, s, epochs=4)
    c = _train(small_net_factory, s, epochs=4, seed=1)
    wa, wb, wc = (o.model.fc.weight for o in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


class DropoutNet(nn.Module):
    """A small network whose training draws dropout masks from the global generator."""

    def __init__(self):
        super().__init__()
        self.fc1, self.drop, self.fc = nn.Linear(28 * 28, 32), nn.Dropout(0.5), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.drop(F.relu(self.fc1(x.flatten(1)))))


def test_dropout_depends_on_the_seed_not_on_what_the_process_ran_before(synthetic_splits):
    s = synthetic_splits
    torch.manual_seed(123)
    a = _train(DropoutNet, s, epochs=2)
    torch.rand(1000)  # another global state before the next training
    state = torch.random.get_rng_state()
    b = _train(DropoutNet, s, epochs=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's state is untouched
    c = _train(DropoutNet, s, epochs=2, seed=1)
    assert torch.equal(a.model.fc.weight, b.model.fc.weight)
    assert not torch.equal(a.model.fc.weight, c.model.fc.weight)


def test_only_networks_with_dropout_change_their_reference_key(synthetic_splits):
    from nas.evaluation.references import reference_key

    training = {"epochs": 1, "seed": 0}
    assert reference_key("squeezenet1_1", synthetic_splits, training)["dropout"] == "seeded"
    assert "dropout" not in reference_key("he-ref", synthetic_splits, training)


def test_non_finite_loss_is_reported_as_diverged(small_net_factory, synthetic_splits):
    out = _train(small_net_factory, synthetic_splits, defense=NanLoss())
    assert out.status == "diverged" and "non-finite" in out.reason and out.steps == 0


def test_gm_trains_through_the_loop_with_cached_reference_gradients(small_net_factory,
                                                                   synthetic_splits):
    s = synthetic_splits
    torch.manual_seed(5)
    reference = small_net_factory().eval()
    grads = reference_gradients(reference, s.x_train, s.y_train, batch_size=64)
    out = _train(small_net_factory, s, defense="gm", epochs=1,
                 reference_grad=CachedReferenceGrad(grads, torch.device("cpu")))
    assert out.status == "ok" and "gm_cos" in out.logs


def test_reference_gradients_match_live_ones_and_restore_mode(small_net_factory,
                                                             synthetic_splits):
    s = synthetic_splits
    reference = small_net_factory().train()
    grads = reference_gradients(reference, s.x_train[:30], s.y_train[:30], batch_size=8)
    assert reference.training  # mode restored, gradients taken in eval mode
    idx = torch.tensor([3, 17, 29])
    x = s.x_train[idx].float() / 255
    live = LiveReferenceGrad(reference)(x, s.y_train[idx], idx)
    cached = CachedReferenceGrad(grads, torch.device("cpu"))(x, s.y_train[idx], idx)
    assert torch.allclose(live, cached, atol=1e-6)
    # summed CE: each sample's gradient equals its own single-sample gradient (no 1/N)
    single = input_gradients(reference, x[:1], s.y_train[idx][:1])
    assert torch.allclose(single, cached[:1], atol=1e-6)
    assert all(p.grad is None for p in reference.parameters())


def test_a_missing_need_is_an_error():
    with pytest.raises(ValueError, match="reference_grad"):
        build_context(create_defense("gm"), device=torch.device("cpu"),
                      generator=torch.Generator())


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UserError):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            resolve_device("cuda")


def test_predict_accepts_uint8_and_float_and_restores_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).train()
    x = (torch.rand(7, 1, 2, 2) * 255).to(torch.uint8)
    p8, pf = predict(model, x, batch_size=3), predict(model, x.float() / 255, batch_size=3)
    assert torch.equal(p8, pf) and p8.shape == (7,) and model.training
    assert torch.equal(p8, model(x.float() / 255).argmax(1))
    assert F.softmax(model(x.float()), 1).shape == (7, 3)
    grad_modes = []
    model.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    predict(model, x, batch_size=3)
    assert grad_modes == [False] * 3  # evaluation records no autograd graph
