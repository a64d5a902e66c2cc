"""What a worker process runs for one task: compile a genome, train it, score it.

:func:`evaluate_genome` is the evaluation function the search hands to
:mod:`nas.search.parallel`: its keyword arguments are a :class:`~nas.search.parallel.Task`'s
fields and extras, strings and numbers only, so it crosses process and machine boundaries. It
composes the features a task asks for: inheritance (the parent's weights of unchanged nodes),
early rejection and early stopping (the one-child evaluator), several draws and the choice
against the search's weights (the refinement).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from nas.evaluation.fitness import (
    Budget,
    ChildResult,
    FitnessSettings,
    evaluate_module,
    workspace,
    write_outputs,
)
from nas.search.refinement import refine_network
from nasbase.errors import disk_fault


def evaluate_genome(
    genome_json: str, *, settings: FitnessSettings, epochs: int, seed: int,
    out_dir: str | None = None, split: str | None = None, patience: int = 0,
    reject_below: float | None = None, inherit_genome: str | None = None,
    inherit_weights: str | None = None, fallback_weights: str | None = None, draws: int = 1,
) -> ChildResult:
    """Compile a genome, train it with the selected defense and score it; never raises.

    Returns ``status="failed"`` (reason = one line) for any exception, ``"diverged"`` for a
    non-finite loss; both with fitness 0. Writes ``out_dir/metrics.json`` and
    ``out_dir/weights.pt`` when ``out_dir`` is given. ``patience``: early stopping on the
    validation split; ``reject_below``: early rejection (both
    :func:`nas.evaluation.fitness.evaluate_module`); ``inherit_genome`` / ``inherit_weights``:
    the parent's genome and trained weights, whose tensors of unchanged nodes the child starts
    from (:func:`nas.evaluation.inherit.inherited_state`); ``fallback_weights`` and ``draws``:
    the refinement (:func:`nas.search.refinement.refine_network`).
    """
    start = time.perf_counter()
    try:
        from genome import compile_genome, from_json

        ws = workspace(settings)
        info = ws.splits.info
        graph = from_json(genome_json)
        start_from: dict[str, torch.Tensor] = {}
        if inherit_genome is not None and inherit_weights is not None:
            from nas.evaluation.inherit import inherited_state

            start_from = inherited_state(from_json(inherit_genome), graph, torch.load(
                inherit_weights, map_location="cpu", weights_only=True), info)

        def factory() -> nn.Module:
            net = compile_genome(graph, **info.network_args())
            if start_from:
                net.load_state_dict(start_from, strict=False)
            return net

        budget = Budget(epochs, seed, patience, reject_below)
        split = split or settings.fitness_split
        if draws > 1 or fallback_weights is not None:
            result, _ = refine_network(factory, ws, budget, draws=draws,
                                       fallback_weights=fallback_weights, split=split,
                                       out_dir=out_dir, log=_silent)
        else:
            result, _ = evaluate_module(factory, ws, budget, split=split, out_dir=out_dir,
                                        log=_silent,
                                        inherited=len(start_from) if inherit_weights else None)
        return result
    except OSError as exc:
        if disk_fault(exc):  # the machine's fault, not the child's: stop, resume later
            raise
        return _failed(exc, epochs, start, settings, out_dir, split)
    except Exception as exc:  # noqa: BLE001 - a bad child must never stop the search
        return _failed(exc, epochs, start, settings, out_dir, split)


def _failed(exc: Exception, epochs: int, start: float, settings: FitnessSettings,
            out_dir: str | None, split: str | None) -> ChildResult:
    """The ``failed`` result of a child whose evaluation raised (reason: one line)."""
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    result = ChildResult.failed("failed", reason[:300], epochs, time.perf_counter() - start)
    try:
        write_outputs(out_dir, result, None, settings, split or settings.fitness_split)
    except OSError:
        pass
    return result


def _silent(_line: str) -> None:
    pass
