"""Student-t intervals and paired differences checked against hand computations."""

from __future__ import annotations

import math

import pytest

from nas.evaluation.stats import paired_difference, t_interval

# Two-sided 95 % Student-t quantiles t_{0.975, df} from a printed t table (not from scipy).
T_TABLE = {1: 12.706, 2: 4.303, 4: 2.776}


def test_interval_of_a_hand_made_sample() -> None:
    # 1..5: mean 3, sample variance ((4 + 1 + 0 + 1 + 4) / 4) = 2.5.
    iv = t_interval([1, 2, 3, 4, 5])
    half = T_TABLE[4] * math.sqrt(2.5) / math.sqrt(5)  # 1.963
    assert iv.n == 5 and iv.mean == pytest.approx(3.0)
    assert iv.sd == pytest.approx(math.sqrt(2.5))
    assert iv.low == pytest.approx(3.0 - half, abs=1e-3)
    assert iv.high == pytest.approx(3.0 + half, abs=1e-3)


def test_two_values_use_the_wide_quantile() -> None:
    iv = t_interval([0.80, 0.84])  # mean 0.82, sd 0.02 * sqrt(2) = 0.028284
    half = T_TABLE[1] * 0.028284271 / math.sqrt(2)  # 0.25412
    assert iv.half_width == pytest.approx(half, abs=1e-3)


def test_paired_difference_removes_the_shared_seed_effect() -> None:
    # Each seed moves both methods alike; a is 0.02-0.03 better on every seed.
    a = [0.70, 0.80, 0.90]
    b = [0.68, 0.77, 0.88]
    d = paired_difference(a, b)  # differences 0.02, 0.03, 0.02: mean 0.07 / 3
    sd = math.sqrt((2 * (0.02 - 0.07 / 3) ** 2 + (0.03 - 0.07 / 3) ** 2) / 2)  # 0.005774
    assert d.mean == pytest.approx(0.07 / 3)
    assert d.low == pytest.approx(0.07 / 3 - T_TABLE[2] * sd / math.sqrt(3), abs=1e-4)
    assert d.verdict() == "higher"
    # unpaired, the seed spread swamps the same difference
    assert t_interval(a).low < t_interval(b).mean


def test_verdicts() -> None:
    assert paired_difference([0.5, 0.6, 0.55], [0.52, 0.57, 0.56]).verdict() == \
        "no difference shown"
    assert paired_difference([0.1, 0.2, 0.15], [0.3, 0.35, 0.33]).verdict() == "lower"


def test_one_value_has_no_interval_and_says_so() -> None:
    iv = paired_difference([0.9], [0.8])
    assert iv.mean == pytest.approx(0.1) and iv.low is None and iv.high is None
    assert iv.verdict() == "undefined (n=1)"
    assert "no interval" in iv.text()
    assert iv.to_dict()["half_width"] is None
    assert t_interval([]).n == 0


def test_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="nan"):
        t_interval([1.0, float("nan")])
