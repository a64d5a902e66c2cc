"""Every figure function writes a readable PNG of a sensible size."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from nas.reporting import plots


def _png(path: Path, min_w: int = 200, min_h: int = 150) -> np.ndarray:
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] >= min_h and img.shape[1] >= min_w
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


def test_progress_replacements_spectra(tmp_path: Path) -> None:
    stats = [
        dict(generation=g, fitness_best=0.5 + g / 100, fitness_mean=0.4, clean_mean=0.8,
             adv_mean=0.4, clean_best=0.81, adv_best=0.5 + g / 100)
        for g in range(4)
    ]
    _png(plots.plot_progress(stats, tmp_path / "p.png"), min_w=600)
    _png(plots.plot_replacements([0, 1, 2, 3], [0, 2, 1, 0], tmp_path / "r.png"))
    rng = np.random.default_rng(0)
    spectra = [[tuple(int(v) for v in rng.integers(0, 4, 5)) for _ in range(3)] for _ in range(4)]
    _png(plots.plot_spectra([0, 1, 2, 3], spectra, tmp_path / "s.png"), min_w=800)


def test_ig_grid_has_one_row_per_image(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 12, 12, generator=gen)
    maps = {name: torch.rand(2, 12, 12, generator=gen) * 2 - 1 for name in ("reference", "evolved")}
    dist = {"reference": torch.zeros(2), "evolved": torch.tensor([0.4, 0.6])}
    delta = {name: torch.zeros(2) for name in maps}
    one = _png(plots.plot_ig_grid(x[:1], {k: v[:1] for k, v in maps.items()}, dist, delta,
                                  tmp_path / "a.png"))
    two = _png(plots.plot_ig_grid(x, maps, dist, delta, tmp_path / "b.png"))
    assert two.shape[0] > 1.5 * one.shape[0] * 0.8  # taller with more images


def test_matrix_leaves_missing_cells_blank_and_labels_the_others(tmp_path: Path,
                                                                  monkeypatch) -> None:
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    table = {"resnet18": {"reference": 0.3, "evolved": 0.6}, "vgg16_bn": {"evolved": 0.7}}
    _png(plots.plot_matrix(table, tmp_path / "m.png", title="t", row_label="r", col_label="c",
                           value_label="v"))
    ax = figures[0].axes[0]
    cells = ax.images[0].get_array()  # rows resnet18, vgg16_bn; columns reference, evolved
    assert cells.shape == (2, 2) and bool(cells.mask[1, 0]) and not cells.mask[0].any()
    assert [float(v) for v in cells[0]] == pytest.approx([30.0, 60.0])
    labels = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
              for t in ax.texts}
    assert labels == {(0, 0): "30.0", (0, 1): "60.0", (1, 1): "70.0"}  # none on the blank cell


def test_front_scatter_marks_front_and_finalists(tmp_path: Path) -> None:
    points = [dict(id=f"c{i}", clean=0.5 + i / 40, adv=0.6 - i / 50, size=1000 * (i + 1))
              for i in range(8)]
    plain = _png(plots.plot_front(points, [], [], tmp_path / "plain.png"), min_w=600)
    marked = _png(plots.plot_front(points, ["c0", "c7"], ["c3"], tmp_path / "f.png",
                                   size_label="MACs"),
                  min_w=600)
    red = (marked[..., 0] > 0.7) & (marked[..., 1] < 0.3) & (marked[..., 2] < 0.3)  # front markers
    assert red.sum() > 50 and not ((plain[..., 0] > 0.7) & (plain[..., 1] < 0.3)
                                   & (plain[..., 2] < 0.3)).any()
    curve = [dict(generation=g, hypervolume=0.1 * g, front_size=g + 1) for g in range(4)]
    _png(plots.plot_hypervolume(curve, tmp_path / "hv.png"))


def test_difference_plot_draws_each_interval_where_the_data_put_it(tmp_path: Path) -> None:
    from matplotlib.container import ErrorbarContainer

    from nas.evaluation.stats import paired_difference

    diffs = {
        "search - random": paired_difference([0.80, 0.82, 0.79], [0.77, 0.78, 0.75]),
        "search - he-ref+GM": paired_difference([0.80, 0.82, 0.79], [0.81, 0.80, 0.80]),
        "search - same arch+CE": paired_difference([0.80], [0.30]),
    }
    fig = plots.difference_figure(diffs)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # the n=1 difference has no interval to draw
    for container, label in zip(bars, ["search - random", "search - he-ref+GM"], strict=True):
        (segment,) = container.lines[2][0].get_segments()
        (x0, y0), (x1, _) = segment
        iv = diffs[label]
        assert sorted([x0, x1]) == pytest.approx([100 * iv.low, 100 * iv.high])
        assert y0 == 2 - list(diffs).index(label)  # first difference on top
    assert bars[0].lines[0].get_color() == "tab:green"  # wholly above zero
    assert bars[1].lines[0].get_color() == "tab:gray"  # straddles zero
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.lines)  # the zero line
    assert "n=1, no interval" in [t.get_text() for t in ax.texts]
    _png(plots.plot_differences(diffs, tmp_path / "d.png"))
