"""The HTML page of a report: one function per section, and :func:`render`.

Each section reads the run view (:mod:`nas.reporting.runview`) and/or the computed
:class:`nas.report.ReportData` and returns an :class:`nas.reporting.html.Section`; figures are PNG
files (drawn by :mod:`nas.reporting.plots`) embedded or linked according to the options.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from nas.reporting import html as H
from nas.reporting import plots
from nas.reporting.front import Front, compute_front
from nas.reporting.runview import RunView, generation_stats, population_spectra, ranking_note
from nasbase.files import write_atomically, write_text_atomically

if TYPE_CHECKING:
    from nas.reporting.options import ReportData, ReportOptions


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
        body.append(_fig(opts, p, "Best and mean fitness (left) and clean / "
                                  "transferred-adversarial accuracy (right) of the population "
                                  "after each generation."))
    gens = [g["generation"] for g in view.generations if g["generation"] > 0]
    if gens:
        p = plots.plot_replacements(gens, [view.replacements.get(g, 0) for g in gens],
                                    out / "replacements.png")
        body.append(_fig(opts, p, "Children that replaced their nearest population member."))
    sg, spectra = population_spectra(view)
    if spectra:
        p = plots.plot_spectra(sg, spectra, out / "spectra.png")
        body.append(_fig(opts, p, "Spectra (eq. 3) of the population members per generation."))
    rows = [[H.fmt(s["generation"]), H.fmt(s["fitness_best"], pct=True),
             H.fmt(s["fitness_mean"], pct=True),
             H.fmt(s["clean_mean"], pct=True), H.fmt(s["adv_mean"], pct=True),
             H.fmt(view.replacements.get(int(s["generation"]), 0))] for s in stats]
    body.append(H.table(["generation", "best F", "mean F", "mean clean", "mean adv",
                         "replacements"], rows,
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
                     H.fmt(m.get("params")), H.fmt(m.get("macs"))])
    split = view.finalists[0]["split"] if view.finalists else "fitness"
    head = ["#", "id", "spectrum (conv, pool, sconv, sum, concat)", "search F", f"{split} clean",
            f"{split} adv", f"{split} F", "params", "MACs"]
    body = [H.table(head, rows, caption="Final population, best first, "
                                             f"{ranking_note(view.ranked_by)} ({split} split "
                                             "shown; F = min(clean, adv), eq. 4)")]
    figs = "".join(_fig(opts, p, f"#{i} {cid}")
                   for i, (cid, p) in enumerate(drawings.items(), start=1))
    body.append(f'<div class="grid">{figs}</div>')
    return H.Section("population", "Final population", "".join(body))


def section_front(view: RunView, opts: ReportOptions, front: Front) -> H.Section:
    """The trade-off front of every evaluated child (clean, transferred, size) and its
    hypervolume."""
    out, body = Path(opts.out), []
    finalists = [f["id"] for f in view.finalists]
    label = "parameters" if front.size == "params" else "multiply-accumulates per image"
    if front.points:
        pts = [{"id": p.id, "clean": p.clean, "adv": p.adv, "size": p.size} for p in front.points]
        p = plots.plot_front(pts, front.ids, finalists, out / "front.png", size_label=label)
        body.append(_fig(opts, p, "Every evaluated child (fitness split): the trade-off front in "
                                  f"(clean, transferred, {label}) in red, the final population "
                                  "circled."))
        p = plots.plot_hypervolume(front.hypervolume, out / "hypervolume.png")
        body.append(_fig(opts, p, "Hypervolume of the front of the children evaluated up to each "
                                  "generation."))
    rows = [[H.esc(p.id), H.fmt(p.generation), H.fmt(p.clean, pct=True), H.fmt(p.adv, pct=True),
             H.fmt(p.size), "yes" if p.id in finalists else ""] for p in front.front]
    body.append(H.table(["id", "generation", "clean", "transferred adv", label, "finalist"], rows,
                        caption=f"Trade-off front: {len(front.front)} of {len(front.points)} "
                                "evaluated children are not dominated (fitness split; nas.export "
                                "--front exports them)"))
    body.append(H.paragraph(
        f"A child dominates another when it is at least as good in clean accuracy, transferred "
        f"accuracy and {label} and better in one (DEAP sortNondominated). Hypervolume: fraction of "
        f"[0, 1]^3 dominated, sizes divided by {front.size_ref:.4g} (1.1 x the largest), reference "
        f"point (0, 0, 1).", cls="note"))
    return H.Section("front", "Trade-off front", "".join(body))


def _pct_table(table: dict[str, dict[str, float]], first: str, caption: str) -> str:
    cols = list(dict.fromkeys(c for r in table.values() for c in r))
    rows = [[H.esc(r)] + [H.fmt(table[r].get(c), pct=True) for c in cols] for r in table]
    return H.table([first, *cols], rows, caption=caption)


def section_transfer(data: ReportData, opts: ReportOptions) -> H.Section:
    """Clean / adversarial accuracy of every network and the transfer matrix (Table 2)."""
    label = {"clean": "clean", "adv": "transferred from the reference (run's set)",
             "fitness": "min(clean, transferred) (eq. 4)"}
    keys = list(dict.fromkeys(k for v in data.accuracy.values() for k in v))
    acc = {label.get(k, k + " (never seen by the search)"): {n: v.get(k)
                                                             for n, v in data.accuracy.items()}
           for k in keys}
    body = [_pct_table(acc, "accuracy on", "Test-split accuracy of each network (paper Tables 1 "
                                           "and 4); held-out sources are trained with CE and "
                                           "crafted on with the run's attack")]
    if data.transfer:
        body.append(_pct_table(data.transfer, "examples crafted on",
                               "Adversarial accuracy against examples crafted on other networks "
                               "(paper Table 2; higher = less transfer)"))
    body += [_figs(opts, data, "transfer"), _notes(data, "transfer")]
    return H.Section("transfer", "Transfer matrix", "".join(body))


def section_fooling(data: ReportData, opts: ReportOptions) -> H.Section:
    """Fooling rates per attack (Table 5)."""
    rates = {a: {n: r["rate"] for n, r in row.items()} for a, row in data.fooling.items()}
    counts = {a: {n: f"{r['fooled']}/{r['eligible']}" for n, r in row.items()}
              for a, row in data.fooling.items()}
    cols = list(dict.fromkeys(c for r in rates.values() for c in r))
    rows = [[H.esc(a)] + [f"{H.fmt(rates[a].get(c), pct=True)} ({H.esc(counts[a].get(c, '-'))})"
                          for c in cols]
            for a in rates]
    body = [H.table(["attack", *cols], rows, caption="Fooling rate (fooled / images both the "
                                                     "reference and the network classify "
                                                     "correctly; lower is better; paper Table 5)")]
    settings = [[H.esc(a), H.fmt(s.get("eps")), H.fmt(s.get("step_size")), H.fmt(s.get("steps"))]
                for a, s in data.attack_settings.items()]
    body.append(H.table(["attack", "eps", "step size", "steps"], settings,
                        caption="Attack settings (pixels in [0, 1])"))
    body += [_figs(opts, data, "fooling"), _notes(data, "fooling")]
    return H.Section("fooling", "Fooling rates", "".join(body))


def section_ig(data: ReportData, opts: ReportOptions) -> H.Section:
    """Integrated-gradients maps and pixel distances (Fig. 3)."""
    rows = []
    for name, r in data.ig.items():
        d, delta = r["distance"], r["delta"]
        rows.append([H.esc(name), H.fmt(sum(d) / len(d)), H.fmt(sum(d)),
                     H.fmt(max(abs(x) for x in delta))])
    body = [_figs(opts, data, "ig"),
            H.table(["network", "mean pixel distance", "total pixel distance", "max |delta|"], rows,
                    caption="Pixel distance to the reference's map (0 = identical, 1 = every sign "
                            "reversed)"),
            H.paragraph("Pixel distance d(a, b) = sum_p |a_p - b_p| / sum_p (|a_p| + |b_p|) over "
                        "the maps scaled to [-1, 1]; delta = Captum's convergence delta (sum of "
                        "attributions minus the logit gain over the black baseline).", cls="note"),
            _notes(data, "ig")]
    return H.Section("ig", "Integrated gradients", "".join(body))


def section_extra(data: ReportData) -> H.Section:
    """Retraining results on other datasets (paper Tables 3 and 7)."""
    keys = [k for k in dict.fromkeys(k for r in data.extra for k in r)
            if any(r.get(k) is not None for r in data.extra)]
    pct = ("clean_acc", "adv_acc", "fitness", "fooling_rate")
    rows = [[H.fmt(r.get(k), pct=k in pct) for k in keys] for r in data.extra]
    return H.Section("extra", "Retraining on other datasets",
                     H.table(keys, rows, caption="Results given with --extra-metrics (paper "
                                                 "Tables 3 and 7)"))


def section_stages(data: ReportData) -> H.Section:
    """How long each stage of this report took (measured; the page itself is written after)."""
    rows = [[H.esc(name), H.fmt(round(sec, 1))] for name, sec in data.timings.items()]
    return H.Section("stages", "Report stages",
                     H.table(["stage", "seconds"], rows,
                             caption="Measured time of each stage of this "
                             "report (python -m nas.report --full: every baseline and attack)"))


def _interval_cell(v: dict | None) -> str:
    """``12.3% [10.1, 14.5]`` from an interval's dict (``-`` when not measured)."""
    if not v or v.get("mean") is None:
        return "-"
    if v.get("low") is None or v.get("high") is None:
        return f"{H.fmt(v['mean'], pct=True, digits=1)} (n={v.get('n', 1)})"
    return (f"{H.fmt(v['mean'], pct=True, digits=1)} [{100 * v['low']:.1f}, "
            f"{100 * v['high']:.1f}]")


def section_table6(view: RunView, opts: ReportOptions) -> H.Section | None:
    """The run's Table 6 (``python -m nas.table6 RUN`` writes ``<run>/table6/table6.json``):
    the evolved network beside JPEG, bilateral filtering and adversarial training; with
    replicates, means with 95 % intervals and the differences against Ref+GM. ``None``
    when the run has no Table 6."""
    folder = view.path / "table6"
    try:
        doc = json.loads((folder / "table6.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return H.Section("table6", "Standard defenses (Table 6)", H.paragraph(
            f"{folder / 'table6.json'} is unreadable ({exc}); run python -m nas.table6 "
            f"{view.path} again.", cls="note"))
    head = ["network", "kind", "fooling rate (Table 6)", "clean", "transferred",
            "held-out worst", "white-box PGD (AT expected to win)", "paper"]
    if "replicates" in doc:
        rows = [[H.esc(r["name"]), H.esc(r["kind"])]
                + [_interval_cell(r.get(c)) for c in ("fooling", "clean", "transferred",
                                                      "held_out_worst", "white_box")]
                + [H.fmt(r.get("paper"), pct=True, digits=1)] for r in doc["rows"]]
        caption = (f"Means over {doc['replicates']} replicates with 95 % Student-t intervals; "
                   "lower fooling rate is better, higher accuracies are better; the paper's "
                   "column is reduced CIFAR-10")
    else:
        rows = [[H.esc(r["name"]), H.esc(r["kind"]),
                 f"{H.fmt(r['fooling'], pct=True, digits=1)} ({r['fooled']}/{r['eligible']})"]
                + [H.fmt(r.get(c), pct=True, digits=1) for c in
                   ("clean", "transferred", "held_out_worst", "white_box", "paper")]
                for r in doc["rows"]]
        caption = ("One training per row (fooled / eligible); lower fooling rate is better, "
                   "higher accuracies are better; the paper's column is reduced CIFAR-10")
    body = [H.table(head, rows, caption=caption)]
    for key, what in (("fooling_differences", "Transferred fooling rate, paired by replicate "
                       "(above zero: the GM row is fooled less)"),
                      ("white_box_differences", "White-box PGD accuracy, paired by replicate "
                       "(above zero: adversarial training holds more)")):
        diffs = doc.get(key) or {}
        if diffs:
            body.append(H.table(["difference", "points (mean, 95 % interval)", "verdict"],
                                [[H.esc(k), _interval_cell(v), H.esc(v.get("verdict", ""))]
                                 for k, v in diffs.items()], caption=what))
    plot = folder / "table6-differences.png"
    if plot.is_file():
        copy = Path(opts.out) / plot.name
        write_atomically(copy, lambda fh: fh.write(plot.read_bytes()))
        body.append(_fig(opts, copy, "Table 6 differences against zero, paired by replicate"))
    body += [H.paragraph(n, cls="note") for n in doc.get("notes", [])]
    return H.Section("table6", "Standard defenses (Table 6)", "".join(body))


def render(view: RunView, data: ReportData | None, opts: ReportOptions,
           drawings: dict[str, Path]) -> Path:
    """Write ``index.html`` (and ``results.json``) into ``opts.out``; returns the page path."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    front = compute_front(view.children.values(), opts.front_size)
    sections = [section_overview(view), section_progress(view, opts),
                section_population(view, opts, drawings),
                section_front(view, opts, front)]
    if data is not None:
        if data.accuracy or data.transfer:
            sections.append(section_transfer(data, opts))
        if data.fooling:
            sections.append(section_fooling(data, opts))
        if data.ig:
            sections.append(section_ig(data, opts))
        if data.extra:
            sections.append(section_extra(data))
        if data.timings:
            sections.append(section_stages(data))
    table6 = section_table6(view, opts)
    if table6 is not None:
        sections.append(table6)
    html = H.page(f"Search report: {view.path.name}", sections,
                  intro=H.paragraph("Neuroevolution with gradient misalignment; figures are also "
                                    "saved as PNG files beside this page, numbers in "
                                    "results.json."))
    page = out / "index.html"
    write_text_atomically(page, html)
    results = {"run": str(view.path), "options": asdict(opts),
               "finalists": view.finalists, "generations": generation_stats(view),
               "front": front.to_dict(),
               "models": None if data is None else {k: v for k, v in asdict(data).items()
                                                    if k != "figures"}}
    write_text_atomically(out / "results.json", json.dumps(results, indent=1, default=str))
    return page
