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
from collections.abc import Sequence
from pathlib import Path

from nas.cli import ArgumentParser, run
from nas.errors import UserError
from nas.reporting.build import build_report
from nas.reporting.options import ATTACKS, PAPER_SOURCES, ReportOptions
from nas.reporting.runview import load_run
from nasbase.values import check_out_dir, nonneg_float, nonneg_int, positive_int

# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m nas.report``."""
    p = ArgumentParser(
        prog="python -m nas.report",
        description="Build one self-contained HTML report (search progress, final population, "
                    "transfer matrix, fooling rates, integrated gradients) of a search run.")
    p.add_argument("run_dir", help="the run directory (runs/<name>) written by nas.evolve")
    p.add_argument("--out", help="output directory of index.html and its PNGs (default: "
                                 "<run_dir>/report)")
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
    p.add_argument("--attacks", metavar="LIST",
                   help="comma-separated attacks of the fooling-rate table (default: the run's own "
                        "attack, whose examples are cached, and fgsm; --full: "
                        f"{','.join(ATTACKS)})")
    p.add_argument("--eval-size", type=nonneg_int, metavar="N",
                   help="test images used by the transfer matrix and fooling rates (0 = all; "
                        "default 500, --full: all)")
    p.add_argument("--baseline-epochs", type=positive_int,
                   help="fixed epochs of the baselines (reference architecture with CE and "
                        "with the run's defense, --baselines, --ce-copies; default: the "
                        "finalists' budget, the run's --refine-epochs as a cap with its "
                        "--refine-patience)")
    p.add_argument("--budget", type=nonneg_float, default=120.0, metavar="SECONDS",
                   help="seconds the report may spend training baselines not cached yet; one "
                        "whose estimated time does not fit is left out and named on the page "
                        "(default 120)")
    p.add_argument("--full", action="store_true",
                   help="full fidelity: train every baseline whatever it costs (cached "
                        "afterwards), every attack, the whole test split")
    p.add_argument("--max-finalists", type=nonneg_int, default=0, metavar="N",
                   help="evaluate only the N best finalists (0 = all; default)")
    p.add_argument("--baselines", default="", metavar="LIST",
                   help="comma-separated registered architectures also trained with the run's "
                        "defense and compared (e.g. he-baseline, paper Table 4); default none")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN",
                   help="other runs evaluated alike (e.g. the random-search baseline, "
                        "--strategy random) whose best finalist is compared side by side")
    p.add_argument("--ce-copies", action="store_true",
                   help="also train each finalist's architecture with plain CE (same budget as "
                        "the baselines), to separate what the architecture does from what the "
                        "defense does")
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
    p.add_argument("--front-size", choices=("params", "macs"), default="params",
                   help="size objective of the trade-off front (default params)")
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
    attacks = _names(args.attacks, "attacks") if args.attacks is not None else ()
    eval_size = args.eval_size if args.eval_size is not None else (0 if args.full else 500)
    if args.budget < 0:
        raise UserError("--budget must be >= 0")
    for name in attacks:
        REGISTERED.get(name)  # raises UnknownName listing the valid attacks
    for flag in ("ig_images", "ig_steps", "eval_size", "max_finalists"):
        if (getattr(args, flag) or 0) < (1 if flag == "ig_steps" else 0):
            raise UserError(f"--{flag.replace('_', '-')} must be >= "
                            f"{1 if flag == 'ig_steps' else 0}")
    if args.compare:  # a run that does not compare fails before anything is trained
        from nas.reporting.models import comparable_run

        view = load_run(args.run_dir)
        for other in args.compare:
            comparable_run(view, other)
    if args.out:
        check_out_dir(args.out)
    return ReportOptions(
        run_dir=args.run_dir, out=args.out or str(Path(args.run_dir) / "report"),
        ig_images=args.ig_images, ig_steps=args.ig_steps, transfer_from=sources,
        source_epochs=args.source_epochs, skip_transfer=args.skip_transfer, attacks=attacks,
        eval_size=eval_size, baseline_epochs=args.baseline_epochs, max_finalists=args.max_finalists,
        budget=args.budget, full=args.full,
        baselines=baselines, ce_copies=args.ce_copies, compare=tuple(args.compare),
        extra_metrics=tuple(args.extra_metrics), device=args.device, embed=not args.link_images,
        progress=not args.no_progress and sys.stderr.isatty(), seed=args.seed,
        front_size=args.front_size)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nas.report``."""
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    page = build_report(opts, models=not args.no_models, log=lambda m: print(m, file=sys.stderr))
    print(f"report written to {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
