"""What a search costs in training steps, and in hours from a measured step time.

A search's cost is the training of its children (DESIGN.md §10), so its length is

    hours = (child steps + refinement steps) x t_GM / (gain_k x devices) / 3600
            + reference steps x t_CE / 3600

with ``child steps = sum over children of epochs_at(generation) x ceil(train_size / batch)``
(paper §4: 20 epochs, +5 every 10 generations), ``t_GM`` the measured time of one GM step of a
child trained alone on one device, ``gain_k`` the measured throughput gain of ``k`` children
sharing one device (children per hour at ``k`` over children per hour at 1) and ``t_CE`` one
plain cross-entropy step of the reference. The refinement counts at its cap (``refine_epochs``
per finalist), so with ``refine_patience`` the figure is an upper bound; early rejection and
reuse of already-seen architectures only shorten it. ``t_GM`` is measured on he-ref-sized
children (``nas.bench``); evolved children grow over the generations, which this leaves out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nas.search.config import SearchSettings


@dataclass(frozen=True)
class SearchSteps:
    """Training steps of one search (counts, not times).

    Attributes:
        children: children trained (the initial population or warm-start samples included).
        child_epochs: their summed epochs.
        child_steps: their summed optimisation steps.
        refine_steps: the refinement's steps at its cap.
        reference_steps: the reference's CE steps at its cap (``reference_epochs``).
    """

    children: int
    child_epochs: int
    child_steps: int
    refine_steps: int
    reference_steps: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def search_steps(search: SearchSettings, *, train_size: int, batch_size: int,
                 reference_epochs: int = 0) -> SearchSteps:
    """The :class:`SearchSteps` of ``search`` on ``train_size`` images in batches of
    ``batch_size`` (every child trained, none reused or rejected)."""
    per_epoch = math.ceil(train_size / batch_size)
    counts = [(max(search.population, search.init_samples), search.epochs_at(0))]
    counts += [(search.population * search.children, search.epochs_at(t))
               for t in range(1, search.generations + 1)]
    epochs = sum(n * e for n, e in counts)
    return SearchSteps(children=sum(n for n, _ in counts), child_epochs=epochs,
                       child_steps=epochs * per_epoch,
                       refine_steps=search.population * search.refine_epochs * per_epoch,
                       reference_steps=reference_epochs * per_epoch)


def expected_hours(steps: SearchSteps, *, gm_step_s: float, plain_step_s: float = 0.0,
                   gain: float = 1.0, devices: int = 1) -> float:
    """Hours of a search (module formula) from measured step times and sharing gain."""
    gm = (steps.child_steps + steps.refine_steps) * gm_step_s / (max(gain, 1e-9) * devices)
    return (gm + steps.reference_steps * plain_step_s) / 3600.0


def preset_steps(preset: str, **overrides: Any) -> SearchSteps:
    """The :class:`SearchSteps` of a preset of :mod:`nas.search.config` (with ``overrides``)."""
    from nas.search.config import build

    cfg = build({**_preset(preset), **overrides}, run_dir="")
    return search_steps(cfg.search, train_size=cfg.fitness.train_size,
                        batch_size=cfg.fitness.batch_size,
                        reference_epochs=cfg.fitness.reference_epochs)


def _preset(preset: str) -> dict[str, Any]:
    from nas.search.config import preset_values

    return preset_values(preset)
