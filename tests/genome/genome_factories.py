"""Small hand-made genomes for the genome tests (plain networkx graphs)."""

from __future__ import annotations

from typing import Any

import networkx as nx


def make(nodes: list[tuple[str, str, dict[str, Any]]], edges: list[tuple]) -> nx.DiGraph:
    """Graph from ``(id, op, params)`` nodes and ``(src, dst)`` / ``(src, dst, port)`` edges."""
    g = nx.DiGraph()
    for node, op, params in nodes:
        g.add_node(node, op=op, **params)
    for edge in edges:
        if len(edge) == 3:
            g.add_edge(edge[0], edge[1], port=edge[2])
        else:
            g.add_edge(edge[0], edge[1])
    return g


def chain(*blocks: tuple[str, dict[str, Any]], hidden: int = 0) -> nx.DiGraph:
    """``input -> blocks... -> output`` with ids ``n0 .. nK``."""
    nodes = [("n0", "input", {})]
    nodes += [(f"n{i}", op, params) for i, (op, params) in enumerate(blocks, start=1)]
    nodes.append((f"n{len(nodes)}", "output", {"hidden": hidden}))
    edges = [(nodes[i][0], nodes[i + 1][0]) for i in range(len(nodes) - 1)]
    return make(nodes, edges)


def conv(channels: int = 8, kernel: int = 3) -> tuple[str, dict[str, Any]]:
    return ("conv", {"channels": channels, "kernel": kernel})


def sconv(channels: int = 8, kernel: int = 3) -> tuple[str, dict[str, Any]]:
    return ("sconv", {"channels": channels, "kernel": kernel})


def pool(kind: str = "max") -> tuple[str, dict[str, Any]]:
    return ("pool", {"kind": kind})


def skip_net(op: str = "sum", c_main: int = 8, c_skip: int = 4) -> nx.DiGraph:
    """``input -> a(conv c_skip) -> b(sconv c_main) -> s = op(b, a) -> output``."""
    return make(
        [("in", "input", {}), ("a", "conv", {"channels": c_skip, "kernel": 3}),
         ("b", "sconv", {"channels": c_main, "kernel": 3}), ("s", op, {}),
         ("out", "output", {"hidden": 0})],
        [("in", "a"), ("a", "b"), ("b", "s", 0), ("a", "s", 1), ("s", "out")],
    )
