"""One network end to end: an architecture string resolved, trained with a defense, scored.

The library behind ``python -m nas.train`` and :func:`nas.api.train`: an ARCH string names a
registered reference (``resnet34``, ``he-ref``, ...), a named genome, a genome JSON path or a
finalist of a run (``runs/<name>:best``, ``:<rank>``, ``:<child id>``); the network is trained
on the reduced training set with the selected defense against the reference (to the
validation plateau, ``draws`` times with the draw best on validation kept), then scored on the
*test* split: clean accuracy, transferred accuracy, fitness ``min(clean, adv)`` (paper eq. 4),
fooling rate (§4.2.2) and the held-out sources.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nas.evaluation.data import DatasetInfo
from nas.evaluation.fitness import Budget, ChildResult, FitnessSettings, Workspace, prepare


def resolve_architecture(spec: str, info: DatasetInfo) -> tuple[str, Callable[[], nn.Module]]:
    """``(label, factory)`` for a reference name, a named genome, a genome JSON path or a
    finalist of a run (``runs/<name>:best``, ``:<rank>``, ``:<child id>``).

    The one place an ARCH string is interpreted.
    """
    from nas.evaluation.references import REFERENCES, build_reference

    if spec in REFERENCES:
        return spec, lambda: build_reference(spec, info)
    from genome import compile_genome
    from nas.reporting.runview import finalist_genome
    from search_spaces import resolve_genome

    run_genome = finalist_genome(spec)  # None unless spec is <run dir>:<selector>
    graph = resolve_genome(str(run_genome) if run_genome else spec)

    def factory() -> nn.Module:
        return compile_genome(graph, **info.network_args())

    return Path(spec).stem if spec.endswith(".json") and not run_genome else spec, factory


@dataclass
class Trained:
    """A trained and scored architecture: its label, result (test split) and workspace."""

    label: str
    result: ChildResult
    workspace: Workspace


def train_architecture(arch: str, settings: FitnessSettings, budget: Budget, *, draws: int = 1,
                       out_dir: str | None = None, progress: bool = False,
                       log: Callable[[str], None] = print) -> Trained:
    """Train ``arch`` with ``settings.defense`` for ``budget`` and score it on the test split.

    ``draws`` > 1 trains it that many times and keeps the draw best on validation
    (:func:`nas.search.refinement.refine_network`). With ``out_dir``, ``metrics.json`` (with
    the architecture, the reference's accuracy and key, and the resolved attack) and
    ``weights.pt`` are written there.
    """
    from nas.search.refinement import refine_network

    label, factory = resolve_architecture(arch, settings_info(settings))
    ws = prepare(settings, progress=progress, log=log)
    result, _ = refine_network(factory, ws, budget, draws=draws, split="test", out_dir=out_dir,
                               progress=progress, log=log)
    if out_dir:
        _add_context(Path(out_dir) / "metrics.json", label, ws)
    return Trained(label, result, ws)


def settings_info(settings: FitnessSettings) -> DatasetInfo:
    """The dataset facts of ``settings`` (without loading the data)."""
    from nas.evaluation.data import dataset_info

    return dataset_info(settings.dataset)


def _add_context(path: Path, label: str, ws: Workspace) -> None:
    """Add the architecture, reference accuracy and resolved attack to ``metrics.json``."""
    from nasbase.files import write_text_atomically

    data = json.loads(path.read_text())
    data.update(architecture=label, reference_clean_acc=ws.reference_acc.get("test"),
                reference_key=ws.reference_key, attack=dataclasses.asdict(ws.attack))
    write_text_atomically(path, json.dumps(data, indent=2))
