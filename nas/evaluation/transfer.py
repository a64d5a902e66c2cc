"""Transfer experiments: the transfer matrix (paper Table 2) and fooling rates (Table 5).

Both work on any networks mapping pixels in [0, 1] ``(N, C, H, W)`` to logits, and on the
in-house attacks of :mod:`nas.evaluation.attacks` (``fgsm``, ``pgd-linf``, ``pgd-l2``, ...).

*Transfer matrix* (paper §4.1.2): adversarial examples of the test split are crafted on each
*source* network (e.g. ResNet-18, VGG-16-BN, DenseNet-121, SqueezeNet-1.1 and the search's
own reference) and every *target* network (the finalists, the reference, the reference
trained with GM) is scored on them; entry ``[source][target]`` is the target's accuracy on
the source's examples (higher = less transfer).

*Fooling rate* (paper §4.2.2): for each attack, take the test images that both the reference
and the tested network classify correctly, craft their adversarial examples on the
reference, and count the fraction the tested network now misclassifies (lower = better)::

    FR(f) = |{i : f(x_i) = r(x_i) = y_i and f(x_i^adv) != y_i}| / |{i : f(x_i) = r(x_i) = y_i}|

With no eligible image the rate is undefined: ``nan`` (:func:`fooling_rate`, the one
definition the search's fitness and the report share; reports show it as "-").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from nas.evaluation.attacks import AttackSettings, attack_dataset
from nas.evaluation.training import predict


def fooling_rate(fooled: int, eligible: int) -> float:
    """``fooled / eligible``; ``nan`` when no image is eligible (0 / 0 is not a rate: neither
    "never fooled" nor "always fooled" is true of a network that classifies none correctly)."""
    return fooled / eligible if eligible else float("nan")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> float:
    """Fraction of images ``x`` whose predicted class equals ``y``."""
    return float((predict(model, x, **kwargs) == y).float().mean()) if len(y) else float("nan")


def transfer_matrix(
    sources: Mapping[str, nn.Module],
    targets: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: AttackSettings,
    *,
    device: torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    crafted: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """Accuracy of every target on the adversarial examples of every source (paper Table 2).

    Args:
        sources: name -> network the examples are crafted on (white-box on it).
        targets: name -> network evaluated on those examples.
        x: clean test images, uint8 ``(N, C, H, W)``.
        y: labels ``(N,)``.
        settings: the attack (the paper uses L-inf PGD).
        device: where the attacks and evaluations run.
        seed: seeds the attack's random start (the same for every source).
        progress: show a progress bar on stderr.
        crafted: source name -> its adversarial examples of ``x`` already crafted with
            ``settings`` (e.g. a cached set), used instead of attacking that source again.

    Returns:
        ``{source: {target: adversarial accuracy in [0, 1]}}``; a target that *is* a source
        (same object) gets its white-box accuracy in that row.
    """
    table: dict[str, dict[str, float]] = {}
    for name, source in tqdm(sources.items(), desc="transfer matrix", disable=not progress,
                             leave=False):
        x_adv = (crafted or {}).get(name)
        if x_adv is None:
            x_adv = attack_dataset(source, x, y, settings, device=device, seed=seed)  # (N, C, H, W)
        table[name] = {t: accuracy(m, x_adv, y, device=device) for t, m in targets.items()}
    return table


@dataclass(frozen=True)
class FoolingRate:
    """Fooling rate of one network under one attack, with the counts it is made of.

    Attributes:
        rate: fooled / eligible (``nan`` when no image is eligible).
        fooled: eligible images misclassified after the attack.
        eligible: images both the reference and the network classify correctly.
    """

    rate: float
    fooled: int
    eligible: int


def fooling_rates(
    reference: nn.Module,
    targets: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[AttackSettings],
    *,
    device: torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    crafted: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, FoolingRate]]:
    """Fooling rate of every target under every attack crafted on the reference (Table 5).

    The reference's adversarial examples are crafted once per attack for all images; each
    target then only counts the images that it and the reference both classify correctly
    (paper §4.2.2). Every attack in the list is seeded by ``seed``; ``crafted`` (attack name ->
    the reference's adversarial examples of ``x``, e.g. a cached set) skips crafting them again.

    Returns:
        ``{attack name: {target: FoolingRate}}``.
    """
    ref_ok = predict(reference, x, device=device) == y  # (N,)
    clean_ok = {t: predict(m, x, device=device) == y for t, m in targets.items()}
    out: dict[str, dict[str, FoolingRate]] = {}
    for settings in tqdm(attacks, desc="fooling rates", disable=not progress, leave=False):
        x_adv = (crafted or {}).get(settings.name)
        if x_adv is None:
            x_adv = attack_dataset(reference, x, y, settings, device=device, seed=seed)
        row: dict[str, FoolingRate] = {}
        for t, model in targets.items():
            eligible = ref_ok & clean_ok[t]  # (N,) bool
            n = int(eligible.sum())
            fooled = (int((predict(model, x_adv[eligible], device=device) != y[eligible]).sum())
                      if n else 0)
            row[t] = FoolingRate(fooling_rate(fooled, n), fooled, n)
        out[settings.name] = row
    return out
