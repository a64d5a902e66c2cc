"""CLDL terms (eq. 6, 8, 9, 10) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from defenses import create_defense
from defenses.cldl import (
    LabelConfusionModel,
    drop_max,
    gradient_diversity,
    jsd,
    label_diversity,
    soft_labels,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_jsd_of_known_distributions():
    assert float(jsd(t([1.0, 0.0]), t([0.0, 1.0]))[0]) == pytest.approx(math.log(2))
    assert float(jsd(t([0.3, 0.7]), t([0.3, 0.7]))[0]) == pytest.approx(0.0, abs=1e-12)
    # p = (.5, .5), q = (.9, .1), m = (.7, .3)
    kl_p = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    kl_q = 0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)
    got = float(jsd(t([0.5, 0.5]), t([0.9, 0.1]))[0])
    assert got == pytest.approx((kl_p + kl_q) / 2)
    assert float(jsd(t([0.9, 0.1]), t([0.5, 0.5]))[0]) == pytest.approx(got)  # symmetric


def test_soft_label_equation():
    c = t([0.2, 0.3, 0.5])
    s = soft_labels(c, torch.tensor([0]), gamma=3.0)[0]
    e = [math.exp(3.2), math.exp(0.3), math.exp(0.5)]
    assert s.tolist() == pytest.approx([v / sum(e) for v in e])
    # the non-maximal part, renormalised
    assert drop_max(s[None])[0].tolist() == pytest.approx(
        [e[1] / (e[1] + e[2]), e[2] / (e[1] + e[2])]
    )


def test_label_diversity_is_log_mean_exp_of_pairwise_jsd():
    s1, s2, s3 = t([0.8, 0.2, 0.0]), t([0.8, 0.0, 0.2]), t([0.8, 0.1, 0.1])
    two = label_diversity([s1, s2])
    assert float(two[0]) == pytest.approx(math.log(2))  # (1,0) vs (0,1)
    j13 = float(jsd(drop_max(s1), drop_max(s3))[0])
    three = float(label_diversity([s1, s2, s3])[0])
    assert three == pytest.approx(math.log((math.exp(math.log(2)) + 2 * math.exp(j13)) / 3))


def test_gradient_diversity_is_mean_absolute_cosine():
    g = t([1.0, 0.0], [-2.0, 0.0], [0.0, 5.0])[:, None, :]  # (k=3, N=1, D=2)
    assert float(gradient_diversity(g)[0]) == pytest.approx(1 / 3)  # |cos| = 1, 0, 0


def test_lcm_gives_distributions():
    lcm = LabelConfusionModel(num_classes=4, feature_dim=6, hidden=5)
    c = lcm(torch.randn(3, 6))
    assert c.shape == (3, 4)
    assert torch.allclose(c.sum(1), torch.ones(3))


def test_wrap_puts_lcm_inside_the_trained_module(factory):
    model = create_defense("cldl", k=2).wrap(factory, num_classes=3, input_shape=(1, 12, 12))
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"members", "aux"}
    assert model.aux.dense.out_features == 16  # the members' num_features
