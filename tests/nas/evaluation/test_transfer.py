"""Transfer matrix and fooling rates on networks whose answer is known."""

from __future__ import annotations

import math

import torch
from torch import nn

from nas.evaluation.attacks import AttackSettings
from nas.evaluation.transfer import accuracy, fooling_rates, predict, transfer_matrix


class Constant(nn.Module):
    """Ignores its input: always predicts ``cls`` (attacks cannot move it)."""

    def __init__(self, cls: int, k: int = 3) -> None:
        super().__init__()
        self.cls, self.k = cls, k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (torch.zeros(x.shape[0], self.k) + 0 * self.dummy
                  + 0 * x.flatten(1).sum(1, keepdim=True))
        logits[:, self.cls] = 1.0
        return logits


def _linear(seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 16, generator=gen))
        model[1].bias.zero_()
    return model


def _data(model: nn.Module, n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images labelled by ``model`` itself, so it is 100% accurate on them."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=gen, dtype=torch.uint8)
    return x, predict(model, x)


FGSM = AttackSettings("fgsm", eps=0.3, step_size=0.3, steps=1)
PGD = AttackSettings("pgd-linf", eps=0.3, step_size=0.05, steps=10)


def test_predict_and_accuracy_handle_uint8_and_float() -> None:
    model = _linear(0)
    x, y = _data(model)
    assert accuracy(model, x, y) == 1.0
    assert torch.equal(predict(model, x), predict(model, x.float() / 255, batch_size=7))
    assert accuracy(Constant(1), x, y) == float((y == 1).float().mean())


def test_transfer_matrix_white_box_vs_input_blind_target() -> None:
    source = _linear(0)
    x, y = _data(source)
    blind = Constant(0)
    table = transfer_matrix({"src": source}, {"src": source, "blind": blind, "other": _linear(5)},
                            x, y, PGD)
    assert set(table) == {"src"} and set(table["src"]) == {"src", "blind", "other"}
    assert table["src"]["src"] < 0.2  # white-box attack on a linear model
    assert table["src"]["blind"] == accuracy(blind, x, y)  # an input-blind model is unaffected
    assert all(0.0 <= v <= 1.0 for v in table["src"].values())


def test_fooling_rates_count_only_images_both_classify_correctly() -> None:
    ref = _linear(0)
    x, y = _data(ref)
    blind = Constant(2)
    rates = fooling_rates(ref, {"ref": ref, "blind": blind}, x, y, [FGSM, PGD])
    assert list(rates) == ["fgsm", "pgd-linf"]
    for row in rates.values():
        assert row["blind"].eligible == int((y == 2).sum())  # ref is 100% accurate here
        assert row["blind"].fooled == 0 and row["blind"].rate == 0.0
        assert row["ref"].eligible == len(y)
        assert row["ref"].rate > 0.8  # white-box
        assert math.isclose(row["ref"].rate, row["ref"].fooled / row["ref"].eligible)


def test_fooling_rate_nan_without_eligible_images() -> None:
    ref = _linear(0)
    x, y = _data(ref)
    x, y = x[y != 1], y[y != 1]
    rates = fooling_rates(ref, {"never": Constant(1)}, x, y, [FGSM])
    assert rates["fgsm"]["never"].eligible == 0 and math.isnan(rates["fgsm"]["never"].rate)
