"""The op vocabulary of a genome: which ops exist, which params each takes, how many inputs.

A genome is a ``networkx.DiGraph`` whose nodes carry an ``op`` attribute plus that op's
params (plain JSON values). Edges into ``sum`` / ``concat`` carry ``port`` (0 or 1) so the
order of the two inputs is data. Semantics (paper section 3.2 and ``docs/architecture.md``):

| op       | params               | inputs | meaning                                            |
| -------- | -------------------- | ------ | -------------------------------------------------- |
| input    | -                    | 0      | the image                                          |
| conv     | channels, kernel     | 1      | Conv(k, stride 1, same padding) - BN - ReLU        |
| sconv    | channels, kernel     | 1      | Conv(k, stride 2, padding k//2) - BN - ReLU        |
| pool     | kind (max / avg)     | 1      | 2x2 window, stride 2 (floor)                       |
| sum      | -                    | 2      | zero-pad channels, adaptive max-pool space, add    |
| concat   | -                    | 2      | adaptive max-pool space, stack channels            |
| output   | hidden (0 = none)    | 1      | global avg pool - [Linear(hidden) - ReLU] - Linear |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import networkx as nx

#: Ops counted by the spectrum (paper eq. 3), in spectrum order.
SPECTRUM_OPS: tuple[str, ...] = ("conv", "pool", "sconv", "sum", "concat")
#: Ops that mutation may add, edit or delete as "blocks" (paper 3.2).
BLOCK_OPS: tuple[str, ...] = ("conv", "pool", "sconv")
#: Skip-connection ops with exactly two ordered inputs.
SKIP_OPS: tuple[str, ...] = ("sum", "concat")
POOL_KINDS: tuple[str, ...] = ("max", "avg")

_NODE_ID = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class OpSpec:
    """Static description of one op: its params (name -> type) and its input count."""

    name: str
    params: tuple[tuple[str, type], ...]
    arity: int

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)


OPS: dict[str, OpSpec] = {
    "input": OpSpec("input", (), 0),
    "conv": OpSpec("conv", (("channels", int), ("kernel", int)), 1),
    "sconv": OpSpec("sconv", (("channels", int), ("kernel", int)), 1),
    "pool": OpSpec("pool", (("kind", str),), 1),
    "sum": OpSpec("sum", (), 2),
    "concat": OpSpec("concat", (), 2),
    "output": OpSpec("output", (("hidden", int),), 1),
}


def node_params(g: nx.DiGraph, node: Any) -> dict[str, Any]:
    """The params of ``node`` (every attribute except ``op``), as a new dict."""
    return {k: v for k, v in g.nodes[node].items() if k != "op"}


def param_problems(node: Any, attrs: dict[str, Any]) -> list[str]:
    """Problems with one node's ``op`` and params (unknown op, missing/unknown/bad params)."""
    op = attrs.get("op")
    if op not in OPS:
        return [f"node {node!r}: unknown op {op!r} (valid: {', '.join(sorted(OPS))})"]
    spec = OPS[op]
    problems = []
    given = set(attrs) - {"op"}
    for extra in sorted(given - set(spec.param_names)):
        problems.append(f"node {node!r}: unknown param {extra!r} for op {op!r}")
    for name, typ in spec.params:
        if name not in attrs:
            problems.append(f"node {node!r}: op {op!r} is missing param {name!r}")
            continue
        value = attrs[name]
        if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"node {node!r}: param {name!r} must be an integer, got {value!r}")
        elif typ is str and not isinstance(value, str):
            problems.append(f"node {node!r}: param {name!r} must be a string, got {value!r}")
    if problems:
        return problems
    if op in ("conv", "sconv"):
        if attrs["channels"] < 1:
            problems.append(f"node {node!r}: channels must be >= 1, got {attrs['channels']}")
        if attrs["kernel"] < 1 or attrs["kernel"] % 2 == 0:
            problems.append(f"node {node!r}: kernel must be odd and >= 1, got {attrs['kernel']}")
    elif op == "pool" and attrs["kind"] not in POOL_KINDS:
        problems.append(f"node {node!r}: pool kind must be one of {POOL_KINDS}, "
                        f"got {attrs['kind']!r}")
    elif op == "output" and attrs["hidden"] < 0:
        problems.append(f"node {node!r}: hidden must be >= 0, got {attrs['hidden']}")
    return problems


def node_id_ok(node: Any) -> bool:
    """True when ``str(node)`` is a valid id (letters, digits, ``_``): it names modules."""
    return bool(_NODE_ID.match(str(node)))


def module_name(g: nx.DiGraph, node: Any) -> str:
    """Deterministic submodule name of a node, e.g. ``conv_n3``; the output node is ``head``.

    Names depend only on the node id and op, so weights map across compile and export.
    """
    op = g.nodes[node]["op"]
    return "head" if op == "output" else f"{op}_{node}"


def ordered_inputs(g: nx.DiGraph, node: Any) -> list[Any]:
    """Predecessors of ``node`` in port order (port 0 first); single inputs as a 1-list."""
    preds = list(g.predecessors(node))
    return sorted(preds, key=lambda p: (g.edges[p, node].get("port", 0), str(p)))


def topological_order(g: nx.DiGraph) -> list[Any]:
    """A deterministic topological order (ties broken by the node id's string)."""
    return list(nx.lexicographical_topological_sort(g, key=str))


def find_op(g: nx.DiGraph, op: str) -> list[Any]:
    """Nodes whose op is ``op``, sorted by id string."""
    return sorted((n for n, a in g.nodes(data=True) if a.get("op") == op), key=str)


def new_node_id(g: nx.DiGraph) -> str:
    """The smallest unused id of the form ``n<k>``."""
    taken = {str(n) for n in g.nodes}
    k = len(taken)
    while f"n{k}" in taken:
        k += 1
    return f"n{k}"
