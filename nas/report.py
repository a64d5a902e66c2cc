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
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas import _html as H
from nas import plots
from nas._runview import RunView, child_files, generation_stats, load_run, population_spectra
from nas.cli import UserError, run

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
        ref_gm_epochs: epochs of the "reference + GM" baseline (``None``: the run's
            refinement epochs, else its child epochs).
        max_finalists: evaluate at most this many finalists (best first; 0 = all).
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
    ref_gm_epochs: int | None = None
    max_finalists: int = 0
    extra_metrics: tuple[str, ...] = ()
    device: str = "auto"
    embed: bool = True
    progress: bool = False
    seed: int = 0


@dataclass
class ReportData:
    """The numbers of the model-based sections (filled by :mod:`nas._report_models`).

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


# --------------------------------------------------------------------------- sections


def _fig(opts: ReportOptions, path: str | Path, caption: str) -> str:
    out = Path(opts.out)
    return H.image(Path(path), page_dir=out, alt=caption, caption=caption, embed=opts.embed)


def _figs(opts: ReportOptions, data: ReportData, key: str) -> str:
    return "".join(_fig(opts, p, c) for p, c in data.figures.get(key, []))


def _notes(data: ReportData, key: str) -> str:
    return "".join(H.paragraph(n, cls="note") for n in data.notes.get(key, []))


def section_overview(view: RunView) -> H.Section:
    """Configuration summary and state of the run."""
    search, fit = view.config.get("search", {}), view.config.get("fitness", {})
    keys = [("dataset", fit), ("reference", fit), ("defense", fit), ("population", search),
            ("children", search), ("generations", search), ("epochs", search),
            ("refine_epochs", search), ("train_size", fit), ("test_size", fit), ("seed", search)]
    rows = [[H.esc(k), H.esc(src.get(k, "-"))] for k, src in keys if k in src]
    rows.append(["evaluated children", H.fmt(len(view.children))])
    rows.append(["finished", "yes (final.json)" if view.finished else "no (population so far)"])
    return H.Section("run", "Run", H.table(["setting", "value"], rows, caption=str(view.path)))


def section_progress(view: RunView, opts: ReportOptions) -> H.Section:
    """Fitness / accuracies per generation, replacements, spectra."""
    out, body = Path(opts.out), []
    stats = generation_stats(view)
    if stats:
        p = plots.plot_progress(stats, out / "progress.png")
        body.append(_fig(opts, p, "Best and mean fitness (left) and clean / transferred-adversarial "
                                  "accuracy (right) of the population after each generation."))
    gens = [g["generation"] for g in view.generations if g["generation"] > 0]
    if gens:
        p = plots.plot_replacements(gens, [view.replacements.get(g, 0) for g in gens], out / "replacements.png")
        body.append(_fig(opts, p, "Children that replaced their nearest population member."))
    sg, spectra = population_spectra(view)
    if spectra:
        p = plots.plot_spectra(sg, spectra, out / "spectra.png")
        body.append(_fig(opts, p, "Spectra (eq. 3) of the population members per generation."))
    rows = [[H.fmt(s["generation"]), H.fmt(s["fitness_best"], pct=True), H.fmt(s["fitness_mean"], pct=True),
             H.fmt(s["clean_mean"], pct=True), H.fmt(s["adv_mean"], pct=True),
             H.fmt(view.replacements.get(int(s["generation"]), 0))] for s in stats]
    body.append(H.table(["generation", "best F", "mean F", "mean clean", "mean adv", "replacements"], rows,
                        caption="Population per generation (fitness split)"))
    return H.Section("progress", "Search progress", "".join(body))


def section_population(view: RunView, opts: ReportOptions, drawings: dict[str, Path]) -> H.Section:
    """The final population: metrics table and architecture drawings."""
    rows = []
    for rank, f in enumerate(view.finalists, start=1):
        m, s = f["metrics"], f.get("search_metrics", {})
        rows.append([H.fmt(rank), H.esc(f["id"]), H.esc(tuple(f.get("spectrum") or ())),
                     H.fmt(s.get("fitness"), pct=True), H.fmt(m.get("clean_acc"), pct=True),
                     H.fmt(m.get("adv_acc"), pct=True), H.fmt(m.get("fitness"), pct=True),
                     H.fmt(m.get("params")), H.fmt(m.get("flops"))])
    split = view.finalists[0]["split"] if view.finalists else "fitness"
    head = ["#", "id", "spectrum (conv, pool, sconv, sum, concat)", "search F", f"{split} clean",
            f"{split} adv", f"{split} F", "params", "FLOPs"]
    body = [H.table(head, rows, caption=f"Final population, best first ({split} split; F = min(clean, adv), eq. 4)")]
    figs = "".join(_fig(opts, p, f"#{i} {cid}") for i, (cid, p) in enumerate(drawings.items(), start=1))
    body.append(f'<div class="grid">{figs}</div>')
    return H.Section("population", "Final population", "".join(body))


def _pct_table(table: dict[str, dict[str, float]], first: str, caption: str) -> str:
    cols = list(dict.fromkeys(c for r in table.values() for c in r))
    rows = [[H.esc(r)] + [H.fmt(table[r].get(c), pct=True) for c in cols] for r in table]
    return H.table([first, *cols], rows, caption=caption)


def section_transfer(data: ReportData, opts: ReportOptions) -> H.Section:
    """Clean / adversarial accuracy of every network and the transfer matrix (Table 2)."""
    acc = {"clean": {n: v.get("clean") for n, v in data.accuracy.items()},
           "transferred adv. (run's set)": {n: v.get("adv") for n, v in data.accuracy.items()}}
    body = [_pct_table(acc, "accuracy on", "Test-split accuracy of each network (paper Tables 1 and 4)")]
    if data.transfer:
        body.append(_pct_table(data.transfer, "examples crafted on",
                               "Adversarial accuracy against examples crafted on other networks "
                               "(paper Table 2; higher = less transfer)"))
    body += [_figs(opts, data, "transfer"), _notes(data, "transfer")]
    return H.Section("transfer", "Transfer matrix", "".join(body))


def section_fooling(data: ReportData, opts: ReportOptions) -> H.Section:
    """Fooling rates per attack (Table 5)."""
    rates = {a: {n: r["rate"] for n, r in row.items()} for a, row in data.fooling.items()}
    counts = {a: {n: f"{r['fooled']}/{r['eligible']}" for n, r in row.items()} for a, row in data.fooling.items()}
    cols = list(dict.fromkeys(c for r in rates.values() for c in r))
    rows = [[H.esc(a)] + [f"{H.fmt(rates[a].get(c), pct=True)} ({H.esc(counts[a].get(c, '-'))})" for c in cols]
            for a in rates]
    body = [H.table(["attack", *cols], rows, caption="Fooling rate (fooled / images both the reference and "
                                                     "the network classify correctly; lower is better; paper Table 5)")]
    settings = [[H.esc(a), H.fmt(s.get("eps")), H.fmt(s.get("step_size")), H.fmt(s.get("steps"))]
                for a, s in data.attack_settings.items()]
    body.append(H.table(["attack", "eps", "step size", "steps"], settings, caption="Attack settings (pixels in [0, 1])"))
    body += [_figs(opts, data, "fooling"), _notes(data, "fooling")]
    return H.Section("fooling", "Fooling rates", "".join(body))


def section_ig(data: ReportData, opts: ReportOptions) -> H.Section:
    """Integrated-gradients maps and pixel distances (Fig. 3)."""
    rows = []
    for name, r in data.ig.items():
        d, delta = r["distance"], r["delta"]
        rows.append([H.esc(name), H.fmt(sum(d) / len(d)), H.fmt(sum(d)), H.fmt(max(abs(x) for x in delta))])
    body = [_figs(opts, data, "ig"),
            H.table(["network", "mean pixel distance", "total pixel distance", "max |delta|"], rows,
                    caption="Pixel distance to the reference's map (0 = identical, 1 = every sign reversed)"),
            H.paragraph("Pixel distance d(a, b) = sum_p |a_p - b_p| / sum_p (|a_p| + |b_p|) over the maps "
                        "scaled to [-1, 1]; delta = Captum's convergence delta (sum of attributions minus "
                        "the logit gain over the black baseline).", cls="note"),
            _notes(data, "ig")]
    return H.Section("ig", "Integrated gradients", "".join(body))


def section_extra(data: ReportData) -> H.Section:
    """Retraining results on other datasets (paper Tables 3 and 7)."""
    keys = list(dict.fromkeys(k for r in data.extra for k in r))
    rows = [[H.fmt(r.get(k), pct=k.endswith("acc") or k == "fitness") for k in keys] for r in data.extra]
    return H.Section("extra", "Retraining on other datasets",
                     H.table(keys, rows, caption="Results given with --extra-metrics (paper Tables 3 and 7)"))


def render(view: RunView, data: ReportData | None, opts: ReportOptions, drawings: dict[str, Path]) -> Path:
    """Write ``index.html`` (and ``results.json``) into ``opts.out``; returns the page path."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = [section_overview(view), section_progress(view, opts), section_population(view, opts, drawings)]
    if data is not None:
        if data.accuracy or data.transfer:
            sections.append(section_transfer(data, opts))
        if data.fooling:
            sections.append(section_fooling(data, opts))
        if data.ig:
            sections.append(section_ig(data, opts))
        if data.extra:
            sections.append(section_extra(data))
    html = H.page(f"Search report: {view.path.name}", sections,
                  intro=H.paragraph("Neuroevolution with gradient misalignment; figures are also saved "
                                    "as PNG files beside this page, numbers in results.json."))
    page = out / "index.html"
    _atomic(page, html)
    results = {"run": str(view.path), "options": asdict(opts),
               "finalists": view.finalists, "generations": generation_stats(view),
               "models": None if data is None else {k: v for k, v in asdict(data).items() if k != "figures"}}
    _atomic(out / "results.json", json.dumps(results, indent=1, default=str))
    return page


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m nas.report``."""
    p = argparse.ArgumentParser(
        prog="python -m nas.report",
        description="Build one self-contained HTML report (search progress, final population, "
                    "transfer matrix, fooling rates, integrated gradients) of a search run.")
    p.add_argument("run_dir", help="the run directory (runs/<name>) written by nas.evolve")
    p.add_argument("--out", help="output directory of index.html and its PNGs (default: <run_dir>/report)")
    p.add_argument("--ig-images", type=int, default=4, metavar="N",
                   help="test images whose integrated-gradients maps are drawn, one per class first "
                        "(0 = skip the section; default 4)")
    p.add_argument("--ig-steps", type=int, default=64, help="integration steps of each IG map (default 64)")
    p.add_argument("--transfer-from", default="own", metavar="LIST",
                   help="comma-separated networks the transfer matrix crafts examples on: 'own' (the "
                        "run's reference) and/or reference names (resnet18, vgg16_bn, densenet121, "
                        "squeezenet1_1, ...); 'paper' = own + those four. Each is trained with CE once "
                        "and cached. Default: own (cheap on CPU)")
    p.add_argument("--source-epochs", type=int, help="CE epochs of the --transfer-from networks "
                                                     "(default: the run's reference epochs)")
    p.add_argument("--skip-transfer", action="store_true", help="leave out the transfer matrix and fooling rates")
    p.add_argument("--attacks", default=",".join(ATTACKS), metavar="LIST",
                   help=f"comma-separated attacks of the fooling-rate table (default {','.join(ATTACKS)})")
    p.add_argument("--eval-size", type=int, default=500, metavar="N",
                   help="test images used by the transfer matrix and fooling rates (0 = all; default 500)")
    p.add_argument("--ref-gm-epochs", type=int, help="epochs of the reference+GM baseline "
                                                     "(default: the run's --refine-epochs)")
    p.add_argument("--max-finalists", type=int, default=0, metavar="N",
                   help="evaluate only the N best finalists (0 = all; default)")
    p.add_argument("--extra-metrics", nargs="+", default=[], metavar="FILE",
                   help="JSON results of retraining on other datasets (nas.train output) to tabulate")
    p.add_argument("--no-models", action="store_true",
                   help="only the sections read from the run log (no network is loaded or trained)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--link-images", action="store_true",
                   help="link the PNGs beside the page instead of embedding them")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts and subsets")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UserError(f"--{what} needs at least one name")
    return names


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    """Validate the flags and freeze them into :class:`ReportOptions`."""
    from nas.attacks import ATTACKS as REGISTERED
    from nas.references import list_references

    sources = _names(args.transfer_from, "transfer-from")
    if "paper" in sources:
        sources = tuple(dict.fromkeys(("own", *PAPER_SOURCES, *(s for s in sources if s != "paper"))))
    valid = ["own", "paper", *list_references()]
    for name in sources:
        if name not in valid:
            raise UserError(f"unknown --transfer-from {name!r}; valid: {', '.join(valid)}")
    attacks = _names(args.attacks, "attacks")
    for name in attacks:
        REGISTERED.get(name)  # raises UnknownName listing the valid attacks
    for flag in ("ig_images", "ig_steps", "eval_size", "max_finalists"):
        if getattr(args, flag) < (1 if flag == "ig_steps" else 0):
            raise UserError(f"--{flag.replace('_', '-')} must be >= {1 if flag == 'ig_steps' else 0}")
    return ReportOptions(
        run_dir=args.run_dir, out=args.out or str(Path(args.run_dir) / "report"),
        ig_images=args.ig_images, ig_steps=args.ig_steps, transfer_from=sources,
        source_epochs=args.source_epochs, skip_transfer=args.skip_transfer, attacks=attacks,
        eval_size=args.eval_size, ref_gm_epochs=args.ref_gm_epochs, max_finalists=args.max_finalists,
        extra_metrics=tuple(args.extra_metrics), device=args.device, embed=not args.link_images,
        progress=not args.no_progress and sys.stderr.isatty(), seed=args.seed)


def draw_finalists(view: RunView, out: Path) -> dict[str, Path]:
    """One drawing per finalist (``arch_<id>.png``); id -> PNG path."""
    from genome import load

    drawings = {}
    for rank, f in enumerate(view.finalists, start=1):
        genome_path, _ = child_files(view, f["id"])
        fit = f["metrics"].get("fitness")
        title = f"#{rank} {f['id']}" + ("" if fit is None else f"  F={100 * float(fit):.1f}%")
        drawings[f["id"]] = plots.draw_genome(load(genome_path), out / f"arch_{f['id']}.png", title=title)
    return drawings


def build_report(opts: ReportOptions, *, models: bool = True, log=print) -> Path:
    """Read the run, compute the model-based sections (unless ``models`` is false), write the page."""
    view = load_run(opts.run_dir)
    extra = ReportData()
    if models:
        from nas._report_models import compute

        data: ReportData | None = compute(view, opts, log=log)
    else:
        from nas._report_models import load_extra

        extra.extra = load_extra(opts.extra_metrics)
        data = extra if extra.extra else None
    drawings = draw_finalists(view, Path(opts.out))
    return render(view, data, opts, drawings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nas.report``."""
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    load_run(opts.run_dir)  # bad input fails here, before anything is written
    page = build_report(opts, models=not args.no_models, log=lambda m: print(m, file=sys.stderr))
    print(f"report written to {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
