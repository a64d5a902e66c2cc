"""Spectrum (eq. 3), spectrum distance and the canonical hash."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from genome_factories import chain, conv, make, pool, sconv, skip_net

import genome as gn
from search_spaces import sample_genome


def test_spectrum_counts_each_block_kind():
    g = skip_net("concat")
    g2 = chain(conv(), conv(), pool(), sconv())
    assert gn.spectrum(g) == (1, 0, 1, 0, 1)
    assert gn.spectrum(g2) == (2, 1, 1, 0, 0)
    assert gn.spectrum_distance(g, g2) == pytest.approx(math.sqrt(1 + 1 + 0 + 0 + 1))
    assert gn.spectrum_distance((0, 0, 0, 0, 0), (3, 4, 0, 0, 0)) == 5.0
    with pytest.raises(ValueError, match="different lengths"):
        gn.spectrum_distance((1, 2), (1, 2, 3))


@pytest.mark.parametrize("seed", range(6))
def test_hash_and_spectrum_ignore_node_names(seed):
    rng = np.random.default_rng(seed)
    g = sample_genome(rng)
    names = [f"x{i}" for i in rng.permutation(len(g))]
    renamed = nx.relabel_nodes(g, dict(zip(g.nodes, names, strict=True)))
    assert gn.canonical_hash(renamed) == gn.canonical_hash(g)
    assert gn.spectrum(renamed) == gn.spectrum(g)
    assert gn.canonical_hash(gn.from_json(gn.to_json(renamed))) == gn.canonical_hash(g)


def test_same_spectrum_different_architecture():
    """The documented counterexample: conv->pool and pool->conv share spectrum (1,1,0,0,0)."""
    a, b = chain(conv(), pool()), chain(pool(), conv())
    assert gn.spectrum(a) == gn.spectrum(b) == (1, 1, 0, 0, 0)
    assert gn.spectrum_distance(a, b) == 0.0
    assert gn.canonical_hash(a) != gn.canonical_hash(b)


def test_hash_sees_params_ports_and_sharing():
    base = skip_net("concat")
    h = gn.canonical_hash(base)
    edited = base.copy()
    edited.nodes["a"]["kernel"] = 5
    assert gn.canonical_hash(edited) != h
    swapped = base.copy()
    swapped.edges["b", "s"]["port"], swapped.edges["a", "s"]["port"] = 1, 0
    assert gn.canonical_hash(swapped) != h


def test_hash_tells_a_shared_block_from_two_copies():
    """x feeding a and b vs. two copies of x: same computation tree, different networks."""
    c = {"channels": 8, "kernel": 3}
    shared = make([("i", "input", {}), ("x", "conv", c), ("a", "conv", c), ("b", "conv", c),
                   ("s", "sum", {}), ("o", "output", {"hidden": 0})],
                  [("i", "x"), ("x", "a"), ("x", "b"), ("a", "s", 0), ("b", "s", 1), ("s", "o")])
    copies = make([("i", "input", {}), ("x1", "conv", c), ("x2", "conv", c), ("a", "conv", c),
                   ("b", "conv", c), ("s", "sum", {}), ("o", "output", {"hidden": 0})],
                  [("i", "x1"), ("i", "x2"), ("x1", "a"), ("x2", "b"), ("a", "s", 0),
                   ("b", "s", 1), ("s", "o")])
    assert gn.check_genome(shared) == gn.check_genome(copies) == []
    assert gn.canonical_hash(shared) != gn.canonical_hash(copies)


def test_hash_rejects_cycles():
    g = chain(conv(), conv())
    g.add_edge("n2", "n1")
    with pytest.raises(gn.InvalidGenome, match="cycle"):
        gn.canonical_hash(g)
