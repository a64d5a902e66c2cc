"""Static shape inference, parameter and MAC counts, without building the network.

Shapes are ``(C, H, W)`` per node for one input shape. The rules mirror the compiled blocks:

* ``conv``: ``(channels, H, W)`` (same padding, odd kernel);
* ``sconv``: ``H' = floor((H + 2 * (k // 2) - k) / 2) + 1`` (stride 2, padding k // 2);
* ``pool``: ``H' = floor(H / 2)`` (2x2 window, stride 2);
* ``sum``: spatial = elementwise min of the two inputs (the larger is adaptively max-pooled),
  channels = max (the smaller is zero-padded, paper 3.2);
* ``concat``: spatial as ``sum``; channels = ``C0 + C1``;
* ``output``: the logits; its entry is ``(num_features, 1, 1)`` (after global average pool).

The cost of a network is one quantity under one name everywhere in the project: **MACs**,
multiply-accumulate operations of the convolutions and the linear layers for one image (the
usual NAS convention; one MAC is 2 FLOPs); BN, ReLU, pooling and additions are not counted.
``nas.evaluation.fitness.count_macs`` measures the same quantity on any module.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from genome.ops import node_params, ordered_inputs, topological_order
from genome.structure import assert_structure

Shape = tuple[int, int, int]


def _block_shape(op: str, params: dict[str, Any], ins: list[Shape], input_shape: Shape) -> Shape:
    """Output shape of one node given its input shapes (in port order)."""
    if op == "input":
        return tuple(input_shape)  # type: ignore[return-value]
    if op == "conv":
        _, h, w = ins[0]
        return (params["channels"], h, w)
    if op == "sconv":
        _, h, w = ins[0]
        k = params["kernel"]
        return (params["channels"], (h + 2 * (k // 2) - k) // 2 + 1,
                (w + 2 * (k // 2) - k) // 2 + 1)
    if op == "pool":
        c, h, w = ins[0]
        return (c, h // 2, w // 2)
    if op in ("sum", "concat"):
        (c0, h0, w0), (c1, h1, w1) = ins
        c = max(c0, c1) if op == "sum" else c0 + c1
        return (c, min(h0, h1), min(w0, w1))
    if op == "output":
        return (ins[0][0], 1, 1)
    raise ValueError(f"unknown op {op!r}")


def propagate_shapes(g: nx.DiGraph, input_shape: Shape) -> dict[Any, Shape]:
    """Shapes of every node of a structurally sound genome (sizes may drop below 1)."""
    shapes: dict[Any, Shape] = {}
    for n in topological_order(g):
        ins = [shapes[p] for p in ordered_inputs(g, n)]
        shapes[n] = _block_shape(g.nodes[n]["op"], node_params(g, n), ins, input_shape)
    return shapes


def infer_shapes(g: nx.DiGraph, input_shape: Shape) -> dict[Any, Shape]:
    """``{node: (C, H, W)}`` for ``input_shape``; raises InvalidGenome on a broken structure.

    Args:
        g: the genome.
        input_shape: ``(C, H, W)`` of the images, e.g. ``(1, 28, 28)``.
    """
    assert_structure(g)
    return propagate_shapes(g, tuple(input_shape))  # type: ignore[arg-type]


def _node_cost(g: nx.DiGraph, n: Any, shapes: dict[Any, Shape],
               num_classes: int) -> tuple[int, int]:
    """(parameters, MACs) of one node."""
    op, params = g.nodes[n]["op"], node_params(g, n)
    if op in ("conv", "sconv"):
        cin = shapes[ordered_inputs(g, n)[0]][0]
        cout, h, w = shapes[n]
        k = params["kernel"]
        weights = cout * cin * k * k  # conv has no bias (BN follows)
        return weights + 2 * cout, weights * h * w  # + BN weight and bias
    if op == "output":
        c = shapes[n][0]
        hidden = params["hidden"]
        if hidden:
            return (c * hidden + hidden + hidden * num_classes + num_classes,
                    c * hidden + hidden * num_classes)
        return c * num_classes + num_classes, c * num_classes
    return 0, 0


def count_params(g: nx.DiGraph, input_shape: Shape, num_classes: int) -> int:
    """Number of trainable parameters of the compiled network (equals ``sum(p.numel())``)."""
    shapes = infer_shapes(g, input_shape)
    return sum(_node_cost(g, n, shapes, num_classes)[0] for n in g.nodes)


def count_macs(g: nx.DiGraph, input_shape: Shape, num_classes: int) -> int:
    """Multiply-accumulate operations of one forward pass of one image (convs + linears)."""
    shapes = infer_shapes(g, input_shape)
    return sum(_node_cost(g, n, shapes, num_classes)[1] for n in g.nodes)
