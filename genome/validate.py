"""Validation at the boundary: ``check_genome`` lists problems, ``assert_valid`` raises them.

A genome is valid when (DESIGN.md section 4): every op and param is known and well typed; it
has exactly one input and one output node; it is acyclic; every node has the right number of
inputs (sum/concat exactly two, on ports 0 and 1); every node lies on an input->output path;
every spatial size is >= 1 for the given input shape; no node has more channels than the
search space's cap; and the node count is within the cap.
"""

from __future__ import annotations

import networkx as nx

from genome.ops import topological_order
from genome.shapes import Shape, propagate_shapes
from genome.structure import InvalidGenome, core_problems, structure_problems


def _shape_problems(g: nx.DiGraph, input_shape: Shape, max_channels: int | None) -> list[str]:
    shapes = propagate_shapes(g, input_shape)
    size = "x".join(str(s) for s in input_shape)
    problems = []
    for n in topological_order(g):
        op = g.nodes[n]["op"]
        c, h, w = shapes[n]
        if op != "output" and (h < 1 or w < 1):
            ins_ok = all(min(shapes[p][1:]) >= 1 for p in g.predecessors(n))
            if ins_ok:  # report where the size first drops, not every node below it
                problems.append(
                    f"node {n!r} ({op}): spatial size {h}x{w} is below 1 for input {size}"
                )
        if max_channels is not None and op not in ("input", "output") and c > max_channels:
            problems.append(f"node {n!r} ({op}): {c} channels exceed the cap of {max_channels}")
    return problems


def check_genome(
    g: nx.DiGraph,
    *,
    input_shape: Shape = (1, 28, 28),
    max_channels: int | None = None,
    max_nodes: int | None = None,
) -> list[str]:
    """List every problem of ``g`` (an empty list means valid).

    Args:
        g: the genome.
        input_shape: ``(C, H, W)`` the network must accept.
        max_channels: cap on the channels of every node (``None``: no cap).
        max_nodes: cap on the number of nodes including input and output (``None``: no cap).
    """
    problems = structure_problems(g)
    sound = not core_problems(g)  # shapes are defined even with nodes off every path
    if max_nodes is not None and isinstance(g, nx.DiGraph) and len(g) > max_nodes:
        problems.append(f"genome has {len(g)} nodes; the cap is {max_nodes}")
    if sound:
        problems += _shape_problems(g, tuple(input_shape), max_channels)  # type: ignore[arg-type]
    return problems


def assert_valid(
    g: nx.DiGraph,
    *,
    input_shape: Shape = (1, 28, 28),
    max_channels: int | None = None,
    max_nodes: int | None = None,
) -> nx.DiGraph:
    """Return ``g`` when valid, else raise :class:`InvalidGenome` listing every problem."""
    problems = check_genome(g, input_shape=input_shape, max_channels=max_channels,
                            max_nodes=max_nodes)
    if problems:
        raise InvalidGenome(problems)
    return g
