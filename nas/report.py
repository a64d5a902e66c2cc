"""``python -m nas.report runs/<name>``: one self-contained HTML page about a search.

```
python -m nas.report runs/<name>                              # cheap CPU defaults
python -m nas.report runs/<name> --transfer-from own,resnet18,vgg16_bn,densenet121,squeezenet1_1
python -m nas.report runs/<name> --extra-metrics mnist.json kmnist.json   # retraining results
```
The page (``<out>/index.html``, default ``runs/<name>/report``) shows the search progress,
the final population (table + drawings), the transfer matrix (paper Table 2), fooling rates
(Table 5) and integrated-gradients maps (Fig. 3); every figure is embedded and also written
as a PNG beside the page, and every number goes to ``results.json``. docs/report.md explains
each section and how the numbers are computed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.cli import ArgumentParser, check_out_dir, run
from nas.errors import UserError
from nas.reporting.page import render
from nas.reporting.runview import RunView, child_files, load_run
from nas.values import nonneg_int, positive_int

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
        attacks: attacks of the fooling-rate table.
        eval_size: test images used by the transfer matrix and fooling rates (0 = all).
        baseline_epochs: epochs of the baselines (reference architecture with CE and with
            the run's defense, ``baselines``); ``None``: the run's refinement epochs.
        max_finalists: evaluate at most this many finalists (best first; 0 = all).
        baselines: further registered architectures trained with the run's defense and
            compared (e.g. ``he-baseline``: paper Table 4's "HE. Net.+GM").
        extra_metrics: JSON files of retraining results (``nas.train`` output) to tabulate.
        device: ``auto``, ``cpu`` or ``cuda``.
        embed: embed the images in the page (self-contained) instead of linking them.
        progress: show progress bars on stderr.
        seed: seeds attacks and the choice of IG images.
    """

    run_dir: str
    out: str
    ig_images: int = 4
    ig_steps: int = 64
    transfer_from: tuple[str, ...] = ("own",)
    source_epochs: int | None = None
    skip_transfer: bool = False
    attacks: tuple[str, ...] = ATTACKS
    eval_size: int = 500
    baseline_epochs: int | None = None
    max_finalists: int = 0
    baselines: tuple[str, ...] = ()
    extra_metrics: tuple[str, ...] = ()
    device: str = "auto"
    embed: bool = True
    progress: bool = False
    seed: int = 0


@dataclass
class ReportData:
    """The numbers of the model-based sections (filled by :mod:`nas.reporting.models`).

    Attributes:
        accuracy: network -> ``{"clean": acc, "adv": acc on the run's transferred set}``.
        transfer: ``{source: {network: adversarial accuracy}}`` (Table 2).
        fooling: ``{attack: {network: {"rate", "fooled", "eligible"}}}`` (Table 5).
        ig: network -> ``{"distance": [...], "delta": [...]}`` per IG image.
        attack_settings: attack name -> its settings (eps, step size, steps).
        notes: sentences about how the numbers were obtained (sizes, epochs).
        figures: section id -> list of (png path, caption).
        extra: rows of retraining results (from ``--extra-metrics``).
    """

    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    transfer: dict[str, dict[str, float]] = field(default_factory=dict)
    fooling: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    ig: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    attack_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    figures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m nas.report``."""
    p = ArgumentParser(
        prog="python -m nas.report",
        description="Build one self-contained HTML report (search progress, final population, "
                    "transfer matrix, fooling rates, integrated gradients) of a search run.")
    p.add_argument("run_dir", help="the run directory (runs/<name>) written by nas.evolve")
    p.add_argument("--out",
                   help="output directory of index.html and its PNGs (default: <run_dir>/report)")
    p.add_argument("--ig-images", type=nonneg_int, default=4, metavar="N",
                   help="test images whose integrated-gradients maps are drawn, one per class "
                        "first (0 = skip the section; default 4)")
    p.add_argument("--ig-steps", type=positive_int, default=64,
                   help="integration steps of each IG map (default 64)")
    p.add_argument("--transfer-from", default="own", metavar="LIST",
                   help="comma-separated networks the transfer matrix crafts examples on: 'own' "
                        "(the run's reference) and/or reference names (resnet18, vgg16_bn, "
                        "densenet121, squeezenet1_1, ...); 'paper' = own + those four. Each is "
                        "trained with CE once and cached. Default: own (cheap on CPU)")
    p.add_argument("--source-epochs", type=positive_int,
                   help="CE epochs of the --transfer-from networks "
                        "(default: the run's reference epochs)")
    p.add_argument("--skip-transfer", action="store_true",
                   help="leave out the transfer matrix and fooling rates")
    p.add_argument("--attacks", default=",".join(ATTACKS), metavar="LIST",
                   help="comma-separated attacks of the fooling-rate table "
                        f"(default {','.join(ATTACKS)})")
    p.add_argument("--eval-size", type=nonneg_int, default=500, metavar="N",
                   help="test images used by the transfer matrix and fooling rates "
                        "(0 = all; default 500)")
    p.add_argument("--baseline-epochs", type=positive_int,
                   help="epochs of the baselines (reference architecture with CE and with the "
                        "run's defense, --baselines; default: the run's --refine-epochs)")
    p.add_argument("--max-finalists", type=nonneg_int, default=0, metavar="N",
                   help="evaluate only the N best finalists (0 = all; default)")
    p.add_argument("--baselines", default="", metavar="LIST",
                   help="comma-separated registered architectures also trained with the run's "
                        "defense and compared (e.g. he-baseline, paper Table 4); default none")
    p.add_argument("--extra-metrics", nargs="+", default=[], metavar="FILE",
                   help="JSON results of retraining on other datasets (nas.train output) to "
                        "tabulate")
    p.add_argument("--no-models", action="store_true",
                   help="only the sections read from the run log (no network is loaded or trained)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--link-images", action="store_true",
                   help="link the PNGs beside the page instead of embedding them")
    p.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of the attacks' random starts and subsets")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UserError(f"--{what} needs at least one name")
    return names


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    """Validate the flags and freeze them into :class:`ReportOptions`."""
    from nas.evaluation.attacks import ATTACKS as REGISTERED
    from nas.evaluation.references import list_references

    sources = _names(args.transfer_from, "transfer-from")
    if "paper" in sources:
        sources = tuple(dict.fromkeys(("own", *PAPER_SOURCES,
                                       *(s for s in sources if s != "paper"))))
    valid = ["own", "paper", *list_references()]
    for name in sources:
        if name not in valid:
            raise UserError(f"unknown --transfer-from {name!r}; valid: {', '.join(valid)}")
    baselines = tuple(n.strip() for n in args.baselines.split(",") if n.strip())
    for name in baselines:
        if name not in list_references():
            raise UserError(f"unknown --baselines {name!r}; valid: {', '.join(list_references())}")
    attacks = _names(args.attacks, "attacks")
    for name in attacks:
        REGISTERED.get(name)  # raises UnknownName listing the valid attacks
    for flag in ("ig_images", "ig_steps", "eval_size", "max_finalists"):
        if getattr(args, flag) < (1 if flag == "ig_steps" else 0):
            raise UserError(f"--{flag.replace('_', '-')} must be "
                            f">= {1 if flag == 'ig_steps' else 0}")
    if args.out:
        check_out_dir(args.out, "--out")
    return ReportOptions(
        run_dir=args.run_dir, out=args.out or str(Path(args.run_dir) / "report"),
        ig_images=args.ig_images, ig_steps=args.ig_steps, transfer_from=sources,
        source_epochs=args.source_epochs, skip_transfer=args.skip_transfer, attacks=attacks,
        eval_size=args.eval_size, baseline_epochs=args.baseline_epochs,
        max_finalists=args.max_finalists,
        baselines=baselines,
        extra_metrics=tuple(args.extra_metrics), device=args.device, embed=not args.link_images,
        progress=not args.no_progress and sys.stderr.isatty(), seed=args.seed)


def draw_finalists(view: RunView, out: Path) -> dict[str, Path]:
    """One drawing per finalist (``arch_<id>.png``); id -> PNG path."""
    from genome import load
    from genome.draw import draw_genome

    info = view.config.get("fitness", {})
    shape = _input_shape(str(info.get("dataset", "")))
    drawings = {}
    for rank, f in enumerate(view.finalists, start=1):
        genome_path, _ = child_files(view, f["id"])
        fit = f["metrics"].get("fitness")
        title = f"#{rank} {f['id']}" + ("" if fit is None else f"  F={100 * float(fit):.1f}%")
        drawings[f["id"]] = draw_genome(load(genome_path), out / f"arch_{f['id']}.png",
                                        input_shape=shape, title=title)
    return drawings


def _input_shape(dataset: str) -> tuple[int, int, int] | None:
    try:
        from nas.evaluation.data import dataset_info

        return tuple(dataset_info(dataset).input_shape)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - a drawing without shapes is still useful
        return None


def build_report(opts: ReportOptions, *, models: bool = True,
                 log: Callable[[str], None] = print) -> Path:
    """Read the run, compute the model-based sections (unless ``models`` is false), write the page.

    Bad input (missing or empty run directory, unreadable ``--extra-metrics``) raises
    :class:`UserError` before anything is written.
    """
    from nas.reporting.models import load_extra

    view = load_run(opts.run_dir)
    extra = load_extra(opts.extra_metrics)
    data: ReportData | None = ReportData(extra=extra) if extra else None
    if models:
        from nas.reporting.models import compute

        data = compute(view, opts, log=log)
        data.extra = extra
    drawings = draw_finalists(view, Path(opts.out))
    return render(view, data, opts, drawings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nas.report``."""
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    page = build_report(opts, models=not args.no_models, log=lambda m: print(m, file=sys.stderr))
    print(f"report written to {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
