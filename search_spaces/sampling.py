"""Random genomes and the diverse initial population (paper 3.2, Algorithm 1 line 1).

``sample_genome`` draws a small chain of conv / pool / sconv blocks (the mix of block kinds
and the length vary from sample to sample, so spectra spread out) and adds a few skip blocks
with the mutation operators. ``initial_population`` keeps drawing until it has ``size``
genomes whose pairwise spectrum distance (eq. 3) is at least ``min_distance`` (paper: 4).
"""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np

from genome import add_skip, assert_valid, is_valid_for
from genome.mutation import pick
from search_spaces.space import DEFAULT_SPACE, SearchSpace, Shape


def _chain_ops(rng: np.random.Generator, space: SearchSpace, min_size: int) -> list[str]:
    """Block kinds of a random chain; downsampling only while every map stays >= 2x2."""
    length = int(rng.integers(space.min_blocks, space.max_blocks + 1))
    p_down = float(rng.uniform(0.1, 0.5))  # per-sample mix of block kinds
    size, ops = min_size, []
    for _ in range(length):
        if size >= 4 and rng.random() < p_down:
            ops.append("pool" if rng.random() < 0.5 else "sconv")
            size //= 2
        else:
            ops.append("conv")
    return ops


def sample_genome(
    rng: np.random.Generator,
    space: SearchSpace = DEFAULT_SPACE,
    input_shape: Shape = (1, 28, 28),
) -> nx.DiGraph:
    """A random valid genome: a chain of blocks plus occasional sum / concat skips.

    With ``space.max_macs`` a genome over the cap is drawn again (from the same generator, so
    the sequence stays seeded); without it one draw is all there is.

    Args:
        rng: the random generator (the only source of randomness).
        space: choices and caps.
        input_shape: ``(C, H, W)`` the genome must be valid for (besides the space's shapes).

    Raises:
        ValueError: no genome under ``space.max_macs`` in 1,000 draws (a cap below what the
            smallest chain costs).
    """
    for _ in range(1000):
        g = _draw(rng, space, input_shape)
        if not space.max_macs or is_valid_for(g, space.limits()):
            return g
    raise ValueError(f"no genome of the space fits max_macs={space.max_macs} in 1000 draws; "
                     "raise the cap")


def _draw(rng: np.random.Generator, space: SearchSpace, input_shape: Shape) -> nx.DiGraph:
    """One draw of :func:`sample_genome`, valid for every cap but ``max_macs``."""
    min_size = min(min(s[1:]) for s in (*space.input_shapes, tuple(input_shape)))
    g = nx.DiGraph()
    g.add_node("n0", op="input")
    prev = "n0"
    for i, op in enumerate(_chain_ops(rng, space, min_size), start=1):
        if op == "pool":
            g.add_node(f"n{i}", op="pool", kind=pick(rng, space.pool_kinds))
        else:
            g.add_node(f"n{i}", op=op, channels=int(pick(rng, space.initial_channels)),
                       kernel=int(pick(rng, space.kernels)))
        g.add_edge(prev, f"n{i}")
        prev = f"n{i}"
    out = f"n{len(g)}"
    g.add_node(out, op="output", hidden=int(pick(rng, space.hidden_choices)))
    g.add_edge(prev, out)
    limits = dataclasses.replace(space.limits(), max_macs=0)  # the caller checks the MACs
    for _ in range(space.max_initial_skips):
        if rng.random() < space.skip_probability:
            child = add_skip(g, rng, limits=limits, op="sum" if rng.random() < 0.5 else "concat")
            g = child if child is not None else g
    assert_valid(g, input_shape=input_shape, max_channels=space.max_channels,
                 max_nodes=space.max_nodes)
    assert is_valid_for(g, limits)
    return g
