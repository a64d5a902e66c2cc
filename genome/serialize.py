"""Versioned JSON round trip of a genome (plain data, deterministic, stable across processes).

The format (``format_version`` 1)::

    {
      "format": "nas-genome",
      "format_version": 1,
      "nodes": [{"id": "n0", "op": "input"}, {"id": "n1", "op": "conv", "channels": 32,
                 "kernel": 3}, ...],
      "edges": [{"src": "n0", "dst": "n1"}, {"src": "n1", "dst": "n4", "port": 0}, ...]
    }

Nodes and edges are sorted by id string, keys are sorted, so the same genome always gives the
same bytes. Node ids are strings on disk. ``from_json`` checks the *format* only (types,
unknown keys, dangling edges); whether the graph is a valid network is ``check_genome``'s job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import networkx as nx

from nasbase.files import write_text_atomically

FORMAT_NAME = "nas-genome"
FORMAT_VERSION = 1


class GenomeFormatError(ValueError):
    """A genome file or string that is not a well-formed genome document."""


class UnknownGenomeName(GenomeFormatError, KeyError):
    """A genome name that is neither a named genome nor a file; the message lists valid names.

    It is a :class:`GenomeFormatError` (so every command reports it as one line, exit 2) and a
    ``KeyError`` (it is a failed lookup).
    """

    def __init__(self, name: str, valid: list[str]) -> None:
        self.name, self.valid = name, list(valid)
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown genome {self.name!r}; valid: {', '.join(self.valid)}"


def to_dict(g: nx.DiGraph) -> dict[str, Any]:
    """The JSON-able document of ``g`` (sorted nodes and edges)."""
    nodes = []
    for n in sorted(g.nodes, key=str):
        attrs = dict(g.nodes[n])
        nodes.append({"id": str(n), **{k: attrs[k] for k in sorted(attrs)}})
    edges = []
    for u, v in sorted(g.edges, key=lambda e: (str(e[0]), str(e[1]))):
        edge: dict[str, Any] = {"src": str(u), "dst": str(v)}
        if "port" in g.edges[u, v]:
            edge["port"] = g.edges[u, v]["port"]
        edges.append(edge)
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "nodes": nodes, "edges": edges}


def to_json(g: nx.DiGraph, *, indent: int | None = 1) -> str:
    """Serialise a genome to a deterministic JSON string."""
    return json.dumps(to_dict(g), indent=indent, sort_keys=True)


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise GenomeFormatError(msg)


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def from_dict(doc: Any) -> nx.DiGraph:
    """Build a genome from a parsed document; raises :class:`GenomeFormatError` on bad format."""
    _require(isinstance(doc, dict), "genome document must be a JSON object")
    _require(doc.get("format") == FORMAT_NAME,
             f"not a genome document ('format' must be {FORMAT_NAME!r})")
    version = doc.get("format_version")
    _require(version == FORMAT_VERSION,
             f"unsupported genome format_version {version!r} (expected {FORMAT_VERSION})")
    unknown = set(doc) - {"format", "format_version", "nodes", "edges", "meta"}
    _require(not unknown, f"unknown top-level keys {sorted(unknown)}")
    nodes, edges = doc.get("nodes"), doc.get("edges")
    _require(isinstance(nodes, list), "'nodes' must be a list")
    _require(isinstance(edges, list), "'edges' must be a list")
    g = nx.DiGraph()
    for i, node in enumerate(nodes):
        _require(isinstance(node, dict), f"nodes[{i}] must be an object")
        _require(isinstance(node.get("id"), str) and node["id"] != "",
                 f"nodes[{i}] needs a non-empty string 'id'")
        _require(isinstance(node.get("op"), str), f"node {node['id']!r} needs a string 'op'")
        _require(node["id"] not in g, f"duplicate node id {node['id']!r}")
        attrs = {k: v for k, v in node.items() if k != "id"}
        bad = [k for k, v in attrs.items() if not _json_scalar(v)]
        _require(not bad, f"node {node['id']!r}: params must be plain values, not {bad}")
        g.add_node(node["id"], **attrs)
    for i, edge in enumerate(edges):
        _require(isinstance(edge, dict), f"edges[{i}] must be an object")
        unknown = set(edge) - {"src", "dst", "port"}
        _require(not unknown, f"edges[{i}]: unknown keys {sorted(unknown)}")
        src, dst = edge.get("src"), edge.get("dst")
        _require(src in g and dst in g, f"edges[{i}] refers to unknown node ({src!r} -> {dst!r})")
        _require(not g.has_edge(src, dst), f"duplicate edge {src!r} -> {dst!r}")
        if "port" in edge:
            port = edge["port"]
            _require(isinstance(port, int) and not isinstance(port, bool),
                     f"edges[{i}]: 'port' must be an integer")
            g.add_edge(src, dst, port=port)
        else:
            g.add_edge(src, dst)
    return g


def from_json(text: str) -> nx.DiGraph:
    """Parse a genome from a JSON string; raises :class:`GenomeFormatError` on bad input."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GenomeFormatError(f"not valid JSON: {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}") from None
    return from_dict(doc)


def load(path: str | os.PathLike[str]) -> nx.DiGraph:
    """Read a genome file; a missing/unreadable/malformed file raises GenomeFormatError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenomeFormatError(f"cannot read genome file {str(path)!r}: {exc}") from None
    try:
        return from_json(text)
    except GenomeFormatError as exc:
        raise GenomeFormatError(f"{path}: {exc}") from None


def save(g: nx.DiGraph, path: str | os.PathLike[str]) -> None:
    """Write a genome to ``path`` as JSON, atomically."""
    write_text_atomically(path, to_json(g) + "\n")
