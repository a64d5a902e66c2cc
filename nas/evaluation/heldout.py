"""Held-out transfer evaluation: every held-out source x attack, its worst case, white-box PGD.

The search's fitness (gm-neuroevolution eq. 4) measures transfer from one reference with one
attack; a network can learn to resist exactly that. The held-out evaluation asks the question
a user has: how accurate is the network under adversarial examples crafted on networks *the
search never saw*, with attacks made to transfer? For each pair (source, attack) of
``held_out`` x ``held_out_attacks``, the source is trained with CE exactly as the reference
(cached, :func:`nas.evaluation.references.get_reference`), its adversarial examples of the
test split are crafted once and cached (:func:`nas.evaluation.attacks.transferred_set`), and
the network's accuracy on them is measured. Then

    worst case = min over (source, attack) of accuracy                       (issue 30, item 5)

is the number to read first, and the **white-box** PGD accuracy (the network attacked
directly) is reported next to it, labelled as such, so nobody mistakes transfer robustness
for white-box robustness. Sources should come from several families (e.g. ``resnet18``,
``mobilenet_v3_small``, ``vit_mini``, not convolutional); a source ``a+b`` is an ensemble of
sources (the mean of the members' softmax), the ensemble attack of transfer benchmarks.

Labels: with no ``held_out_attacks`` the attack is the search's own and a pair is labelled by
its source alone (``he-baseline``), as before this module; otherwise ``"<source> <attack>"``
(``resnet18 di-mi-fgsm``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.evaluation.attacks import AttackSettings, attack_dataset, resolve_attack, transferred_set
from nas.evaluation.data import Splits
from nas.evaluation.references import get_reference, held_out_source
from nas.evaluation.training import TrainConfig, predict


@dataclass(frozen=True)
class HeldOutPair:
    """One held-out (source, attack) pair and the label its accuracy is reported under."""

    label: str
    source: str
    attack: AttackSettings


def held_out_pairs(settings: Any) -> list[HeldOutPair]:
    """The pairs of a run's fitness settings: ``held_out`` x ``held_out_attacks`` (the
    search's attack when none is given), each resolved with the run's eps, step and steps."""
    names = tuple(getattr(settings, "held_out_attacks", ()) or ())
    out = []
    for source in settings.held_out:
        for name in names or (settings.attack,):
            attack = resolve_attack(name, settings.dataset, eps=settings.eps,
                                    step_size=settings.step_size, steps=settings.steps)
            out.append(HeldOutPair(f"{source} {name}" if names else source, source, attack))
    return out


def white_box_settings(settings: Any) -> AttackSettings:
    """White-box PGD (L-inf, random start) with the run's eps / step / steps."""
    return resolve_attack("pgd-linf", settings.dataset, eps=settings.eps,
                          step_size=settings.step_size, steps=settings.steps)


def held_out_sets(
    pairs: Sequence[HeldOutPair], splits: Splits, cache: Path, *, config: TrainConfig,
    seed: int, device: torch.device | None = None, progress: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every pair's adversarial test set and its source's clean test accuracy, by label.

    Each source is trained (or loaded) once, with CE and ``config`` like the reference; each
    set is generated once and cached keyed by the source's key, the images and the attack.
    """
    x, y = splits.split("test")
    sets: dict[str, torch.Tensor] = {}
    clean: dict[str, float] = {}
    sources: dict[str, tuple[nn.Module, str, float]] = {}
    for pair in pairs:
        if pair.source not in sources:
            name, weights = held_out_source(pair.source)  # NAME or NAME=WEIGHTS_FILE
            model, key, _ = get_reference(name, splits, cache, config=config, seed=seed,
                                          weights=weights, log=log)
            model = model.to(device or torch.device("cpu")).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            acc = float((predict(model, x, device=device) == y).float().mean()) if len(y) else 0.0
            sources[pair.source] = (model, key, acc)
        model, key, acc = sources[pair.source]
        sets[pair.label] = transferred_set(model, key, "test", x, y, pair.attack, cache,
                                           device=device, progress=progress, log=log)
        clean[pair.label] = acc
    return sets, clean


def held_out_accuracies(model: nn.Module, sets: Mapping[str, torch.Tensor], y: torch.Tensor,
                        *, device: torch.device | None = None) -> dict[str, float]:
    """Accuracy of ``model`` on each held-out adversarial set (label -> fraction)."""
    return {label: float((predict(model, x_adv, device=device) == y).float().mean())
            for label, x_adv in sets.items()}


def worst_case(accuracies: Mapping[str, float]) -> tuple[str, float] | None:
    """The label and accuracy of the strongest pair (the lowest accuracy); ``None`` for none.
    Ties go to the first label in order."""
    if not accuracies:
        return None
    label = min(accuracies, key=lambda k: accuracies[k])
    return label, float(accuracies[label])


def white_box_accuracy(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor,
                       attack: AttackSettings, *, device: torch.device | None = None,
                       seed: int = 0) -> float:
    """Accuracy of ``model`` on adversarial examples crafted on ``model`` itself (white box)."""
    x_adv = attack_dataset(model, x_uint8, y, attack, device=device, seed=seed)
    return float((predict(model, x_adv, device=device) == y).float().mean()) if len(y) else 0.0


@dataclass(frozen=True)
class HeldOutResult:
    """A network's held-out numbers: per label, the worst case and the white-box PGD one."""

    accuracies: dict[str, float]
    worst: float | None
    worst_label: str | None
    white_box: float | None

    def fields(self) -> dict[str, Any]:
        """The :class:`nas.evaluation.fitness.ChildResult` fields these numbers fill."""
        return {"held_out": self.accuracies, "held_out_worst": self.worst,
                "white_box_acc": self.white_box}


def evaluate_held_out(
    model: nn.Module, splits: Splits, pairs: Sequence[HeldOutPair], cache: Path, *,
    config: TrainConfig | None, seed: int, white_box: AttackSettings | None = None,
    device: torch.device | None = None, sets: Mapping[str, torch.Tensor] | None = None,
    log: Callable[[str], None] = print,
) -> HeldOutResult:
    """A trained network's held-out evaluation on the test split (module doc).

    Args:
        model: the network (pixels in [0, 1] -> logits).
        splits: the data; only the test split is attacked and scored.
        pairs: the (source, attack) pairs (:func:`held_out_pairs`).
        cache: the cache root (sources and adversarial sets).
        config: how the sources are trained (the reference's configuration; may be ``None``
            when ``sets`` holds every pair's set).
        seed: the run seed (the sources' training seed derives from it).
        white_box: the white-box attack to report too (``None``: not measured).
        device: where attacks and evaluation run.
        sets: label -> already prepared adversarial sets (a workspace's), used as they are.
    """
    if sets is None:
        if config is None:
            raise ValueError("training the held-out sources needs their configuration")
        sets, _ = held_out_sets(pairs, splits, cache, config=config, seed=seed, device=device,
                                log=log)
    x, y = splits.split("test")
    accs = held_out_accuracies(model, {p.label: sets[p.label] for p in pairs}, y, device=device)
    worst = worst_case(accs)
    wb = white_box_accuracy(model, x, y, white_box, device=device) if white_box else None
    return HeldOutResult(accs, worst[1] if worst else None, worst[0] if worst else None, wb)


def finalist_held_out(model: nn.Module, ws: Any) -> dict[str, Any]:
    """The held-out fields of a result scored on the test split from a prepared workspace
    (:class:`nas.evaluation.fitness.Workspace`): accuracies, worst case and, when
    ``held_out_attacks`` asks for the stronger evaluation, white-box PGD."""
    settings = ws.settings
    device = next(model.parameters()).device
    result = evaluate_held_out(
        model, ws.splits, held_out_pairs(settings), Path("."), config=None, seed=settings.seed,
        white_box=white_box_settings(settings) if settings.held_out_attacks else None,
        device=device, sets=ws.held_out_adv)
    return result.fields()
