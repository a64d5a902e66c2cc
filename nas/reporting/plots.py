"""Figures of a search report, drawn with matplotlib's Agg backend (no display needed).

Every function takes plain data (numbers, lists, dicts, tensors), writes one PNG and returns
its path, so it can be used outside the report. Architecture drawings come from
``genome.draw.draw_genome``. Accuracies are fractions in [0, 1] and drawn
as percentages. Each figure has a title, labelled axes with units and a legend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from genome import SPECTRUM_OPS
from nasbase.files import write_atomically

# Paper Fig. 3: red = negative attribution, green = positive, white = none.
IG_CMAP = LinearSegmentedColormap.from_list("ig_red_green", ["#c0392b", "#ffffff", "#1e8449"])
DPI = 110


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
              **kwargs: object) -> tuple[Figure, object]:
    """``plt.subplots`` without pyplot: a :class:`Figure` of its own (no global backend, no
    figure kept alive by pyplot's registry)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight"))
    return path


def _pct(values: Sequence[float]) -> np.ndarray:
    return 100.0 * np.asarray(values, dtype=float)


def plot_progress(stats: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Fitness and accuracies of the population per generation.

    Args:
        stats: one dict per generation with ``generation``, ``fitness_best``,
            ``fitness_mean``, ``clean_mean``, ``adv_mean``, ``clean_best``, ``adv_best``
            (``*_best`` = accuracies of the fittest member; fractions in [0, 1]).
        path: PNG to write.
    """
    gen = [s["generation"] for s in stats]
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(11, 3.8), sharex=True)
    ax1.plot(gen, _pct([s["fitness_best"] for s in stats]), "o-", label="best")
    ax1.plot(gen, _pct([s["fitness_mean"] for s in stats]), "s--", label="population mean")
    ax1.set_title("Fitness = min(clean, adversarial) (eq. 4)")
    ax2.plot(gen, _pct([s["clean_mean"] for s in stats]), "o-", color="tab:blue",
             label="clean, mean")
    ax2.plot(gen, _pct([s["adv_mean"] for s in stats]), "o-", color="tab:red",
             label="transferred adv., mean")
    ax2.plot(gen, _pct([s["clean_best"] for s in stats]), ":", color="tab:blue",
             label="clean, fittest")
    ax2.plot(gen, _pct([s["adv_best"] for s in stats]), ":", color="tab:red",
             label="transferred adv., fittest")
    ax2.set_title("Population accuracy (fitness split)")
    for ax in (ax1, ax2):
        ax.set_xlabel("generation")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def plot_replacements(generations: Sequence[int], counts: Sequence[int], path: str | Path) -> Path:
    """Bar chart: how many population members a child replaced in each generation."""
    fig, ax = _subplots(figsize=(6, 3.2))
    ax.bar(generations, counts, color="tab:green", label="children that replaced a member")
    ax.set_title("Replacements per generation (niche selection, Alg. 1 l. 8-9)")
    ax.set_xlabel("generation")
    ax.set_ylabel("replacements (count)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_spectra(
    generations: Sequence[int], spectra: Sequence[Sequence[Sequence[int]]], path: str | Path
) -> Path:
    """The population's spectra (paper eq. 3) over time, one panel per component.

    Args:
        generations: generation numbers.
        spectra: per generation, the spectrum ``(conv, pool, sconv, sum, concat)`` of every
            population member.
        path: PNG to write.
    """
    fig, axes = _subplots(1, 5, figsize=(14, 3.0), sharex=True)
    for k, (ax, name) in enumerate(zip(axes, SPECTRUM_OPS, strict=True)):
        values = [np.asarray([s[k] for s in pop], dtype=float) for pop in spectra]
        for g, v in zip(generations, values, strict=True):
            ax.scatter(np.full(len(v), g), v, s=14, alpha=0.5, color="tab:gray")
        lo, hi = [v.min() for v in values], [v.max() for v in values]
        ax.fill_between(generations, lo, hi, alpha=0.2, color="tab:purple", label="min-max")
        ax.plot(generations, [v.mean() for v in values], color="tab:purple", label="mean")
        ax.set_title(f"#{name} blocks")
        ax.set_xlabel("generation")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("blocks (count)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Population spectra over the search (dots = members)", y=1.04)
    return _save(fig, path)


def plot_ig_grid(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    distances: Mapping[str, torch.Tensor],
    deltas: Mapping[str, torch.Tensor],
    path: str | Path,
) -> Path:
    """Integrated-gradients maps side by side (paper Fig. 3).

    Args:
        images: ``(N, C, H, W)`` inputs in [0, 1].
        maps: column title -> ``(N, H, W)`` maps in [-1, 1]; the first one is the reference.
        distances: column title -> ``(N,)`` pixel distance to the reference's map.
        deltas: column title -> ``(N,)`` Captum convergence deltas.
        path: PNG to write.
    """
    n, names = images.shape[0], list(maps)
    fig, axes = _subplots(n, len(names) + 1, figsize=(2.3 * (len(names) + 1), 2.4 * n),
                          squeeze=False)
    for i in range(n):
        img = images[i].detach().cpu().permute(1, 2, 0).numpy()  # (H, W, C)
        axes[i, 0].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray",
                          vmin=0, vmax=1)
        axes[i, 0].set_title("input" if i == 0 else "", fontsize=9)
        for j, name in enumerate(names, start=1):
            im = axes[i, j].imshow(maps[name][i].detach().cpu().numpy(), cmap=IG_CMAP,
                                   vmin=-1, vmax=1)
            head = f"{name}\n" if i == 0 else ""
            axes[i, j].set_title(
                f"{head}dist {float(distances[name][i]):.3f}, delta {float(deltas[name][i]):.1e}",
                fontsize=8
            )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    cbar = fig.colorbar(im, ax=axes, shrink=0.6, location="right")
    cbar.set_label("attribution scaled to [-1, 1] (red -, green +)")
    fig.suptitle("Integrated gradients of the true class (dist = pixel distance to the reference)")
    return _save(fig, path)


def plot_matrix(
    table: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    title: str,
    row_label: str,
    col_label: str,
    value_label: str,
    cmap: str = "viridis",
) -> Path:
    """Annotated heat map of ``table[row][col]`` fractions, drawn as percentages.

    Used for the transfer matrix (rows = where the examples were crafted, columns = the
    evaluated network; paper Table 2) and the fooling rates (rows = attack; Table 5).
    Missing cells are left blank.
    """
    rows = list(table)
    cols = list(dict.fromkeys(c for r in rows for c in table[r]))
    data = np.array([[table[r].get(c, np.nan) for c in cols] for r in rows], dtype=float) * 100
    fig, ax = _subplots(figsize=(1.6 + 1.5 * len(cols), 1.2 + 0.6 * len(rows)))
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (r, c), v in np.ndenumerate(data):
        if not np.isnan(v):
            red, green, blue, _ = im.cmap(im.norm(v))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    fig.colorbar(im, ax=ax).set_label(f"{value_label} (%)")
    return _save(fig, path)


def plot_front(
    points: Sequence[Mapping[str, float]],
    front_ids: Sequence[str],
    finalist_ids: Sequence[str],
    path: str | Path,
    *,
    size_label: str = "parameters",
) -> Path:
    """Every evaluated child in objective space, the trade-off front and the finalists marked.

    Args:
        points: dicts with ``id``, ``clean``, ``adv`` (fractions) and ``size``.
        front_ids: ids of the non-dominated children.
        finalist_ids: ids of the final population.
        path: PNG to write.
        size_label: what ``size`` counts (axis label).
    """
    front, final = set(front_ids), set(finalist_ids)
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(11, 4.0))
    groups = [("all evaluated children", lambda p: True, dict(s=18, color="tab:gray", alpha=0.5)),
              ("trade-off front", lambda p: p["id"] in front,
               dict(s=46, color="tab:red", zorder=3)),
              ("final population", lambda p: p["id"] in final,
               dict(s=120, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4))]
    for label, keep, style in groups:
        chosen = [p for p in points if keep(p)]
        if not chosen:
            continue
        ax1.scatter(_pct([p["clean"] for p in chosen]), _pct([p["adv"] for p in chosen]),
                    label=label, **style)
        ax2.scatter([max(p["size"], 1) for p in chosen], _pct([p["adv"] for p in chosen]),
                    label=label, **style)
    ax1.set_xlabel("clean accuracy (%)")
    ax1.set_title("Clean vs transferred accuracy (both maximised)")
    ax2.set_xscale("log")
    ax2.set_xlabel(f"{size_label} (count, log scale; minimised)")
    ax2.set_title("Size vs transferred accuracy")
    for ax in (ax1, ax2):
        ax.set_ylabel("transferred adversarial accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_hypervolume(curve: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Hypervolume of the front of the children evaluated so far, per generation."""
    gens = [c["generation"] for c in curve]
    fig, ax = _subplots(figsize=(6, 3.2))
    ax.plot(gens, [c["hypervolume"] for c in curve], "o-", color="tab:red",
            label="hypervolume of the front")
    ax.set_title("Hypervolume over generations (fraction of [0, 1]^3)")
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (fraction)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


#: Colour of a difference by what its interval says (``Interval.verdict``).
VERDICT_COLOURS = {"higher": "tab:green", "lower": "tab:red", "no difference shown": "tab:gray"}


def difference_figure(diffs: Mapping[str, object], *, title: str = "") -> Figure:
    """The figure of :func:`plot_differences` (returned for inspection, not written).

    One row per difference, top to bottom in ``diffs`` order: the mean as a dot and its 95 %
    interval as a horizontal bar, in percentage points, against a vertical line at zero. A
    bar that crosses the line is "no difference shown" (grey); wholly right of it, the first
    method is higher (green); wholly left, lower (red). A difference of one seed has no
    interval: a hollow dot, labelled ``n=1``.
    """
    labels = list(diffs)
    fig, ax = _subplots(figsize=(7.5, 0.55 * len(labels) + 1.4))
    ax.axvline(0.0, color="black", linewidth=1.0, zorder=1)
    for row, label in enumerate(labels):
        iv = diffs[label]
        y = len(labels) - 1 - row
        mean = 100.0 * iv.mean
        if iv.low is None or iv.high is None:
            ax.plot([mean], [y], "o", markerfacecolor="white", color="tab:gray", zorder=3)
            ax.annotate(f"n={iv.n}, no interval", (mean, y), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
            continue
        colour = VERDICT_COLOURS[iv.verdict()]
        ax.errorbar([mean], [y], xerr=[[mean - 100.0 * iv.low], [100.0 * iv.high - mean]],
                    fmt="o", color=colour, capsize=4, zorder=3)
    ax.set_yticks(range(len(labels)), [f"{label} (n={diffs[label].n})"
                                       for label in reversed(labels)])
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlabel("difference, percentage points (mean and 95 % interval over seeds)")
    ax.set_title(title or "Differences against zero: a bar crossing the line shows no difference")
    return fig


def plot_differences(diffs: Mapping[str, object], path: str | Path, *, title: str = "") -> Path:
    """Paired differences (``label -> nas.evaluation.stats.Interval``) and their intervals
    against zero, one row each (:func:`difference_figure`)."""
    return _save(difference_figure(diffs, title=title), path)
