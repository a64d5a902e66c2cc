"""The cells of a study (:mod:`nas.study`): one search run or one baseline, reused when done.

A search cell is a run folder of :mod:`nas.search.driver`: complete when it holds
``final.json``, resumed (:func:`nas.api.resume`: nothing finished is trained again) when it
holds a ``config.json`` only, started (:func:`nas.api.search`) when it is absent or empty. Its
stored configuration must be the one the study asks for. A baseline cell is one training
(:func:`nas.evaluation.fitness.evaluate_module` on the test split, as ``nas.train``), complete
when its ``metrics.json`` exists with the same fitness settings; a killed one is trained again
(its files are written atomically, ``metrics.json`` last).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.errors import UserError

#: Fitness settings that only say where a cell runs or reads from: not part of its identity.
EXECUTION_ONLY = ("device", "cache_dir", "data_root")


def _identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in settings.items()
                                  if k not in EXECUTION_ONLY}, default=str))


def search_cell(path: Path, *, preset: str | None, config_file: str | None,
                keys: dict[str, Any], seed: int, strategy: str, execution: dict[str, Any],
                log: Callable[[str], None]) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Finish one search cell; its best finalist's test metrics, the run's
    :class:`FitnessSettings` and its search settings (a dict).

    Raises:
        UserError: a folder in the way, a stored configuration other than the study's, a run
            whose best finalist has no test metrics (``refine_epochs`` 0).
    """
    from nas import api
    from nas.evaluation.fitness import FitnessSettings
    from nas.search import config as cfgmod
    from nas.search.rundir import config_diff, load_config

    wanted = cfgmod.resolve({**keys, "seed": seed, "strategy": strategy, **execution},
                            preset=preset, config_file=config_file, run_dir=str(path))
    start = time.perf_counter()
    if (path / "config.json").is_file():
        stored = cfgmod.from_dict(load_config(path), run_dir=str(path))
        diff = config_diff(stored.identity(), wanted.identity())
        if diff:
            raise UserError(f"{path} was run with another configuration than the study's "
                            f"(stored -> study): {'; '.join(diff)}")
        if (path / "final.json").is_file():
            log(f"cell {path.name}: complete, reused")
        else:
            log(f"cell {path.name}: resuming")
            api.resume(path, **execution)
    else:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"{path} is in the way of the study's cell (not a run folder); "
                            "move it away")
        log(f"cell {path.name}: searching")
        api.search(preset, config_file=config_file, run_dir=str(path.parent), name=path.name,
                   **{**keys, "seed": seed, "strategy": strategy, **execution})
    if time.perf_counter() - start > 1:
        log(f"cell {path.name}: done in {time.perf_counter() - start:.0f} s")
    run = api.open_run(path)
    test = run.best.get("test") or {}
    if test.get("fitness") is None:
        raise UserError(f"{path}: its best finalist has no test metrics (refine_epochs 0?)")
    return test, FitnessSettings.from_dict(run.config["fitness"]), dict(run.config["search"])


def baseline_cell(path: Path, arch: str, defense: str, fitness: Any, search: Mapping[str, Any],
                  *, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or reuse) one baseline: ``arch`` with ``defense`` under the run's ``fitness``
    settings and the finalists' budget (``refine_epochs`` cap, ``refine_patience``,
    ``refine_draws`` of ``search``); its test metrics.

    Raises:
        UserError: ``metrics.json`` of other settings in the folder, or the training diverged.
    """
    from nas.evaluation.fitness import Budget
    from nas.networks import train_architecture

    args = fitness.defense_args if defense == fitness.defense else ()
    settings = dataclasses.replace(fitness, defense=defense, defense_args=args)
    metrics_path = path / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if _identity(metrics.get("settings") or {}) != _identity(settings.to_dict()):
            raise UserError(f"{path} holds a baseline trained with other settings; move it away")
        log(f"cell {path.name}: complete, reused")
        return metrics
    start = time.perf_counter()
    log(f"cell {path.name}: training {arch} with {defense}")
    epochs = int(search.get("refine_epochs") or search.get("epochs") or 1)
    budget = Budget(epochs, seed, patience=int(search.get("refine_patience") or 0))
    result = train_architecture(arch, settings, budget,
                                draws=int(search.get("refine_draws") or 1), out_dir=str(path),
                                log=lambda _m: None).result
    if result.status not in ("ok",):
        raise UserError(f"baseline {path.name} {result.status}: {result.reason}")
    log(f"cell {path.name}: done in {time.perf_counter() - start:.0f} s, test fitness "
        f"{result.fitness:.4f}")
    return json.loads(metrics_path.read_text(encoding="utf-8"))


def write_outputs(out: Path, cells: Mapping[str, Mapping[int, Mapping[str, Any]]], search: str,
                  others: Sequence[str]) -> dict[str, Any]:
    """Write ``table.json``, ``table.md`` and ``differences.png`` of the finished cells."""
    from nas.reporting.plots import plot_differences
    from nas.reporting.studytable import markdown, plotted_differences, study_table
    from nasbase.files import write_text_atomically

    table = study_table(cells, search, others)
    write_text_atomically(out / "table.json", json.dumps(table, indent=2))
    write_text_atomically(out / "table.md", markdown(table))
    diffs = plotted_differences(table)
    if diffs:
        plot_differences(diffs, out / "differences.png",
                         title=f"{search} minus each method, paired by seed (95 % intervals)")
    return table
