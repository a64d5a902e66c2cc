"""``compile_genome``: a pure function from a genome (plain data) to an ``nn.Module``.

The compiled :class:`GenomeNet` follows the model contract of ``docs/architecture.md``:
``forward`` (pixels in [0, 1] -> logits), ``forward_features``, ``forward_head``,
``num_classes``, ``num_features`` and ``tap_names``. Submodule names come from node ids and
ops (``conv_n3``, ``sum_n7``, ``head``; the input normalisation is ``normalize``), so a genome
always compiles to the same ``state_dict`` keys and weights map across compile and export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
from torch import nn

from genome.blocks import Concat, ConvBNReLU, Head, Normalize, Pool, Sum
from genome.ops import module_name, node_params, ordered_inputs, topological_order
from genome.serialize import to_json
from genome.shapes import Shape, propagate_shapes
from genome.validate import assert_valid

_CLASSES: dict[str, type[nn.Module]] = {
    "ConvBNReLU": ConvBNReLU, "Pool": Pool, "Sum": Sum, "Concat": Concat, "Head": Head,
}


@dataclass(frozen=True)
class Step:
    """One node of the compiled network, in execution order.

    Attributes:
        node: node id as a string.
        op: the node's op.
        name: submodule name (``None`` for the input node, which is the normalisation).
        inputs: ids of the input nodes in port order.
        shape: ``(C, H, W)`` of the node's output (``(C, 1, 1)`` for the head's features).
        cls: name of the block class in :mod:`genome.blocks`.
        kwargs: constructor arguments of that class (plain values).
    """

    node: str
    op: str
    name: str | None
    inputs: tuple[str, ...]
    shape: Shape
    cls: str
    kwargs: tuple[tuple[str, Any], ...]


def _constructor(op: str, params: dict[str, Any], in_ch: int,
                 num_classes: int) -> tuple[str, dict[str, Any]]:
    if op in ("conv", "sconv"):
        stride = 1 if op == "conv" else 2
        return "ConvBNReLU", {"in_channels": in_ch, "out_channels": params["channels"],
                              "kernel": params["kernel"], "stride": stride}
    if op == "pool":
        return "Pool", {"kind": params["kind"]}
    if op == "sum":
        return "Sum", {}
    if op == "concat":
        return "Concat", {}
    if op == "output":
        return "Head", {"in_features": in_ch, "hidden": params["hidden"],
                        "num_classes": num_classes}
    return "Normalize", {}


def build_plan(g: nx.DiGraph, input_shape: Shape, num_classes: int) -> list[Step]:
    """The execution plan of a valid genome: one :class:`Step` per node, topologically."""
    shapes = propagate_shapes(g, tuple(input_shape))  # type: ignore[arg-type]
    steps = []
    for n in topological_order(g):
        op = g.nodes[n]["op"]
        ins = ordered_inputs(g, n)
        in_ch = shapes[ins[0]][0] if ins else input_shape[0]
        cls, kwargs = _constructor(op, node_params(g, n), in_ch, num_classes)
        name = None if op == "input" else module_name(g, n)
        steps.append(Step(str(n), op, name, tuple(str(p) for p in ins), shapes[n], cls,
                          tuple(kwargs.items())))
    return steps


def _channel_stats(values: Sequence[float] | float | None, channels: int,
                   default: float) -> list[float]:
    if values is None:
        return [default] * channels
    if isinstance(values, (int, float)):
        return [float(values)] * channels
    values = [float(v) for v in values]
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ValueError(f"expected 1 or {channels} normalisation values, got {len(values)}")
    return values


class GenomeNet(nn.Module):
    """The network of one genome. Build it with :func:`compile_genome`.

    Attributes:
        num_classes: number of logits.
        num_features: channels of the final feature map (input of the head).
        tap_names: names of the node submodules producing intermediate 4-D feature maps
            (every conv / sconv / pool / sum / concat node), shallow to deep.
        genome_json: the genome this network was compiled from (provenance, plain text).
    """

    def __init__(self, steps: list[Step], *, num_classes: int, mean: list[float], std: list[float],
                 genome_json: str = "") -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self._steps = [(s.node, s.name, s.inputs) for s in steps]
        for s in steps:
            if s.name is not None:
                self.add_module(s.name, _CLASSES[s.cls](**dict(s.kwargs)))
        self._input = next(s.node for s in steps if s.op == "input")
        head = next(s for s in steps if s.op == "output")
        self._features = head.inputs[0]
        self.num_classes = num_classes
        self.num_features = head.shape[0]
        self.tap_names = tuple(s.name for s in steps if s.op not in ("input", "output"))
        self.genome_json = genome_json

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] ``(N, C, H, W)`` -> final feature map ``(N, num_features, h, w)``."""
        values = {self._input: self.normalize(x)}
        for node, name, inputs in self._steps:
            if name is None or name == "head":
                continue
            values[node] = getattr(self, name)(*(values[i] for i in inputs))
        return values[self._features]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Feature map ``(N, num_features, h, w)`` -> logits ``(N, num_classes)``."""
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] ``(N, C, H, W)`` -> logits ``(N, num_classes)`` (no softmax)."""
        return self.forward_head(self.forward_features(x))


def compile_genome(
    g: nx.DiGraph,
    *,
    num_classes: int = 10,
    input_shape: Shape = (1, 28, 28),
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> GenomeNet:
    """Compile a valid genome into a :class:`GenomeNet` (a pure function of its arguments).

    Args:
        g: the genome; validated for ``input_shape`` first (raises InvalidGenome).
        num_classes: number of logits.
        input_shape: ``(C, H, W)`` of the images.
        mean: per-channel (or scalar) mean of the normalisation layer; default 0.
        std: per-channel (or scalar) std of the normalisation layer; default 1.
    """
    assert_valid(g, input_shape=input_shape)
    channels = int(input_shape[0])
    steps = build_plan(g, tuple(input_shape), num_classes)  # type: ignore[arg-type]
    net = GenomeNet(steps, num_classes=num_classes, mean=_channel_stats(mean, channels, 0.0),
                    std=_channel_stats(std, channels, 1.0), genome_json=to_json(g, indent=None))
    return net

