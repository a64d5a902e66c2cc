"""Spectrum (paper eq. 3), spectrum distance, and the canonical hash of a genome.

The spectrum of a network is the vector of its block counts
``spec(N) = (#conv, #pool, #sconv, #sum, #concat)`` and the network distance is the Euclidean
distance ``d_spec(N1, N2) = ||spec(N1) - spec(N2)||`` (paper eq. 3). Niching uses it to keep
the population diverse and to find the candidate a child competes with.

The spectrum does not identify an architecture (``conv -> pool`` and ``pool -> conv`` share
one), the canonical hash does: a Weisfeiler-Lehman-style colour refinement on the labelled DAG.
Each node's label is its op and params. Because a genome is a DAG with ordered skip inputs,
the refinement can be run to its fixed point in one sweep per direction: the *up* colour of a
node hashes its label with the up colours of its inputs in port order (so it encodes the
whole computation feeding the node); the *down* colour hashes its label with the sorted
``(port, down colour)`` pairs of its consumers. The graph hash is the hash of the sorted
multiset of ``(up, down)`` colours. Node ids never enter it, so renaming nodes keeps the hash;
any change of op, param, edge or port changes it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import networkx as nx

from genome.ops import SPECTRUM_OPS, node_params, ordered_inputs
from genome.structure import InvalidGenome


def spectrum(g: nx.DiGraph) -> tuple[int, int, int, int, int]:
    """``(n_conv, n_pool, n_sconv, n_sum, n_concat)`` of a genome (paper eq. 3)."""
    ops = [a.get("op") for _, a in g.nodes(data=True)]
    return tuple(ops.count(op) for op in SPECTRUM_OPS)  # type: ignore[return-value]


def spectrum_distance(a: nx.DiGraph | Sequence[float], b: nx.DiGraph | Sequence[float]) -> float:
    """Euclidean distance of two spectra (eq. 3); genomes or spectrum vectors are accepted."""
    sa = spectrum(a) if isinstance(a, nx.DiGraph) else tuple(a)
    sb = spectrum(b) if isinstance(b, nx.DiGraph) else tuple(b)
    if len(sa) != len(sb):
        raise ValueError(f"spectra of different lengths: {len(sa)} and {len(sb)}")
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(sa, sb, strict=True)))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _label(g: nx.DiGraph, n: Any) -> str:
    return json.dumps({"op": g.nodes[n].get("op"), **node_params(g, n)}, sort_keys=True)


def canonical_hash(g: nx.DiGraph) -> str:
    """A hex digest identifying the architecture, invariant to node renaming.

    Raises:
        InvalidGenome: when ``g`` has a cycle (the hash is defined on DAGs).
    """
    if not nx.is_directed_acyclic_graph(g):
        raise InvalidGenome(["genome has a cycle; the canonical hash needs a DAG"])
    order = list(nx.topological_sort(g))
    up: dict[Any, str] = {}
    for n in order:  # inputs before consumers
        ins = ",".join(up[p] for p in ordered_inputs(g, n))
        up[n] = _digest(f"{_label(g, n)}<({ins})")
    down: dict[Any, str] = {}
    for n in reversed(order):  # consumers before inputs
        outs = sorted(f"{g.edges[n, s].get('port', '-')}:{down[s]}" for s in g.successors(n))
        down[n] = _digest(f"{_label(g, n)}>({','.join(outs)})")
    colours = sorted(f"{up[n]}/{down[n]}" for n in g.nodes)
    return _digest("|".join(colours))[:32]
