"""The training loop's part of free adversarial training: a defense's ``replays`` and
``DefenseOutput.grad_inputs`` (nas.evaluation.training.train_step), through the real loop."""

from __future__ import annotations

import torch

from defenses import Adversary, create_defense
from nas.evaluation.recipe import get_recipe
from nas.evaluation.training import TrainConfig, TrainData, train


def test_free_at_trains_through_the_loop_with_a_one_cycle_schedule(synthetic_splits,
                                                                   small_net_factory):
    """Replays are optimizer steps within one minibatch: the one-cycle schedule (which refuses
    steps past its total) and the step counter advance once per minibatch; the radius is the
    one the loop's adversary names."""
    x, y = synthetic_splits.x_train, synthetic_splits.y_train
    defense = create_defense("free-at", replays=3)
    config = TrainConfig(epochs=2, batch_size=50, recipe=get_recipe("cpu"), device="cpu")
    adversary = Adversary(lambda model, xb, yb: xb, eps=0.05)
    outcome = train(small_net_factory, defense, TrainData(x, y, 10, adversary=adversary),
                    config=config, seed=0, log=lambda _m: None)
    assert outcome.status == "ok"
    assert outcome.steps == 2 * -(-len(y) // 50)
    assert outcome.logs["eps"] == 0.05
    delta = defense.perturbation
    assert float(delta.abs().max()) <= 0.05 + 1e-7 and float(delta.abs().max()) > 0
    plain = train(small_net_factory, create_defense("none"), TrainData(x, y, 10), config=config,
                  seed=0, log=lambda _m: None)
    moved = [float((a - b).abs().max()) for a, b in
             zip(outcome.model.state_dict().values(), plain.model.state_dict().values(),
                 strict=True) if a.is_floating_point()]
    assert max(moved) > 0  # the replays trained other weights than plain CE's
    assert torch.isfinite(torch.tensor(moved)).all()
