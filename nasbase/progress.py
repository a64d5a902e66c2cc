"""Timed stages: one line per long stage with its measured time, for interactive terminals and
non-interactive logs alike (tqdm bars come on top where stderr is a terminal).

Used by the fitness preparation (reference, transferred sets, reference gradients), the search
driver and the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Stages:
    """Times named stages: one line per stage with its measured time.

    ``with stages("baselines"): ...`` logs ``stage baselines: 12.3 s`` when the block ends
    and keeps the time in :attr:`times` (the report shows them on its page and in
    ``results.json``).
    """

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log, self.times = log, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - start, 2)
        self.log(f"stage {name}: {self.times[name]:.1f} s")
