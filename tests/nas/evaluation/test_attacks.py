"""Attacks against known answers: linear models, eps-balls, loss ordering, side effects."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.evaluation.attacks import (
    AttackSettings,
    list_attacks,
    resolve_attack,
    run_attack,
    transferred_set,
)

LINF = ("fgsm", "bim", "pgd-linf", "mim", "mi-fgsm")


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))


def test_registry_holds_the_seven_attacks():
    assert list_attacks() == ["bim", "di-mi-fgsm", "fgsm", "mi-fgsm", "mim", "pgd-l2", "pgd-linf"]


@pytest.mark.parametrize("name", LINF)
def test_linf_attack_on_a_linear_model_moves_along_the_weight_sign(name):
    model = _linear()
    w = model[1].weight.detach()  # (2, 16)
    x = torch.full((3, 1, 4, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    eps = 0.1
    s = AttackSettings(name, eps, eps / 4, 12)
    x_adv = run_attack(model, x, y, s, torch.Generator().manual_seed(0))
    # d CE / dx for label 0 is p1 * (w1 - w0): the attack goes to x + eps * sign(w1 - w0)
    expected = x + eps * (w[1] - w[0]).sign().view(1, 1, 4, 4)
    assert torch.allclose(x_adv, expected, atol=1e-6)


@pytest.mark.parametrize("name", list_attacks())
def test_results_stay_in_the_eps_ball_and_the_box(name):
    model = _mlp()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 4, 4, generator=g)
    x[:4] = 0.0
    x[4:8] = 1.0
    y = torch.randint(0, 3, (16,), generator=g)
    s = resolve_attack(name, "mnist", eps=0.3 if name != "pgd-l2" else 1.0, steps=7)
    x_adv = run_attack(model, x, y, s, g)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    if name == "pgd-l2":
        assert (delta.norm(dim=1) <= s.eps * (1 + 1e-5)).all()
    else:
        assert delta.abs().max() <= s.eps * (1 + 1e-6)
    assert delta.abs().max() > 0  # it moved


def test_pgd_reaches_at_least_the_fgsm_loss():
    model = _mlp(3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    eps = 0.2
    fgsm = run_attack(model, x, y, AttackSettings("fgsm", eps, eps, 1))
    pgd = run_attack(model, x, y, AttackSettings("pgd-linf", eps, eps / 4, 20), g)
    with torch.no_grad():
        l_clean = F.cross_entropy(model(x), y)
        l_fgsm, l_pgd = F.cross_entropy(model(fgsm), y), F.cross_entropy(model(pgd), y)
    assert l_fgsm > l_clean
    assert l_pgd >= l_fgsm - 1e-6


@pytest.mark.parametrize("name", list_attacks())
@pytest.mark.parametrize("training", [True, False])
def test_attacks_leave_mode_and_parameters_untouched(name, training):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model.train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    run_attack(model, x, y, resolve_attack(name, "mnist", steps=3), torch.Generator())
    assert model.training is training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # includes BN running statistics (eval mode)
    assert all(p.grad is None for p in model.parameters())


def test_resolve_attack_defaults_and_overrides():
    mn = resolve_attack("pgd-linf", "fashion-mnist")
    cf = resolve_attack("pgd-linf", "cifar10")
    assert 0.1 <= mn.eps <= 0.3 and cf.eps == pytest.approx(8 / 255)
    assert resolve_attack("fgsm", "mnist").steps == 1
    assert resolve_attack("fgsm", "mnist", eps=0.2).step_size == 0.2
    over = resolve_attack("bim", "mnist", eps=0.05, step_size=0.01, steps=3)
    assert (over.eps, over.step_size, over.steps) == (0.05, 0.01, 3)
    assert resolve_attack("pgd-l2", "mnist").eps > 1.0  # L2 radius, not L-inf


def test_transferred_set_is_generated_once_and_cached(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = (torch.rand(20, 1, 4, 4) * 255).to(torch.uint8)
    y = torch.randint(0, 3, (20,))
    s = AttackSettings("pgd-linf", 0.1, 0.05, 2)
    msgs: list[str] = []
    a = transferred_set(model, "key", "val", x, y, s, tmp_path, log=msgs.append)
    files = list((tmp_path / "adversarial").glob("*.pt"))
    assert len(files) == 1  # one file holds the set and its description
    with torch.no_grad():
        model[1].weight.add_(1.0)  # a cache hit must not recompute with the new weights
    b = transferred_set(model, "key", "val", x, y, s, tmp_path, log=msgs.append)
    assert torch.equal(a, b) and len(msgs) == 1
    c = transferred_set(model, "key", "test", x, y, s, tmp_path, log=msgs.append)
    assert len(msgs) == 2 and c.shape == (20, 1, 4, 4)
