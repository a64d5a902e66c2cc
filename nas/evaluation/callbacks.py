"""The features of the training loop as small objects (:class:`Callback`).

:func:`nas.evaluation.training.train` runs epochs of a defense's steps and nothing else; what a
caller wants on top (early stopping on a validation score, early rejection against a
threshold, a line per epoch, a progress bar) it composes from the callbacks here, in the
order it lists them. After every epoch each callback's :meth:`Callback.on_epoch_end` may stop
training by returning a :class:`Stop`; once one has, only the *observers* after it (logging,
progress) still see that epoch. A callback must not draw random numbers: a run it does not
stop trains exactly as without it.

Callbacks that look at the network see the weights training would keep: the weight average
when the recipe has one (:meth:`Loop.kept_weights`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from nas.evaluation.recipe import Recipe, WeightAverage

#: ``model -> score`` (higher is better); the callee puts the model in eval mode.
Measure = Callable[[nn.Module], float]


@dataclass(frozen=True)
class Stop:
    """A callback's request to stop after this epoch: ``status`` ``"ok"`` (converged) or
    ``"rejected"`` (early rejection), with the reason for the log and the result."""

    status: str = "ok"
    reason: str = ""


@dataclass
class Loop:
    """What the callbacks see of a training run (the loop updates it)."""

    model: nn.Module
    outcome: Any  # nas.evaluation.training.TrainOutcome
    epochs: int  # the cap
    average: WeightAverage | None = None
    log: Callable[[str], None] = print
    epoch: int = 0  # 1-based, the epoch just finished
    epoch_loss: float = 0.0  # mean training loss of that epoch
    elapsed: float = 0.0  # seconds since training started
    metrics: dict[str, float] = field(default_factory=dict)  # scores callbacks took this epoch

    @contextlib.contextmanager
    def kept_weights(self) -> Iterator[nn.Module]:
        """The model with the weights training would keep loaded (the average, if any); the
        live weights are back afterwards."""
        if self.average is None:
            yield self.model
            return
        live = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.average.averaged())
        try:
            yield self.model
        finally:
            self.model.load_state_dict(live)


class Callback:
    """Base of the loop's features; every hook is optional."""

    #: Observers see every epoch, also the one another callback stopped training at.
    observer = False

    def on_step(self, loop: Loop, loss: float) -> None:
        """After every optimisation step."""

    def on_epoch_end(self, loop: Loop) -> Stop | None:
        """After every epoch; a :class:`Stop` ends training."""
        return None

    def on_train_end(self, loop: Loop) -> None:
        """Once, after the last epoch (the weight average is loaded by then), also after a
        diverged run (``loop.outcome.status``)."""


def first_stop_epoch(recipe: Recipe, epochs: int, steps_per_epoch: int) -> int:
    """The first epoch after which early stopping may stop a run of ``epochs`` epochs: 0 for
    a constant rate, else the first epoch ending with the rate below a tenth of its peak
    (after the warm-up), so a run is never cut before the annealing that gives most of its
    accuracy (docs/fitness.md, "Early stopping")."""
    if recipe.schedule == "constant":
        return 0
    total = epochs * steps_per_epoch
    warm = max(1, round(recipe.warmup * total))
    for epoch in range(1, epochs + 1):
        step = epoch * steps_per_epoch - 1
        if step >= warm and recipe.lr_factor(step, total) < 0.1:
            return epoch
    return epochs


def accuracy_on(x: torch.Tensor, y: torch.Tensor, device: torch.device | None = None) -> Measure:
    """A :data:`Measure`: accuracy on the images ``x`` (uint8 or [0, 1]) with labels ``y``."""
    from nas.evaluation.training import predict

    return lambda model: float((predict(model, x, device=device) == y).float().mean())


class EarlyStopping(Callback):
    """Stop once ``measure`` has not improved for ``patience`` epochs (not before epoch
    ``first``); at the end the best-scoring weights are loaded (a CPU copy is kept)."""

    def __init__(self, patience: int, measure: Measure, *, label: str = "validation accuracy",
                 first: int = 0) -> None:
        self.patience, self.measure, self.label, self.first = patience, measure, label, first
        self.best, self.best_epoch, self.state = -1.0, 0, None

    @classmethod
    def for_config(cls, config: Any, steps_per_epoch: int, measure: Measure, *,
                   label: str = "validation accuracy") -> EarlyStopping:
        """The early stopping a :class:`~nas.evaluation.training.TrainConfig` asks for
        (``patience``; ``stop_when_annealed``: not before :func:`first_stop_epoch`)."""
        first = (first_stop_epoch(config.recipe, config.epochs, steps_per_epoch)
                 if config.stop_when_annealed else 0)
        return cls(config.patience, measure, label=label, first=first)

    def on_epoch_end(self, loop: Loop) -> Stop | None:
        with loop.kept_weights() as model:
            score = float(self.measure(model))
            if score > self.best:
                self.best, self.best_epoch = score, loop.epoch
                self.state = {k: v.detach().to("cpu", copy=True)
                              for k, v in model.state_dict().items()}
        loop.metrics[self.label] = score
        done = loop.epoch >= self.first and loop.epoch - self.best_epoch >= self.patience
        return Stop() if done else None

    def on_train_end(self, loop: Loop) -> None:
        if loop.outcome.status == "diverged":
            return
        if self.state is not None:
            loop.model.load_state_dict(self.state)
        loop.outcome.best_epoch, loop.outcome.val_acc = self.best_epoch, self.best
        loop.log(f"early stopping: {loop.outcome.epochs} epochs run, kept epoch "
                 f"{self.best_epoch} ({self.label} {self.best:.4f})")


class StopBelow(Callback):
    """Early rejection: at the epochs ``at`` (before the last), score the network and stop
    it with status ``"rejected"`` when the score is below ``threshold``. Each measurement is
    kept in :attr:`rungs` as ``[epoch, score]``."""

    def __init__(self, measure: Measure, at: tuple[int, ...], threshold: float) -> None:
        self.measure, self.at, self.threshold = measure, at, threshold
        self.rungs: list[list[float]] = []

    def on_epoch_end(self, loop: Loop) -> Stop | None:
        if loop.epoch >= loop.epochs or loop.epoch not in self.at:
            return None
        with loop.kept_weights() as model:
            score = float(self.measure(model))
        self.rungs.append([loop.epoch, score])
        if score < self.threshold:
            return Stop("rejected", f"fitness {score:.4f} after {loop.epoch}/{loop.epochs} "
                                    f"epochs is below {self.threshold:.4f} (threshold - margin)")
        return None


class EpochLog(Callback):
    """One line per epoch to ``sink``: ``epoch 3/8: loss 0.512, validation accuracy 0.8730,
    41 s, at most 1:49 left`` (the scores earlier callbacks measured this epoch)."""

    observer = True

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink

    def on_epoch_end(self, loop: Loop) -> Stop | None:
        left = loop.elapsed / loop.epoch * (loop.epochs - loop.epoch)
        scores = "".join(f", {name} {value:.4f}" for name, value in loop.metrics.items())
        self.sink(f"epoch {loop.epoch}/{loop.epochs}: loss {loop.epoch_loss:.3f}{scores}, "
                  f"{loop.elapsed:.0f} s, at most {int(left // 60)}:{int(left % 60):02d} left")
        return None


class ProgressBar(Callback):
    """A tqdm bar over every step of the run, with the last loss."""

    observer = True

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, desc="train", leave=False)

    def on_step(self, loop: Loop, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def on_train_end(self, loop: Loop) -> None:
        self.bar.close()


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimisation steps of one epoch over ``n`` images."""
    return math.ceil(n / batch_size)
