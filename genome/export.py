"""Export a genome as standalone, readable PyTorch source (imports torch only) plus weights.

The source holds the block classes of :mod:`genome.blocks` copied verbatim, one class whose
``__init__`` builds one submodule per node (same names as :func:`genome.compile_genome`, so
``state_dict`` keys are equal) and whose ``forward_features`` runs the nodes one line each
with a shape comment, and ``load_model()`` which loads the weights saved beside it.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import networkx as nx
import torch

from genome import blocks
from genome.compile import Step, _channel_stats, build_plan
from genome.serialize import to_dict
from genome.shapes import Shape, count_params
from genome.spectrum import canonical_hash, spectrum
from genome.validate import assert_valid
from nasbase.files import write_atomically, write_text_atomically


def _blocks_source() -> str:
    """The source of :mod:`genome.blocks` without its module docstring."""
    src = inspect.getsource(blocks)
    first = ast.parse(src).body[1].lineno  # first statement after the docstring
    return "\n".join(src.splitlines()[first - 1:]).strip() + "\n"


def _shape(shape: Shape) -> str:
    return "(N, " + ", ".join(str(s) for s in shape) + ")"


def _init_lines(steps: list[Step], mean: list[float], std: list[float]) -> list[str]:
    lines = [f"        self.normalize = Normalize(mean={mean!r}, std={std!r})"]
    for s in steps:
        if s.name is None:
            continue
        args = ", ".join(f"{k}={v!r}" for k, v in s.kwargs)
        comment = "logits" if s.op == "output" else f"-> {_shape(s.shape)}"
        lines.append(f"        self.{s.name} = {s.cls}({args})  # {comment}")
    return lines


def _forward_lines(steps: list[Step]) -> list[str]:
    lines = []
    for s in steps:
        if s.op == "input":
            lines.append(f"        h_{s.node} = self.normalize(x)  # {_shape(s.shape)}")
        elif s.op == "output":
            lines.append(f"        return h_{s.inputs[0]}")
        else:
            args = ", ".join(f"h_{i}" for i in s.inputs)
            lines.append(f"        h_{s.node} = self.{s.name}({args})  # {s.op}: {_shape(s.shape)}")
    return lines


def _header(g: nx.DiGraph, input_shape: Shape, num_classes: int) -> list[str]:
    """The module docstring: what the network takes and gives, its spectrum, its genome."""
    doc = to_dict(g)
    items = [",\n".join(f"      {json.dumps(x, sort_keys=True)}" for x in doc[k])
             for k in ("nodes", "edges")]
    genome_doc = (f'    {{"format": "{doc["format"]}", "format_version": {doc["format_version"]},\n'
                  f'     "nodes": [\n{items[0]}\n     ],\n     "edges": [\n{items[1]}\n     ]}}')
    return [
        f'"""Standalone PyTorch network exported from genome {canonical_hash(g)}.',
        "",
        f"Input: float pixels in [0, 1], {_shape(input_shape)}. Output: logits (N, {num_classes}).",
        f"Spectrum (conv, pool, sconv, sum, concat): {spectrum(g)}. "
        f"Parameters: {count_params(g, input_shape, num_classes)}.",
        "Depends on torch only. Usage: ``model = load_model(); logits = model(x)``.",
        "",
        "Genome:",
        "",
        genome_doc.replace("\\", "\\\\"),
        '"""',
    ]


def _class(steps: list[Step], class_name: str, input_shape: Shape, num_classes: int,
           mean: list[float], std: list[float]) -> list[str]:
    """The network class: one submodule per node, one line per node in ``forward_features``."""
    head = next(s for s in steps if s.op == "output")
    taps = tuple(s.name for s in steps if s.op not in ("input", "output"))
    return [
        f"class {class_name}(nn.Module):",
        '    """The exported network; submodule names match the compiled genome\'s."""',
        "",
        f"    num_classes = {num_classes}",
        f"    num_features = {head.shape[0]}",
        f"    input_shape = {tuple(input_shape)!r}",
        f"    tap_names = {taps!r}",
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *_init_lines(steps, mean, std),
        "",
        "    def forward_features(self, x: torch.Tensor) -> torch.Tensor:",
        '        """Pixels in [0, 1] -> final feature map (before global pooling)."""',
        *_forward_lines(steps),
        "",
        "    def forward_head(self, f: torch.Tensor) -> torch.Tensor:",
        "        return self.head(f)",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return self.forward_head(self.forward_features(x))",
    ]


def _loader(class_name: str) -> list[str]:
    return [
        f"def load_model(weights_path: str | None = None, map_location: str = \"cpu\") "
        f"-> {class_name}:",
        '    """Build the network and load its weights '
        '(default: ``WEIGHTS_FILE`` beside this file)."""',
        f"    model = {class_name}()",
        "    if weights_path is None and WEIGHTS_FILE is not None:",
        "        weights_path = str(Path(__file__).with_name(WEIGHTS_FILE))",
        "    if weights_path is not None:",
        "        state = torch.load(weights_path, map_location=map_location, weights_only=True)",
        "        model.load_state_dict(state)",
        "    return model.eval()",
    ]


def export_source(
    g: nx.DiGraph,
    *,
    num_classes: int = 10,
    input_shape: Shape = (1, 28, 28),
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    class_name: str = "Net",
    weights_file: str | None = None,
) -> str:
    """Standalone Python source of the network of ``g`` (imports torch only).

    Args:
        g: a valid genome.
        num_classes / input_shape / mean / std: as for :func:`genome.compile_genome`.
        class_name: name of the generated ``nn.Module`` class.
        weights_file: file name (beside the source) ``load_model()`` loads by default.
    """
    assert_valid(g, input_shape=input_shape)
    shape = tuple(input_shape)
    steps = build_plan(g, shape, num_classes)  # type: ignore[arg-type]
    mean_l = _channel_stats(mean, shape[0], 0.0)
    std_l = _channel_stats(std, shape[0], 1.0)
    parts = [
        *_header(g, shape, num_classes),  # type: ignore[arg-type]
        "",
        "from pathlib import Path",
        "",
        _blocks_source(),
        "",
        f"WEIGHTS_FILE = {weights_file!r}",
        "",
        "",
        *_class(steps, class_name, shape, num_classes, mean_l, std_l),  # type: ignore[arg-type]
        "",
        "",
        *_loader(class_name),
    ]
    return "\n".join(parts) + "\n"


def export_module(
    g: nx.DiGraph,
    path: str | os.PathLike[str],
    *,
    num_classes: int = 10,
    input_shape: Shape = (1, 28, 28),
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    weights_path: str | os.PathLike[str] | None = None,
    class_name: str = "Net",
) -> tuple[Path, Path | None]:
    """Write the standalone source to ``path`` and, given a ``state_dict``, its weights.

    The weights go to ``weights_path`` (default: ``path`` with suffix ``.pt``) as a plain
    tensor dict (``torch.save``; load with ``weights_only=True``). Both files are written to
    a temp name and renamed, so no half-written file is left.

    Returns:
        ``(source path, weights path or None)``.
    """
    path = Path(path)
    wpath = None
    if state_dict is not None:
        wpath = Path(weights_path) if weights_path is not None else path.with_suffix(".pt")
    same_dir = wpath is not None and wpath.resolve().parent == path.resolve().parent
    weights_file = wpath.name if same_dir else (str(wpath.resolve()) if wpath else None)
    source = export_source(g, num_classes=num_classes, input_shape=input_shape, mean=mean,
                           std=std, class_name=class_name, weights_file=weights_file)
    if wpath is not None and state_dict is not None:
        tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
        write_atomically(wpath, lambda fh: torch.save(tensors, fh))
    write_text_atomically(path, source)
    return path, wpath
