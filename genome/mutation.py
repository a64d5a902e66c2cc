"""Mutation operators (paper section 3.2) and aggressive mutation.

The paper mutates a candidate "by adding, editing, or deleting a convolutional block, a
pooling block, or a strided convolutional block", adds summation and concatenation skip
blocks, and applies several mutations in a row to make one child ("aggressive mutation",
four or five in the experiments). Here every operator

* takes the parent genome, an explicit ``numpy.random.Generator`` and the search space's
  :class:`MutationLimits` (``genome`` imports nothing of ours, so the space passes them in);
* works on a copy: the parent never changes;
* tries the possible sites in random order and returns the first result that is valid for
  every input shape of the limits, or ``None`` when no site gives a valid genome. A
  half-valid graph is never returned.

Operators (names in :data:`MUTATIONS`):

* ``add_<op>`` (conv / pool / sconv): insert a new block with random params on a random edge.
* ``edit_<op>``: conv / sconv get new channels or a new kernel; pool switches max <-> avg.
* ``delete_<op>``: remove a block and connect its input to its consumers.
* ``add_sum`` / ``add_concat``: on an edge ``u -> v``, route ``u`` (port 0) and an earlier
  node ``a`` (port 1) into a new skip block that feeds ``v``.
* ``delete_sum`` / ``delete_concat``: remove a skip block, keep one of its inputs, and drop
  any branch that then no longer reaches the output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from genome.ops import BLOCK_OPS, SKIP_OPS, find_op, new_node_id, ordered_inputs
from genome.shapes import count_macs
from genome.structure import the_node
from genome.validate import check_genome

Mutation = Callable[..., "nx.DiGraph | None"]


@dataclass(frozen=True)
class MutationLimits:
    """What mutation may choose and the caps a child must respect (built by the search space).

    Attributes:
        channels: channel choices for conv / sconv blocks.
        kernels: kernel choices (odd) for conv / sconv blocks.
        pool_kinds: pooling kinds (``max``, ``avg``).
        max_channels: cap on the channels of any node.
        max_nodes: cap on the number of nodes (input and output included).
        input_shapes: every ``(C, H, W)`` a child must be valid for.
        max_sites: how many random sites an operator tries before giving up.
        max_macs: cap on the multiply-accumulates per image (:func:`genome.count_macs` with a
            10-class head) for every input shape; 0 = none.
    """

    channels: tuple[int, ...] = (16, 32, 48, 64, 96, 128)
    kernels: tuple[int, ...] = (1, 3, 5)
    pool_kinds: tuple[str, ...] = ("max", "avg")
    max_channels: int = 256
    max_nodes: int = 32
    input_shapes: tuple[tuple[int, int, int], ...] = ((1, 28, 28), (3, 32, 32))
    max_sites: int = 24
    max_macs: int = 0


def is_valid_for(g: nx.DiGraph, limits: MutationLimits) -> bool:
    """True when ``g`` is valid for every input shape of ``limits`` under its caps."""
    return all(
        not check_genome(g, input_shape=s, max_channels=limits.max_channels,
                         max_nodes=limits.max_nodes)
        and (not limits.max_macs or count_macs(g, s, 10) <= limits.max_macs)
        for s in limits.input_shapes
    )


def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """One element of ``seq`` as a plain Python value (never a numpy scalar)."""
    value = seq[int(rng.integers(len(seq)))]
    return value.item() if hasattr(value, "item") else value


def _first_valid(
    g: nx.DiGraph, rng: np.random.Generator, limits: MutationLimits, sites: list[Any],
    apply: Callable[[nx.DiGraph, Any], bool],
) -> nx.DiGraph | None:
    """Try ``apply(copy, site)`` on sites in random order; the first valid copy wins."""
    for i in rng.permutation(len(sites))[: limits.max_sites]:
        child = g.copy()
        if apply(child, sites[int(i)]) and is_valid_for(child, limits):
            return child
    return None


def _block_params(op: str, rng: np.random.Generator, limits: MutationLimits) -> dict[str, Any]:
    if op == "pool":
        return {"kind": pick(rng, limits.pool_kinds)}
    return {"channels": int(pick(rng, limits.channels)), "kernel": int(pick(rng, limits.kernels))}


def _sorted_edges(g: nx.DiGraph) -> list[tuple[Any, Any]]:
    return sorted(g.edges, key=lambda e: (str(e[0]), str(e[1])))


def add_block(g: nx.DiGraph, rng: np.random.Generator, *, limits: MutationLimits,
              op: str) -> nx.DiGraph | None:
    """Insert a new ``op`` block (conv / pool / sconv) with random params on a random edge."""
    params = _block_params(op, rng, limits)

    def apply(child: nx.DiGraph, edge: tuple[Any, Any]) -> bool:
        u, v = edge
        attrs = dict(child.edges[u, v])
        w = new_node_id(child)
        child.remove_edge(u, v)
        child.add_node(w, op=op, **params)
        child.add_edge(u, w)
        child.add_edge(w, v, **attrs)
        return True

    return _first_valid(g, rng, limits, _sorted_edges(g), apply)


def edit_block(g: nx.DiGraph, rng: np.random.Generator, *, limits: MutationLimits,
               op: str) -> nx.DiGraph | None:
    """Change one ``op`` block: new channels or kernel (conv / sconv), other kind (pool)."""

    def apply(child: nx.DiGraph, node: Any) -> bool:
        attrs = child.nodes[node]
        if op == "pool":
            kinds = [k for k in limits.pool_kinds if k != attrs["kind"]]
            if not kinds:
                return False
            attrs["kind"] = pick(rng, kinds)
            return True
        fields = [("channels", limits.channels), ("kernel", limits.kernels)]
        for j in rng.permutation(2):
            name, choices = fields[int(j)]
            options = [c for c in choices if c != attrs[name]]
            if options:
                attrs[name] = int(pick(rng, options))
                return True
        return False

    return _first_valid(g, rng, limits, find_op(g, op), apply)


def delete_block(g: nx.DiGraph, rng: np.random.Generator, *, limits: MutationLimits,
                 op: str) -> nx.DiGraph | None:
    """Remove one ``op`` block, connecting its input to each of its consumers."""

    def apply(child: nx.DiGraph, node: Any) -> bool:
        (u,) = list(child.predecessors(node))
        outs = [(s, dict(child.edges[node, s])) for s in child.successors(node)]
        if any(child.has_edge(u, s) for s, _ in outs):
            return False  # u already feeds that consumer: the skip would collapse
        child.remove_node(node)
        for s, attrs in outs:
            child.add_edge(u, s, **attrs)
        return True

    return _first_valid(g, rng, limits, find_op(g, op), apply)


def add_skip(g: nx.DiGraph, rng: np.random.Generator, *, limits: MutationLimits,
             op: str) -> nx.DiGraph | None:
    """Add a ``sum`` / ``concat`` block joining an edge's source with an earlier node."""
    sites = [((u, v), a) for u, v in _sorted_edges(g)
             for a in sorted(nx.ancestors(g, u), key=str)]

    def apply(child: nx.DiGraph, site: tuple[tuple[Any, Any], Any]) -> bool:
        (u, v), a = site
        attrs = dict(child.edges[u, v])
        s = new_node_id(child)
        child.remove_edge(u, v)
        child.add_node(s, op=op)
        child.add_edge(u, s, port=0)
        child.add_edge(a, s, port=1)
        child.add_edge(s, v, **attrs)
        return True

    return _first_valid(g, rng, limits, sites, apply)


def _prune_dead(g: nx.DiGraph) -> None:
    """Remove nodes that no longer reach the output (they cannot feed a live node)."""
    live = nx.ancestors(g, the_node(g, "output")) | {the_node(g, "output")}
    g.remove_nodes_from([n for n in list(g.nodes) if n not in live])


def delete_skip(g: nx.DiGraph, rng: np.random.Generator, *, limits: MutationLimits,
                op: str) -> nx.DiGraph | None:
    """Remove a ``sum`` / ``concat`` block, keeping one input; a branch left dangling goes too."""
    sites = [(n, keep) for n in find_op(g, op) for keep in (0, 1)]

    def apply(child: nx.DiGraph, site: tuple[Any, int]) -> bool:
        node, keep = site
        kept = ordered_inputs(child, node)[keep]
        outs = [(s, dict(child.edges[node, s])) for s in child.successors(node)]
        if any(child.has_edge(kept, s) for s, _ in outs):
            return False
        child.remove_node(node)
        for s, attrs in outs:
            child.add_edge(kept, s, **attrs)
        _prune_dead(child)
        return True

    return _first_valid(g, rng, limits, sites, apply)


def _bind(fn: Callable[..., nx.DiGraph | None], op: str, name: str) -> Mutation:
    def operator(g: nx.DiGraph, rng: np.random.Generator, *,
                 limits: MutationLimits) -> nx.DiGraph | None:
        return fn(g, rng, limits=limits, op=op)

    operator.__name__ = operator.__qualname__ = name
    operator.__doc__ = f"``{name}``: {fn.__doc__}"
    return operator


def _operators() -> dict[str, Mutation]:
    table: dict[str, Mutation] = {}
    for op in BLOCK_OPS:
        for verb, fn in (("add", add_block), ("edit", edit_block), ("delete", delete_block)):
            table[f"{verb}_{op}"] = _bind(fn, op, f"{verb}_{op}")
    for op in SKIP_OPS:
        for verb, fn in (("add", add_skip), ("delete", delete_skip)):
            table[f"{verb}_{op}"] = _bind(fn, op, f"{verb}_{op}")
    return table


#: Every mutation operator by name: ``add_/edit_/delete_`` + conv/pool/sconv,
#: ``add_/delete_`` + sum/concat. Each is ``op(g, rng, *, limits) -> DiGraph | None``.
MUTATIONS: dict[str, Mutation] = _operators()


def mutate(
    g: nx.DiGraph,
    rng: np.random.Generator,
    *,
    limits: MutationLimits | None = None,
    count: int = 1,
    operators: Iterable[str] | None = None,
) -> tuple[nx.DiGraph, list[str]]:
    """Aggressive mutation: apply ``count`` operators in a row (paper 3.2; 4-5 in the paper).

    At each step the operators are tried in a random order until one applies, so a step only
    fails when no operator can produce a valid genome (then mutation stops early).

    Args:
        g: the parent (never modified).
        rng: the random generator.
        limits: choices and caps of the search space.
        count: number of mutations in a row.
        operators: names from :data:`MUTATIONS` to draw from (default: all).

    Returns:
        ``(child, applied)``: a new genome and the names of the operators applied, in order.
    """
    limits = limits or MutationLimits()
    names = sorted(operators) if operators is not None else sorted(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        raise ValueError(f"unknown mutation operators {unknown}; "
                         f"valid: {', '.join(sorted(MUTATIONS))}")
    child, applied = g.copy(), []
    for _ in range(count):
        for i in rng.permutation(len(names)):
            result = MUTATIONS[names[int(i)]](child, rng, limits=limits)
            if result is not None:
                child = result
                applied.append(names[int(i)])
                break
        else:
            break
    return child, applied
