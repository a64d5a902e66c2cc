"""What a report is asked to do (:class:`ReportOptions`) and the numbers it computes
(:class:`ReportData`): the data types shared by ``nas.report`` (the command) and the report's
library modules (:mod:`nas.reporting.models`, :mod:`nas.reporting.page`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAPER_SOURCES = ("resnet18", "vgg16_bn", "densenet121", "squeezenet1_1")
ATTACKS = ("pgd-linf", "pgd-l2", "fgsm")


@dataclass(frozen=True)
class ReportOptions:
    """Everything ``nas.report`` was asked to do (library code never sees argparse).

    Attributes:
        run_dir: the run directory.
        out: output directory of the page and its images.
        ig_images: test images whose integrated-gradients maps are drawn (0 = none).
        ig_steps: quadrature points of each integrated-gradients integral.
        transfer_from: networks the transfer matrix crafts examples on (``own`` = the
            search's reference); each is trained with CE once and cached.
        source_epochs: CE epochs of those networks (``None``: the run's reference epochs).
        skip_transfer: leave out the transfer matrix and the fooling rates.
        attacks: attacks of the fooling-rate table (empty: the run's own attack and fgsm,
            or every attack of :data:`ATTACKS` with ``full``).
        eval_size: test images used by the transfer matrix and fooling rates (0 = all).
        baseline_epochs: epochs of the baselines (reference architecture with CE and with
            the run's defense, ``baselines``); ``None``: the run's refinement epochs.
        budget: seconds the report may spend training baselines that are not cached yet; a
            baseline whose estimated training time does not fit is left out (the page says so).
        full: full fidelity: every baseline trained whatever it costs, every attack, the whole
            test split (unless ``eval_size`` / ``attacks`` are given).
        max_finalists: evaluate at most this many finalists (best first; 0 = all).
        baselines: further registered architectures trained with the run's defense and
            compared (e.g. ``he-baseline``: paper Table 4's "HE. Net.+GM").
        compare: other run directories (same data, reference and evaluation, e.g. the random
            search baseline ``--strategy random``) whose best finalist (by the selection
            split) is evaluated beside this run's networks as ``<run name> best``.
        ce_copies: also train each finalist's architecture with plain CE (same budget as the
            baselines), to tell what the architecture does from what the defense does.
        extra_metrics: JSON files of retraining results (``nas.train`` output) to tabulate.
        device: ``auto``, ``cpu`` or ``cuda``.
        embed: embed the images in the page (self-contained) instead of linking them.
        progress: show progress bars on stderr.
        seed: seeds attacks and the choice of IG images.
        front_size: size objective of the trade-off front, ``params`` or ``macs``.
    """

    run_dir: str
    out: str
    ig_images: int = 4
    ig_steps: int = 64
    transfer_from: tuple[str, ...] = ("own",)
    source_epochs: int | None = None
    skip_transfer: bool = False
    attacks: tuple[str, ...] = ()
    eval_size: int = 500
    baseline_epochs: int | None = None
    budget: float = 120.0
    full: bool = False
    max_finalists: int = 0
    baselines: tuple[str, ...] = ()
    ce_copies: bool = False
    compare: tuple[str, ...] = ()
    extra_metrics: tuple[str, ...] = ()
    device: str = "auto"
    embed: bool = True
    progress: bool = False
    seed: int = 0
    front_size: str = "params"


@dataclass
class ReportData:
    """The numbers of the model-based sections (filled by :mod:`nas.reporting.models`).

    Attributes:
        accuracy: network -> ``{"clean": acc, "adv": acc on the run's transferred set,
            "fitness": min of the two (eq. 4), "held-out <source>": acc on the run's set
            transferred from each held-out source}``.
        transfer: ``{source: {network: adversarial accuracy}}`` (Table 2).
        fooling: ``{attack: {network: {"rate", "fooled", "eligible"}}}`` (Table 5).
        ig: network -> ``{"distance": [...], "delta": [...]}`` per IG image.
        attack_settings: attack name -> its settings (eps, step size, steps).
        notes: sentences about how the numbers were obtained (sizes, epochs).
        figures: section id -> list of (png path, caption).
        extra: rows of retraining results (from ``--extra-metrics``).
        timings: stage -> seconds it took (``Stages``).
    """

    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    transfer: dict[str, dict[str, float]] = field(default_factory=dict)
    fooling: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    ig: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    attack_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    figures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
