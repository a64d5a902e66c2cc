"""Named hand-engineered genomes (paper Appendix A) and name-or-file resolution.

The paper's Fig. 4 is not in its text; the description is:

* (a) the reference network: three convolutional blocks, three skip-connection blocks
  (summation and concatenation), two fully-connected blocks;
* (b) an additional baseline: four convolutional blocks, one pooling block, two skip blocks,
  two fully-connected blocks.

``he-ref`` and ``he-baseline`` follow that description block for block (``docs/genome.md``
draws them). The "two fully-connected blocks" are the head's hidden layer (64) and the
classifier. The project's head is global average pooling, so a network whose last map is large
sees only small patches and learns less (docs/lab-log.md, "The named genomes"). So the
"convolutional blocks" are read as conv or strided-conv blocks: (a)
has no pooling block and uses three strided ones (maps 14, 7, 4); (b) has two plain and two
strided ones around its pool. Channels stay within 32-64 so both train quickly on two CPU
cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx

from genome import GenomeFormatError, UnknownGenomeName, assert_valid, load


def _build(nodes: list[tuple[str, str, dict[str, Any]]],
           edges: list[tuple[str, str, int | None]]) -> nx.DiGraph:
    g = nx.DiGraph()
    for node, op, params in nodes:
        g.add_node(node, op=op, **params)
    for u, v, port in edges:
        if port is None:
            g.add_edge(u, v)
        else:
            g.add_edge(u, v, port=port)
    return assert_valid(g, input_shape=(1, 28, 28))


def he_ref() -> nx.DiGraph:
    """(a) 3 conv blocks (all strided), 3 skips (2 sum, 1 concat), 2 FC blocks.

    ``input -> sconv(32, 5x5) -> sconv(64) -> sum(+n1) -> sconv(64) -> concat(+sum) ->
    sum(+n1) -> head(64 -> classes)``; on 1x28x28 the maps are 14, 7, 7, 4, 4, 4.
    """
    nodes = [
        ("n0", "input", {}),
        ("n1", "sconv", {"channels": 32, "kernel": 5}),
        ("n2", "sconv", {"channels": 64, "kernel": 3}),
        ("n3", "sum", {}),
        ("n4", "sconv", {"channels": 64, "kernel": 3}),
        ("n5", "concat", {}),
        ("n6", "sum", {}),
        ("n7", "output", {"hidden": 64}),
    ]
    edges = [("n0", "n1", None), ("n1", "n2", None), ("n2", "n3", 0), ("n1", "n3", 1),
             ("n3", "n4", None), ("n4", "n5", 0), ("n3", "n5", 1), ("n5", "n6", 0),
             ("n1", "n6", 1), ("n6", "n7", None)]
    return _build(nodes, edges)


def he_baseline() -> nx.DiGraph:
    """(b) 4 conv blocks (2 plain, 2 strided), 1 pool block, 2 skips (1 sum, 1 concat), 2 FC.

    ``input -> conv(32) -> pool(max) -> sconv(64) -> conv(64) -> sum(+pool) -> sconv(64) ->
    concat(+sconv) -> head(64 -> classes)``; on 1x28x28 the maps are 28, 14, 7, 7, 7, 4, 4.
    """
    nodes = [
        ("n0", "input", {}),
        ("n1", "conv", {"channels": 32, "kernel": 3}),
        ("n2", "pool", {"kind": "max"}),
        ("n3", "sconv", {"channels": 64, "kernel": 3}),
        ("n4", "conv", {"channels": 64, "kernel": 3}),
        ("n5", "sum", {}),
        ("n6", "sconv", {"channels": 64, "kernel": 3}),
        ("n7", "concat", {}),
        ("n8", "output", {"hidden": 64}),
    ]
    edges = [("n0", "n1", None), ("n1", "n2", None), ("n2", "n3", None), ("n3", "n4", None),
             ("n4", "n5", 0), ("n2", "n5", 1), ("n5", "n6", None), ("n6", "n7", 0),
             ("n3", "n7", 1), ("n7", "n8", None)]
    return _build(nodes, edges)


_NAMED: dict[str, Callable[[], nx.DiGraph]] = {"he-ref": he_ref, "he-baseline": he_baseline}


def list_named_genomes() -> list[str]:
    """Sorted names of the hand-engineered genomes."""
    return sorted(_NAMED)


def named_genome(name: str) -> nx.DiGraph:
    """A fresh copy of the named genome; raises :class:`UnknownGenomeName` otherwise."""
    if name not in _NAMED:
        raise UnknownGenomeName(name, list_named_genomes())
    return _NAMED[name]()


def resolve_genome(spec: str) -> nx.DiGraph:
    """A genome from a name (``he-ref``) or a JSON file path.

    Raises:
        UnknownGenomeName: ``spec`` is neither a named genome nor an existing file.
        genome.GenomeFormatError: the file is not a well-formed genome.
    """
    if spec in _NAMED:
        return named_genome(spec)
    if Path(spec).exists():
        return load(spec)
    if spec.endswith(".json") or "/" in spec or os.sep in spec:
        raise GenomeFormatError(f"genome file {spec!r} does not exist")
    raise UnknownGenomeName(spec, [*list_named_genomes(), "<path to a genome .json file>"])
