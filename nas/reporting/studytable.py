"""The numbers of a multi-seed study: per method mean +- 95 % interval, paired differences.

A study (``python -m nas.study``) holds, for every seed, one *cell* per method: the search
(``ga``), random search, and baselines trained against the same reference on the same data
(``he-ref+gm``, ``he-baseline+gm``, the search's best architecture trained with CE,
``best+ce``). Every cell yields one metrics dict: a search cell its best finalist's test
metrics (``final.json``, ranked on validation), a baseline cell its ``metrics.json``.

A cell's value of a metric is the mean over its *replicates* (independent trainings of the
same network): ``metrics["replicates"]`` when the run trained several, else the single
result as one replicate. Then (:mod:`nas.evaluation.stats`):

- per method, the mean over seeds with its 95 % Student-t interval;
- per comparison ``search - other``, the paired difference over the seeds both cells have
  (same seed = same data subsets, same reference, same test images), with its interval and
  the verdict ("higher", "lower", "no difference shown", "undefined (n=1)").

``held_out_worst`` is the lowest held-out accuracy (:mod:`nas.evaluation.heldout`), taken from
the metrics or, for results that predate it, as the minimum of ``held_out``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nas.evaluation.stats import Interval, paired_difference, t_interval

#: The metrics a study compares, in table order, with the words a table heads them with.
METRICS = {"fitness": "test fitness", "clean_acc": "clean acc", "adv_acc": "transferred acc",
           "held_out_worst": "held-out worst case", "white_box_acc": "white-box PGD acc"}


def replicates(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The replicates of one result (the result itself when it carries none)."""
    reps = metrics.get("replicates")
    return list(reps) if isinstance(reps, list) and reps else [metrics]


def metric_value(result: Mapping[str, Any], name: str) -> float | None:
    """One replicate's value of a metric; ``None`` when it was not measured."""
    value = result.get(name)
    if value is None and name == "held_out_worst":
        held = result.get("held_out") or {}
        value = min(held.values()) if held else None
    return None if value is None else float(value)


def cell_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """A cell's value of a metric: the mean over its replicates (``None`` if any lacks it)."""
    values = [metric_value(r, name) for r in replicates(metrics)]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _per_seed(cells: Mapping[int, Mapping[str, Any]], name: str) -> dict[int, float]:
    out = {}
    for seed, metrics in sorted(cells.items()):
        value = cell_value(metrics, name)
        if value is not None:
            out[seed] = value
    return out


def study_table(cells: Mapping[str, Mapping[int, Mapping[str, Any]]], search: str,
                others: Sequence[str]) -> dict[str, Any]:
    """The study's table as JSON-able data.

    Args:
        cells: method -> seed -> the cell's metrics dict (only finished cells).
        search: the method every difference starts from (``ga``).
        others: the methods it is compared with, in order.

    Returns:
        ``{"methods": {method: {metric: {**Interval.to_dict(), "per_seed": {seed: value}}}},
        "differences": {"search - other": {metric: {..., "per_seed": {seed: a - b}}}}}``; a
        metric no cell measured is left out.
    """
    table: dict[str, Any] = {"search": search, "methods": {}, "differences": {}}
    for method in [search, *others]:
        row = {}
        for name in METRICS:
            values = _per_seed(cells.get(method, {}), name)
            if values:
                row[name] = {**t_interval(list(values.values())).to_dict(),
                             "per_seed": {str(s): v for s, v in values.items()}}
        table["methods"][method] = row
    for other in others:
        row = {}
        for name in METRICS:
            a, b = _per_seed(cells.get(search, {}), name), _per_seed(cells.get(other, {}), name)
            seeds = sorted(set(a) & set(b))
            if seeds:
                diff = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
                row[name] = {**diff.to_dict(),
                             "per_seed": {str(s): a[s] - b[s] for s in seeds}}
        table["differences"][f"{search} - {other}"] = row
    return table


def interval_of(entry: Mapping[str, Any]) -> Interval:
    """The :class:`Interval` of one table entry (its JSON form)."""
    return Interval(entry["mean"], entry["low"], entry["high"], entry["n"], entry["sd"],
                    entry["level"])


def _cell(entry: Mapping[str, Any] | None, *, difference: bool) -> str:
    if entry is None:
        return "-"
    iv = interval_of(entry)
    text = iv.text(scale=100.0, digits=1)
    return f"{text}, {iv.verdict()}" if difference and iv.low is not None else text


def markdown(table: Mapping[str, Any]) -> str:
    """The table as markdown: differences first (what a reader asks), then each method."""
    names = [n for n in METRICS if any(n in row for row in table["methods"].values())]
    head = "| | " + " | ".join(METRICS[n] for n in names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    lines = ["## Paired differences (percentage points, mean [95 % interval] over seeds)", "",
             head, rule]
    for label, row in table["differences"].items():
        lines.append(f"| {label} | " + " | ".join(_cell(row.get(n), difference=True)
                                                   for n in names) + " |")
    lines += ["", "A difference whose interval contains 0 shows no difference: the seeds do "
              "not tell which method is better.", "",
              "## Methods (%, mean [95 % interval] over seeds)", "", head, rule]
    for method, row in table["methods"].items():
        lines.append(f"| {method} | " + " | ".join(_cell(row.get(n), difference=False)
                                                    for n in names) + " |")
    return "\n".join(lines) + "\n"


def plotted_differences(table: Mapping[str, Any],
                        metrics: Sequence[str] = ("fitness", "held_out_worst")
                        ) -> dict[str, Interval]:
    """``"<difference>, <metric>" -> Interval`` of the metrics a study plots."""
    return {f"{label}, {METRICS[name]}": interval_of(row[name])
            for name in metrics for label, row in table["differences"].items() if name in row}
