"""Weight inheritance (``--inherit``): a child starts from its parent's trained weights.

Lamarckian inheritance as in Real et al. 2017 and LEMONADE: mutation keeps node ids
(``genome.mutation`` gives new nodes new ids), so a node of the child is *unchanged* when the
parent has a node with the same id, the same op and parameters (the same block constructor
arguments), the same input shapes in port order and the same output shape. Every tensor of
such a node's submodule (``conv_n3.conv.weight``, BatchNorm statistics, the head's layers)
is copied from the parent's ``weights.pt``; every other node keeps its fresh initialisation.
The input normalisation is a constant of the dataset and is not inherited.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch

from genome.compile import Step, build_plan


def unchanged_modules(parent: nx.DiGraph, child: nx.DiGraph, input_shape: tuple[int, int, int],
                      num_classes: int) -> list[str]:
    """Submodule names of the child whose node the mutation left unchanged (see module doc)."""
    parent_steps = {s.node: s for s in build_plan(parent, input_shape, num_classes)}
    child_steps = build_plan(child, input_shape, num_classes)
    parent_shapes = {s.node: s.shape for s in parent_steps.values()}
    child_shapes = {s.node: s.shape for s in child_steps}
    return [s.name for s in child_steps
            if s.name is not None and s.node in parent_steps
            and _same(parent_steps[s.node], s, parent_shapes, child_shapes)]


def _same(old: Step, new: Step, old_shapes: dict[str, Any], new_shapes: dict[str, Any]) -> bool:
    return (old.op == new.op and old.name == new.name and old.cls == new.cls
            and old.kwargs == new.kwargs and old.shape == new.shape
            and [old_shapes[i] for i in old.inputs] == [new_shapes[i] for i in new.inputs])


def inherited_state(parent: nx.DiGraph, child: nx.DiGraph, parent_state: dict[str, torch.Tensor],
                    info: Any) -> dict[str, torch.Tensor]:
    """The parent's tensors of the child's unchanged nodes (a partial ``state_dict``).

    Args:
        parent: the parent's genome; child: the child's genome.
        parent_state: the parent's trained ``state_dict`` (its ``weights.pt``).
        info: the dataset's ``DatasetInfo`` (input shape, number of classes).
    """
    names = unchanged_modules(parent, child, tuple(info.input_shape), info.num_classes)
    prefixes = tuple(f"{name}." for name in names)
    return {k: v.clone() for k, v in parent_state.items() if k.startswith(prefixes)}
