"""Structural checks of a genome graph (everything that does not need shapes).

``structure_problems`` lists problems with ops and params, the number of input/output nodes,
cycles, arities and ports, and nodes that lie on no input->output path. Each kind of problem
has its own message so the user can tell what to fix (NAS-Bench-101 ``_check_spec`` style).
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from genome.ops import OPS, SKIP_OPS, node_id_ok, param_problems


class InvalidGenome(ValueError):
    """A genome that is not a valid network; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) if self.problems else "invalid genome")


def _io_problems(g: nx.DiGraph) -> list[str]:
    problems = []
    for op in ("input", "output"):
        found = sorted((str(n) for n, a in g.nodes(data=True) if a.get("op") == op))
        if len(found) != 1:
            which = f" ({', '.join(found)})" if found else ""
            problems.append(f"genome has {len(found)} {op} nodes{which}; exactly one is required")
    return problems


def _arity_problems(g: nx.DiGraph) -> list[str]:
    problems = []
    for n in sorted(g.nodes, key=str):
        op = g.nodes[n].get("op")
        if op not in OPS:
            continue
        arity, got = OPS[op].arity, g.in_degree(n)
        if got != arity:
            problems.append(f"node {n!r} ({op}) has {got} inputs; {op} takes exactly {arity}")
        if op == "output" and g.out_degree(n):
            problems.append(f"node {n!r} (output) must not feed other nodes")
        if op in SKIP_OPS and got == 2:
            ports = sorted(g.edges[p, n].get("port", -1) for p in g.predecessors(n))
            if ports != [0, 1]:
                problems.append(f"node {n!r} ({op}): input ports must be 0 and 1, got {ports}")
    for u, v in sorted(g.edges, key=lambda e: (str(e[0]), str(e[1]))):
        if "port" in g.edges[u, v] and g.nodes[v].get("op") not in SKIP_OPS:
            problems.append(f"edge {u!r} -> {v!r}: a port is only allowed on sum/concat inputs")
    return problems


def _cycle_problems(g: nx.DiGraph) -> list[str]:
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return []
    path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
    return [f"genome has a cycle: {path}"]


def _path_problems(g: nx.DiGraph) -> list[str]:
    inputs = [n for n, a in g.nodes(data=True) if a.get("op") == "input"]
    outputs = [n for n, a in g.nodes(data=True) if a.get("op") == "output"]
    if len(inputs) != 1 or len(outputs) != 1:
        return []
    src, dst = inputs[0], outputs[0]
    on_path = (nx.descendants(g, src) | {src}) & (nx.ancestors(g, dst) | {dst})
    off = sorted((n for n in g.nodes if n not in on_path), key=str)
    return [f"node {n!r} ({g.nodes[n].get('op')}) is not on any input->output path" for n in off]


def core_problems(g: nx.DiGraph) -> list[str]:
    """Problems that make shapes undefined: ids, ops/params, input/output count, cycles, arity."""
    if not isinstance(g, nx.DiGraph) or g.is_multigraph():
        return ["a genome must be a networkx.DiGraph"]
    if g.number_of_nodes() == 0:
        return ["genome has no nodes"]
    problems: list[str] = []
    for n in sorted(g.nodes, key=str):
        if not node_id_ok(n):
            problems.append(f"node id {n!r} may only contain letters, digits and '_'")
        problems += param_problems(n, dict(g.nodes[n]))
    problems += _io_problems(g)
    problems += _cycle_problems(g)
    problems += _arity_problems(g)
    return problems


def structure_problems(g: nx.DiGraph) -> list[str]:
    """Every structural problem of ``g`` (empty list when the structure is sound)."""
    problems = core_problems(g)
    if problems and problems[0] in ("a genome must be a networkx.DiGraph", "genome has no nodes"):
        return problems
    return problems + _path_problems(g)


def assert_structure(g: nx.DiGraph) -> None:
    """Raise :class:`InvalidGenome` when the structure is unsound."""
    problems = structure_problems(g)
    if problems:
        raise InvalidGenome(problems)


def the_node(g: nx.DiGraph, op: str) -> Any:
    """The single node with op ``op`` (``input`` or ``output``) of a sound genome."""
    (node,) = [n for n, a in g.nodes(data=True) if a.get("op") == op]
    return node
