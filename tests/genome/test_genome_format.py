"""Versioned JSON round trip and malformed-document errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from genome_factories import chain, conv, pool, skip_net

import genome as gn


def test_round_trip_keeps_graph_and_hash(tmp_path):
    g = skip_net("concat")
    back = gn.from_json(gn.to_json(g))
    assert sorted(back.nodes(data=True)) == sorted(g.nodes(data=True))
    assert sorted(back.edges(data=True)) == sorted(g.edges(data=True))
    assert gn.canonical_hash(back) == gn.canonical_hash(g)
    path = tmp_path / "sub" / "g.json"
    gn.save(g, path)
    assert gn.canonical_hash(gn.load(path)) == gn.canonical_hash(g)
    assert [p.name for p in path.parent.iterdir()] == ["g.json"]  # no temp file left


def test_json_is_deterministic_and_versioned():
    g = chain(conv(16), pool("avg"), conv(32, 5))
    text = gn.to_json(g)
    shuffled = g.__class__()
    shuffled.add_nodes_from(reversed(list(g.nodes(data=True))))
    shuffled.add_edges_from(reversed(list(g.edges(data=True))))
    assert gn.to_json(shuffled) == text
    doc = json.loads(text)
    assert doc["format"] == "nas-genome" and doc["format_version"] == gn.FORMAT_VERSION
    assert [n["id"] for n in doc["nodes"]] == sorted(n["id"] for n in doc["nodes"])


def test_json_is_stable_across_processes():
    code = ("import sys; sys.path.insert(0, 'tests/genome'); from genome_factories import skip_net;"
            " import genome as gn; g = skip_net('sum'); print(gn.to_json(g));"
            " print(gn.canonical_hash(g))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)]
    assert runs[0] == runs[1]
    assert runs[0].strip().endswith(gn.canonical_hash(skip_net("sum")))


GOOD = json.loads(gn.to_json(chain(conv())))


def _doc(**changes):
    doc = json.loads(json.dumps(GOOD))
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (_doc(format="other"), "not a genome document"),
        (_doc(format_version=99), "unsupported genome format_version 99"),
        (_doc(extra=1), "unknown top-level keys ['extra']"),
        (_doc(nodes={}), "'nodes' must be a list"),
        (_doc(nodes=[{"op": "input"}]), "needs a non-empty string 'id'"),
        (_doc(nodes=[{"id": "a", "op": "input"}, {"id": "a", "op": "input"}]),
         "duplicate node id 'a'"),
        (_doc(nodes=[{"id": "a", "op": "conv", "channels": [1]}]), "params must be plain values"),
        (_doc(edges=[{"src": "n0", "dst": "zz"}]), "refers to unknown node"),
        (_doc(edges=[{"src": "n0", "dst": "n1", "port": "x"}]), "'port' must be an integer"),
        (_doc(edges=[{"src": "n0", "dst": "n1", "w": 1}]), "unknown keys ['w']"),
    ],
)
def test_malformed_documents_say_what_is_wrong(text, message):
    with pytest.raises(gn.GenomeFormatError) as info:
        gn.from_json(text)
    assert message in str(info.value)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(gn.GenomeFormatError, match="cannot read genome file"):
        gn.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(gn.GenomeFormatError, match="bad.json: not a genome document"):
        gn.load(bad)
