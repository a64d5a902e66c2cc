"""The trade-off front of a search: clean accuracy, transferred accuracy, size.

The search ranks children by one number, fitness = min(clean, transferred) (paper eq. 4),
which hides the trade-off a user picks from. Every evaluated child is also a point in three
objectives: clean accuracy (maximise), transferred-adversarial accuracy (maximise) and size
(parameters or multiply-accumulates per image, minimise). Its non-dominated set is computed
with DEAP's ``tools.sortNondominated`` and measured with DEAP's hypervolume
(``deap.benchmarks.tools.hypervolume``, computed by moocore).

Hypervolume. Sizes are divided by ``size_ref`` (default: 1.1 x the largest size among the
points, fixed for a run so that every generation is measured in the same box), so every
objective lies in [0, 1]; the reference point is (clean 0, adversarial 0, size 1) and the
hypervolume is the fraction of the unit cube [0, 1]^3 that the front dominates:

```
HV = vol( union over front points p of [0, clean_p] x [0, adv_p] x [size_p / size_ref, 1] )
```
Per generation, the front of every child evaluated up to and including that generation is
measured (so the curve never decreases).

Which children count: those that finished with status ``ok``; a child that reused an identical
architecture's result (``reused``) is the same point as its source and is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deap import base, tools
from deap.benchmarks.tools import hypervolume as deap_hypervolume

#: The size measures a front can use: metric key of a ``child_finished`` event.
SIZES = {"params": "params", "macs": "flops"}


@dataclass(frozen=True)
class Point:
    """One evaluated child in objective space (accuracies are fractions in [0, 1])."""

    id: str
    generation: int
    clean: float
    adv: float
    size: float


class _Objectives(base.Fitness):
    """(clean, adv, size): maximise, maximise, minimise (a plain subclass: no creator set-up)."""

    weights = (1.0, 1.0, -1.0)


class _Individual:
    """What ``tools.sortNondominated`` sorts: a point and its fitness."""

    __slots__ = ("fitness", "point")

    def __init__(self, point: Point, size_ref: float) -> None:
        self.point = point
        self.fitness = _Objectives((point.clean, point.adv, point.size / size_ref))


def points_from_children(children: Iterable[Mapping[str, Any]],
                         size: str = "params") -> list[Point]:
    """Points of ``child_finished`` events (ok, not reused, with the metrics needed)."""
    if size not in SIZES:
        raise ValueError(f"unknown size measure {size!r}; valid: {', '.join(SIZES)}")
    out = []
    for ev in children:
        m = ev.get("metrics") or {}
        if ev.get("reused") or m.get("status", "ok") != "ok":
            continue
        values = (m.get("clean_acc"), m.get("adv_acc"), m.get(SIZES[size]))
        if any(v is None for v in values):
            continue
        out.append(Point(str(ev["id"]), int(ev.get("generation", 0)), *(float(v) for v in values)))
    return out


def default_size_ref(points: Sequence[Point]) -> float:
    """1.1 x the largest size (1.0 for no points): the size bound of the hypervolume box."""
    largest = max((p.size for p in points), default=0.0)
    return 1.1 * largest if largest > 0 else 1.0


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The non-dominated points (DEAP's ``sortNondominated``, first front), in input order."""
    if not points:
        return []
    inds = [_Individual(p, default_size_ref(points)) for p in points]
    first = tools.sortNondominated(inds, len(inds), first_front_only=True)[0]
    keep = {id(i) for i in first}
    return [i.point for i in inds if id(i) in keep]


def hypervolume(points: Sequence[Point], *, size_ref: float) -> float:
    """Fraction of [0, 1]^3 dominated by ``points`` (see the module docstring); 0 for none."""
    if not points:
        return 0.0
    inds = [_Individual(p, size_ref) for p in points]
    # DEAP minimises -wvalues = (-clean, -adv, size/size_ref): the reference point is (0, 0, 1).
    return float(deap_hypervolume(inds, ref=[0.0, 0.0, 1.0]))


@dataclass
class Front:
    """The front of a run and its hypervolume per generation.

    Attributes:
        size: ``params`` or ``macs``.
        size_ref: sizes are divided by it in the hypervolume.
        points: every evaluated child counted.
        front: the non-dominated ones (best clean accuracy first).
        hypervolume: per generation ``{"generation", "hypervolume", "front_size"}``, cumulative.
    """

    size: str
    size_ref: float
    points: list[Point]
    front: list[Point]
    hypervolume: list[dict[str, float]]

    @property
    def ids(self) -> list[str]:
        """Child ids on the front."""
        return [p.id for p in self.front]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``results.json``)."""
        return {"objectives": ["clean_acc (max)", "adv_acc (max)", f"{self.size} (min)"],
                "size": self.size, "size_ref": self.size_ref,
                "reference_point": {"clean_acc": 0.0, "adv_acc": 0.0, self.size: self.size_ref},
                "front": [asdict(p) for p in self.front],
                "points": [asdict(p) for p in self.points],
                "hypervolume": self.hypervolume}


def compute_front(children: Iterable[Mapping[str, Any]], size: str = "params",
                  size_ref: float | None = None) -> Front:
    """The front of the children (``child_finished`` events) and its hypervolume per generation."""
    points = points_from_children(children, size)
    ref = size_ref if size_ref is not None else default_size_ref(points)
    curve = []
    for g in sorted({p.generation for p in points}):
        so_far = pareto_front([p for p in points if p.generation <= g])
        curve.append({"generation": g, "hypervolume": hypervolume(so_far, size_ref=ref),
                      "front_size": len(so_far)})
    front = sorted(pareto_front(points), key=lambda p: (-p.clean, -p.adv, p.size))
    return Front(size=size, size_ref=ref, points=points, front=front, hypervolume=curve)


def run_front(run_dir: str | Path, size: str = "params") -> Front:
    """The front of every child evaluated in a run directory (from ``events.jsonl``)."""
    from nas.search.rundir import EVENTS, read_events

    events, _ = read_events(Path(run_dir) / EVENTS)
    return compute_front((e for e in events if e.get("type") == "child_finished"), size)


__all__ = ["SIZES", "Front", "Point", "compute_front", "hypervolume", "pareto_front",
           "points_from_children", "run_front"]
