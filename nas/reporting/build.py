"""Build the HTML report of a run (the library behind ``python -m nas.report``).

:func:`build_report` reads the run, computes the model-based sections
(:mod:`nas.reporting.models`), draws the finalists and writes one self-contained page
(:mod:`nas.reporting.page`); docs/report.md explains each section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nas.reporting.options import ReportData, ReportOptions
from nas.reporting.page import render
from nas.reporting.runview import RunView, child_files, load_run


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
    from nas.reporting.models import Stages, load_extra

    stages = Stages(log)
    with stages("read the run"):
        view = load_run(opts.run_dir)
        extra = load_extra(opts.extra_metrics)
    data: ReportData | None = ReportData(extra=extra) if extra else None
    if models:
        from nas.reporting.models import compute

        data = compute(view, opts, log=log, stages=stages)
        data.extra = extra
    with stages("architecture drawings"):
        drawings = draw_finalists(view, Path(opts.out))
    if data is not None:
        data.timings = stages.times
    with stages("figures and page"):
        page = render(view, data, opts, drawings)
    return page
