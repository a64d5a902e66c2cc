"""Drawing of a genome: a layered DAG picture, ops coloured and labelled (matplotlib + networkx).

Nodes are placed one row per topological depth (input at the top, output at the bottom);
each box shows the op, its params and, given an input shape, the node's output shape. Skip
edges (spanning more than one row) are dashed red arcs; a sum / concat box lists its inputs
in port order (``n4 + n2``: port 0 is ``n4``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import networkx as nx

from genome.ops import node_params, ordered_inputs
from genome.shapes import Shape, infer_shapes
from nasbase.files import write_atomically

#: One colour per op (also used for the legend).
OP_COLORS: dict[str, str] = {
    "input": "#d5dbdb", "conv": "#aed6f1", "sconv": "#a9dfbf", "pool": "#f9e79f",
    "sum": "#f5b7b1", "concat": "#d7bde2", "output": "#d5dbdb",
}


def _layout(g: nx.DiGraph) -> dict[Any, tuple[float, float]]:
    pos: dict[Any, tuple[float, float]] = {}
    for depth, layer in enumerate(nx.topological_generations(g)):
        layer = sorted(layer, key=str)
        for k, node in enumerate(layer):
            pos[node] = (1.8 * (k - (len(layer) - 1) / 2), -1.1 * depth)
    return pos


def node_label(g: nx.DiGraph, node: Any, shape: Shape | None = None) -> str:
    """Multi-line label: ``op`` + params (+ ``CxHxW``)."""
    op, p = g.nodes[node]["op"], node_params(g, node)
    lines = [f"{node}: {op}"]
    if op in ("conv", "sconv"):
        lines.append(f"{p['channels']}ch {p['kernel']}x{p['kernel']}")
    elif op == "pool":
        lines.append(p["kind"])
    elif op in ("sum", "concat"):
        lines.append(" + ".join(str(i) for i in ordered_inputs(g, node)))
    elif op == "output":
        lines.append(f"fc {p['hidden']} + fc" if p.get("hidden") else "fc")
    if shape is not None and op != "output":
        lines.append("x".join(str(s) for s in shape))
    return "\n".join(lines)


def draw_genome(
    g: nx.DiGraph,
    path: str | os.PathLike[str],
    *,
    input_shape: Shape | None = (1, 28, 28),
    title: str = "",
    dpi: int = 120,
) -> Path:
    """Draw ``g`` to an image file (format from the suffix, e.g. ``.png``) and return its path."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    from matplotlib.patches import Patch

    shapes = infer_shapes(g, input_shape) if input_shape is not None else {}
    pos = _layout(g)
    depth = 1 + max(round(-y / 1.1) for _, y in pos.values())
    width = max(sum(1 for q in pos.values() if abs(q[1] - y) < 1e-9) for _, y in pos.values())
    fig = Figure(figsize=(max(4.5, 1.6 * width + 3.0), max(3.0, 0.95 * depth + 0.8)))
    ax = fig.subplots()
    colors = [OP_COLORS.get(g.nodes[n]["op"], "#eeeeee") for n in g.nodes]
    rank = {n: round(-y / 1.1) for n, (_, y) in pos.items()}
    short = [(u, v) for u, v in g.edges if rank[v] - rank[u] == 1]
    long = sorted((e for e in g.edges if rank[e[1]] - rank[e[0]] > 1),
                  key=lambda e: (str(e[0]), str(e[1])))
    nx.draw_networkx_edges(g, pos, edgelist=short, ax=ax, arrows=True, arrowsize=12,
                           node_size=2600, edge_color="#555555")
    for i, edge in enumerate(long):  # skips curve out to alternating sides, wider when longer
        rad = (0.25 + 0.05 * (i // 2)) * (1 if i % 2 == 0 else -1)
        nx.draw_networkx_edges(g, pos, edgelist=[edge], ax=ax, arrows=True, arrowsize=12,
                               node_size=2600, edge_color="#a93226", style="dashed",
                               connectionstyle=f"arc3,rad={rad}")
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=2600, node_shape="s",
                           edgecolors="#333333")
    labels = {n: node_label(g, n, shapes.get(n)) for n in g.nodes}
    nx.draw_networkx_labels(g, pos, labels, ax=ax, font_size=7)
    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - 1.6, max(xs) + 1.6)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    used = [op for op in OP_COLORS if any(a["op"] == op for _, a in g.nodes(data=True))]
    ax.legend(handles=[Patch(facecolor=OP_COLORS[o], edgecolor="#333333", label=o) for o in used],
              loc="upper left", fontsize=7, frameon=False, bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    write_atomically(path, lambda fh: fig.savefig(fh, format=path.suffix.lstrip(".") or "png",
                                                  dpi=dpi))
    return path
