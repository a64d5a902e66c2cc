"""Means and paired differences over seeds or replicates, with 95 % Student-t intervals.

A number measured once on one seed says little: in this project the training seed alone moves
a method's test fitness by several points (docs/lab-log.md). A reviewer reads a comparison
as a mean over ``n`` independent runs with its confidence interval::

    mean = (1/n) sum_i x_i        s = sqrt( sum_i (x_i - mean)^2 / (n - 1) )
    half = t_{0.975, n-1} * s / sqrt(n)        interval = [mean - half, mean + half]

(Student 1908; the t quantile because ``s`` is estimated from the same ``n`` values). A
*paired* difference (:func:`paired_difference`) applies the same formula to the per-seed
differences ``a_i - b_i`` of two methods measured on the same seed (same data subset, same
reference, same test images), which removes the variation the pair shares. When the
interval contains zero the verdict is "no difference shown": the data do not tell which method
is better, which is not the same as "they are equal". With ``n = 1`` there is no spread to
estimate: the interval is undefined (``None``) and said so, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats as _scipy_stats

#: The confidence level of every interval the project reports.
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its two-sided Student-t interval.

    Attributes:
        mean: the sample mean (``nan`` for no values).
        low, high: the interval's bounds; ``None`` when ``n < 2`` (undefined).
        n: how many values.
        sd: the sample standard deviation (``None`` when ``n < 2``).
        level: the confidence level (0.95).
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None
    level: float = LEVEL

    @property
    def half_width(self) -> float | None:
        """Half the interval's width, ``None`` when undefined."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def verdict(self) -> str:
        """What the interval of a *difference* says about its sign.

        ``"higher"`` / ``"lower"`` when the whole interval lies above / below zero, ``"no
        difference shown"`` when it contains zero, ``"undefined (n=1)"`` (or ``n=0``) when there
        is no interval.
        """
        if self.low is None or self.high is None:
            return f"undefined (n={self.n})"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "no difference shown"

    def text(self, scale: float = 1.0, digits: int = 3) -> str:
        """``0.812 [0.790, 0.834] (n=5)``; ``0.812 (n=1, no interval)`` when undefined."""
        m = f"{self.mean * scale:.{digits}f}"
        if self.low is None or self.high is None:
            return f"{m} (n={self.n}, no interval)"
        return f"{m} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}] (n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with the verdict and the half width."""
        return {**asdict(self), "half_width": self.half_width, "verdict": self.verdict()}


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` with its two-sided Student-t interval (module doc).

    ``nan`` values are refused: a failed run must be counted (fitness 0) or left out by the
    caller, never silently dropped here.

    Raises:
        ValueError: a ``nan`` value or a level outside (0, 1).
    """
    xs = [float(v) for v in values]
    if any(math.isnan(v) for v in xs):
        raise ValueError("values contain nan")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), not {level}")
    n = len(xs)
    if n == 0:
        return Interval(float("nan"), None, None, 0, None, level)
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(mean, None, None, 1, None, level)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in xs) / (n - 1))
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, df=n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level)


def paired_difference(a: Sequence[float], b: Sequence[float],
                      level: float = LEVEL) -> Interval:
    """The mean of ``a_i - b_i`` with its Student-t interval (paired by position: entry ``i``
    of both is the same seed).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths (an unpaired value has no partner).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal lengths, not {len(a)} and {len(b)}")
    return t_interval([float(x) - float(y) for x, y in zip(a, b, strict=True)], level)


def mean_pm(values: Sequence[float], digits: int = 4) -> str:
    """``"0.6000 +- 0.0412"``: the mean and the half-width of its 95 % interval (the mean
    alone for one value)."""
    iv = t_interval(values)
    hw = iv.half_width
    return f"{iv.mean:.{digits}f}" + (f" +- {hw:.{digits}f}" if hw is not None else "")
