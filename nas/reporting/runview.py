"""Read a run directory into the numbers a report shows (no torch, no models).

The event log (``events.jsonl``, DESIGN.md §8) is the source of truth: every evaluated child
is a ``child_finished`` line (id, generation, spectrum, metrics), every selection a
``replacement`` line, every generation a ``generation_finished`` line (its population ids).
From them :func:`load_run` rebuilds, per generation, the population and its statistics.
When a ``generation_finished`` line carries no population, it is replayed from the initial
population and the ``replacement`` lines (child ``id`` takes the place of ``replaced``).

Finalists are ranked (:func:`selection_fitness`) by the run's *fitness split*: under
``--fitness-split val`` (the default) by validation fitness, so the test split never chooses
a network and its numbers are only reported; under ``--fitness-split test`` by test fitness
(the paper's protocol, in which the test split is the fitness split). The final table of
``nas.evolve``, ``runs/<name>:best`` / ``:<rank>`` and the report all use this order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError
from nas.search import rundir
from nas.search.rundir import CONFIG, EVENTS, FINAL, POPULATION


@dataclass
class RunView:
    """What a report needs to know about a run.

    Attributes:
        path: the run directory.
        config: the ``config`` object of ``config.json`` (search / fitness / execution).
        children: child id -> its ``child_finished`` event.
        generations: per generation ``{"generation", "population": [ids]}``, in order.
        replacements: generation -> number of replacements.
        finalists: the final population, best first (:func:`selection_fitness`): dicts with
            ``id``, ``spectrum``, ``search_metrics`` (fitness split, during the search),
            ``metrics`` (test split after refinement when the run finished, else the search
            metrics), ``split`` (which) and ``rank_fitness`` (the number ranked by).
        finished: whether ``final.json`` exists (the search and refinement completed).
        ranked_by: ``"val"`` or ``"test"``, the run's fitness split (:func:`ranking_note`).
    """

    path: Path
    config: dict[str, Any]
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    generations: list[dict[str, Any]] = field(default_factory=list)
    replacements: dict[int, int] = field(default_factory=dict)
    finalists: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    ranked_by: str = "val"


def fitness_split_of(config: Any) -> str:
    """The fitness split of a run's configuration (``"val"`` unless it says ``"test"``)."""
    fit = config.get("fitness") if isinstance(config, dict) else None
    return "test" if isinstance(fit, dict) and fit.get("fitness_split") == "test" else "val"


def selection_fitness(search: dict[str, Any] | None, refined: dict[str, Any] | None,
                      fitness_split: str) -> float:
    """The fitness a finalist is ranked by: never a test number under ``--fitness-split val``.

    Args:
        search: the finalist's metrics from the search (on the fitness split).
        refined: its metrics after refinement (on the test split; under ``val`` they also
            carry ``val_fitness``, the refined network's validation fitness), or ``None``.
        fitness_split: the run's fitness split.

    Returns:
        ``val``: the mean validation fitness of the refinement's replicates when it trained
        several (a replicate that failed counts 0: an architecture that trains unreliably is
        worth less), else the refined validation fitness when measured, else the search
        fitness (also validation). ``test``: the refined test fitness, else the search fitness
        (also test).
    """
    search, refined = search or {}, refined or {}
    if fitness_split == "test":
        value = refined.get("fitness", search.get("fitness"))
    else:
        replicates = refined.get("replicates") or refined.get("draws")
        if isinstance(replicates, list) and len(replicates) > 1:
            return sum(float(r.get("val_fitness") or 0.0) for r in replicates) / len(replicates)
        value = refined.get("val_fitness")
        if value is None:
            value = search.get("fitness")
    return float(value or 0.0)


def ranking_note(fitness_split: str) -> str:
    """The sentence a finalist table states its order with."""
    if fitness_split == "test":
        return ("ranked by test fitness: --fitness-split test, the paper's protocol (the test "
                "split is also the fitness split)")
    return ("ranked by validation fitness (--fitness-split val; the mean over its replicates "
            "with --replicates); test numbers are reported only, never used to choose")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict, else an empty one (a hand-edited file reads as no metrics)."""
    return value if isinstance(value, dict) else {}


def read_events(path: Path) -> list[dict[str, Any]]:
    """Events of ``events.jsonl`` (:func:`nas.search.rundir.read_events`); a torn last line is
    ignored."""
    return rundir.read_events(path)[0]


def _population_ids(event: dict[str, Any]) -> list[str] | None:
    pop = event.get("population") or event.get("population_ids")
    if not pop:
        return None
    return [p if isinstance(p, str) else str(p.get("id")) for p in pop]


def _replay(events: list[dict[str, Any]],
            children: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-generation populations from the log (explicit ids, else replayed replacements)."""
    current = [cid for cid, ev in children.items() if int(ev.get("generation", 0)) == 0]
    gens, seen = [], set()
    for ev in events:
        if ev.get("type") == "replacement" and ev.get("replaced") in current:
            current[current.index(ev["replaced"])] = ev["id"]
        elif ev.get("type") == "generation_finished":
            g = int(ev.get("generation", len(gens)))
            ids = _population_ids(ev)
            if ids is not None:
                current = ids
            if g not in seen:
                gens.append({"generation": g, "population": list(current)})
                seen.add(g)
    return gens


def _final(path: Path, children: dict[str, dict[str, Any]],
           fitness_split: str) -> tuple[list[dict[str, Any]], bool]:
    """The final population (``final.json``, else ``population.json``), best first."""
    src, finished = (path / FINAL, True) if (path / FINAL).exists() else (path / POPULATION, False)
    if not src.exists():
        return [], False
    data = _read_json(src)
    items = data if isinstance(data, list) else (
        (data.get("population") or data.get("finalists") or data.get("members") or [])
        if isinstance(data, dict) else None)
    if not isinstance(items, list) or not all(
            isinstance(i, str) or (isinstance(i, dict) and isinstance(i.get("id"), str))
            for i in items):
        raise UserError(f"{src} is not a population (expected a list of members with an \"id\")")
    out = []
    for item in items:
        item = {"id": item} if isinstance(item, str) else dict(item)
        child = children.get(str(item.get("id")), {})
        search = _mapping(item.get("metrics")) or _mapping(child.get("metrics"))
        test = _mapping(item.get("test")) if finished else None
        out.append({**item, "spectrum": item.get("spectrum") or child.get("spectrum"),
                    "search_metrics": search, "metrics": test or search,
                    "split": "test" if test else "fitness",
                    "rank_fitness": selection_fitness(search, test, fitness_split)})
    out.sort(key=lambda m: -m["rank_fitness"])  # stable: population order on ties
    return out, finished


def load_run(path: str | Path) -> RunView:
    """Read a run directory; :class:`UserError` when it is missing or holds no results."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist")
    if not (path / CONFIG).exists() or not (path / EVENTS).exists():
        raise UserError(f"{path} is not a run directory (no {CONFIG} / {EVENTS})")
    config = _read_json(path / CONFIG)
    config = config.get("config", config) if isinstance(config, dict) else {}
    fitness = config.get("fitness") if isinstance(config, dict) else None
    if isinstance(fitness, dict) and isinstance(fitness.get("plugins"), list):
        from nas.plugins import load_plugins

        load_plugins(fitness["plugins"])  # the run's datasets, references, defenses
    events = read_events(path / EVENTS)
    children = {str(e["id"]): e for e in events if e.get("type") == "child_finished" and "id" in e}
    if not children:
        raise UserError(f"{path} holds no results yet (no finished child in {EVENTS})")
    view = RunView(path=path, config=config, children=children,
                   ranked_by=fitness_split_of(config))
    view.generations = _replay(events, children)
    for ev in events:
        if ev.get("type") == "replacement":
            g = int(ev.get("generation", 0))
            view.replacements[g] = view.replacements.get(g, 0) + 1
    view.finalists, view.finished = _final(path, children, view.ranked_by)
    if not view.finalists and view.generations:
        last = view.generations[-1]["population"]
        view.finalists = sorted(
            ({"id": c, "spectrum": children[c].get("spectrum"),
              "metrics": children[c].get("metrics", {}),
              "search_metrics": children[c].get("metrics", {}), "split": "fitness",
              "rank_fitness": selection_fitness(children[c].get("metrics"), None, view.ranked_by)}
             for c in last if c in children),
            key=lambda m: -m["rank_fitness"])
    return view


def generation_stats(view: RunView) -> list[dict[str, float]]:
    """Per generation: best / mean fitness and mean / fittest clean and adversarial accuracy."""
    rows = []
    for gen in view.generations:
        metrics = [view.children[c].get("metrics", {}) for c in gen["population"]
                   if c in view.children]
        if not metrics:
            continue
        fit = np.array([float(m.get("fitness", 0.0)) for m in metrics])
        clean = np.array([float(m.get("clean_acc", np.nan)) for m in metrics])
        adv = np.array([float(m.get("adv_acc", np.nan)) for m in metrics])
        b = int(fit.argmax())
        rows.append({"generation": gen["generation"], "fitness_best": float(fit[b]),
                     "fitness_mean": float(fit.mean()), "clean_mean": float(np.nanmean(clean)),
                     "adv_mean": float(np.nanmean(adv)), "clean_best": float(clean[b]),
                     "adv_best": float(adv[b])})
    return rows


def population_spectra(view: RunView) -> tuple[list[int], list[list[list[int]]]]:
    """Generation numbers and, per generation, the spectra of the population members."""
    gens, spectra = [], []
    for gen in view.generations:
        specs = [list(view.children[c]["spectrum"]) for c in gen["population"]
                 if c in view.children and view.children[c].get("spectrum")]
        if specs:
            gens.append(gen["generation"])
            spectra.append(specs)
    return gens, spectra


def _weights_in(child: Path) -> Path | None:
    for cand in (child / "refined" / "weights.pt", child / "weights.pt"):
        if cand.exists():
            return cand
    return None


def child_files(view: RunView, child_id: str) -> tuple[Path, Path | None]:
    """``genome.json`` and the best weights of a child (refined ones first).

    A child that reused an identical architecture's result has no weights of its own; the
    weights of the child it reused are returned instead.
    """
    base = view.path / "children" / child_id
    genome = base / "genome.json"
    if not genome.exists():
        raise UserError(f"{genome} is missing; the run directory is incomplete")
    weights = _weights_in(base)
    source = view.children.get(child_id, {}).get("reused_from")
    if weights is None and source:
        weights = _weights_in(view.path / "children" / str(source))
    return genome, weights


def finalist_genome(spec: str) -> Path | None:
    """Resolve ``runs/<name>:best`` (or ``:<rank>``, ``:<child id>``) to a finalist's genome.json.

    Returns ``None`` when ``spec`` does not have that form (``<dir>:<selector>`` with an
    existing directory), so callers can try other interpretations; raises :class:`UserError`
    for a run directory whose selector matches no finalist.
    """
    run_dir, sep, selector = spec.rpartition(":")
    if not sep or not run_dir or not Path(run_dir).is_dir():
        return None
    view = load_run(run_dir)
    if not view.finalists:
        raise UserError(f"{run_dir} has no final population yet")
    if selector == "best":
        chosen = view.finalists[0]
    elif selector.isdigit() and 1 <= int(selector) <= len(view.finalists):
        chosen = view.finalists[int(selector) - 1]
    else:
        match = [f for f in view.finalists if f["id"] == selector]
        if not match:
            ids = ", ".join(f["id"] for f in view.finalists)
            raise UserError(f"{spec}: no finalist {selector!r}; "
                            f"use best, 1-{len(view.finalists)} or one of {ids}")
        chosen = match[0]
    return child_files(view, chosen["id"])[0]


def ranked(final: dict[str, Any]) -> list[dict[str, Any]]:
    """The final population best first, by :func:`selection_fitness` (validation
    fitness under ``--fitness-split val``; test fitness only under ``--fitness-split test``)."""
    split = final.get("fitness_split", "val")
    return sorted(final["population"],
                  key=lambda m: -selection_fitness(m.get("metrics"), m.get("test"), split))
