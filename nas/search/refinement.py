"""Refinement of the finalists: replicates, and the choice between trainings.

The one-child evaluator (:func:`nas.evaluation.fitness.evaluate_module`) trains a network
once. Training it several times and choosing between trainings is the search's business, and
lives here:

- ``draws`` > 1 (``--replicates``): the network is trained ``draws`` times from independent
  seeds (initialisation, batch order, augmentation). Every replicate is scored on the
  validation split and on the scored split (test), so a table can state the architecture's
  mean with an interval, which is what a comparison of architectures needs: the transferred
  accuracy GM gives one architecture moves a lot with the training seed alone
  (docs/lab-log.md). The replicate with the highest validation fitness is the one kept for
  deployment (its weights are written). Replicate 0 is the single training, bit for bit.
- ``fallback_weights`` (the weights the search trained for the finalist): when they score a
  higher validation fitness than the refined ones they are the ones scored and written
  (``kept_search_weights``), so a refinement never reports a finalist worse, on validation,
  than the search found it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from defenses import create_defense
from nas.evaluation.fitness import (
    Budget,
    ChildResult,
    Scores,
    Workspace,
    draw_seed,
    held_out_of,
    kept_epochs,
    protocol_of,
    result_of,
    score,
    train_network,
    write_outputs,
)
from nas.evaluation.training import TrainOutcome


def refine_network(
    factory: Callable[[], nn.Module], ws: Workspace, budget: Budget, *, draws: int = 1,
    fallback_weights: str | None = None, split: str = "test", out_dir: str | None = None,
    progress: bool = False, log: Callable[[str], None] = print, first_draw: int = 0,
) -> tuple[ChildResult, nn.Module | None]:
    """Train a network ``draws`` times, keep the draw best on validation, compare it with
    ``fallback_weights`` and score the kept weights on ``split`` (see the module docstring).
    ``first_draw``: the seed index of the first training (draw ``k`` trains from
    ``draw_seed(budget.seed, first_draw + k)``), so replicate ``r`` of a single training is
    ``draws=1, first_draw=r``: independent of every other replicate, and reproducible.

    Needs a validation split for ``draws`` > 1. Returns the result (the kept replicate's
    scores; ``replicates``: one record per training, ``"kept"`` on the one kept) and the kept
    module (``None`` when every replicate diverged).
    """
    if draws > 1 and (budget.reject_below is not None or not len(ws.splits.y_val)):
        raise ValueError("draws > 1 needs a validation split and no early rejection")
    start = time.perf_counter()
    outcome, val_scores, draw_log = best_draw(factory, ws, budget, draws=draws, split=split,
                                              progress=progress, log=log, first_draw=first_draw)
    extra: dict[str, Any] = {"replicates": draw_log or None}
    model = outcome.model
    trained = outcome.status in ("ok", "rejected")
    if trained and fallback_weights is not None and len(ws.splits.y_val):
        searched = _load_searched(factory, ws, fallback_weights, model)
        val_scores, theirs = val_scores or score(model, ws, "val"), score(searched, ws, "val")
        if theirs.fitness > val_scores.fitness:
            model, val_scores, extra["kept_search_weights"] = searched, theirs, True
            log("kept the search's weights: higher validation fitness than the refined ones")
    result = result_of(model, outcome, ws, split=split, epochs=kept_epochs(outcome, budget, ws),
                       seconds=time.perf_counter() - start, val_scores=val_scores, **extra)
    write_outputs(out_dir, result, model if trained else None, ws.settings, split)
    return result, model if trained else None


def best_draw(factory: Callable[[], nn.Module], ws: Workspace, budget: Budget, *, draws: int,
              split: str, progress: bool, log: Callable[[str], None], first_draw: int = 0,
              ) -> tuple[TrainOutcome, Scores | None, list[dict[str, Any]]]:
    """The replicate with the highest validation fitness, its validation scores and one
    record per replicate (:func:`replicate_record`; none for a single training, which is not
    scored here)."""
    kept, kept_at, val_scores, records = None, 0, None, []
    for draw in range(draws):
        if draws > 1:
            log(f"training replicate {draw + 1}/{draws}")
        outcome, _ = train_network(factory, ws, budget, split=split, draw=first_draw + draw,
                                   progress=progress, log=log)
        if draws == 1:
            return outcome, None, []
        record, scores = replicate_record(outcome, ws, draw_seed(budget.seed, first_draw + draw),
                                          split)
        records.append(record)
        if scores is None:
            kept = kept or outcome  # while every replicate failed, the result is the failure
            continue
        if val_scores is None or scores.fitness > val_scores.fitness:
            kept, kept_at, val_scores = outcome, draw, scores
    for i, record in enumerate(records):
        record["kept"] = i == kept_at and val_scores is not None
    return kept, val_scores, records


def replicate_record(outcome: TrainOutcome, ws: Workspace, seed: int,
                     split: str) -> tuple[dict[str, Any], Scores | None]:
    """One replicate as the results record it: seed, status, kept epoch and, when it trained,
    its validation scores (``val_fitness``, ``val_clean_acc``, ``val_adv_acc``) and those of
    ``split`` (``fitness``, ``clean_acc``, ``adv_acc``, the held-out columns on test); also
    the validation :class:`Scores` (``None`` for a failed replicate)."""
    record: dict[str, Any] = {"seed": seed, "status": outcome.status,
                              "epochs": outcome.best_epoch or outcome.epochs}
    if outcome.status != "ok":
        return record, None
    val = score(outcome.model, ws, "val")
    record.update(val_fitness=val.fitness, val_clean_acc=val.clean, val_adv_acc=val.adv)
    if split != "val":
        scored = score(outcome.model, ws, split)
        record.update(fitness=scored.fitness, clean_acc=scored.clean, adv_acc=scored.adv)
        if split == "test":
            record.update(held_out_of(outcome.model, ws), **protocol_of(outcome.model, ws))
    return record, val


def _load_searched(factory: Callable[[], nn.Module], ws: Workspace, path: str,
                   like: nn.Module) -> nn.Module:
    """The search's trained weights of a finalist, in the module its defense trains."""
    settings, info = ws.settings, ws.splits.info
    defense = create_defense(settings.defense, **dict(settings.defense_args))
    searched = defense.wrap(factory, num_classes=info.num_classes, input_shape=info.input_shape)
    searched = searched.to(next(like.parameters()).device)
    searched.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return searched.eval()
