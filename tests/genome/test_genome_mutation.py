"""Mutation operators (paper 3.2): valid children, untouched parents, limits respected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from genome_factories import chain, conv, make, pool, sconv, skip_net
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genome as gn
from search_spaces import DEFAULT_SPACE, sample_genome

LIMITS = DEFAULT_SPACE.limits()  # valid for both 1x28x28 and 3x32x32
# the same space with few channels, so the property test's forward/backward passes stay fast
SMALL = dataclasses.replace(DEFAULT_SPACE, channels=(4, 8, 12), initial_channels=(4, 8))


def _forward_backward(g, shape):
    net = gn.compile_genome(g, num_classes=10, input_shape=shape)
    x = torch.rand(2, *shape)
    logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(8, 24))
def test_long_mutation_chains_stay_valid_and_trainable(seed, steps):
    rng = np.random.default_rng(seed)
    limits = SMALL.limits()
    parent = sample_genome(rng, SMALL)
    before = gn.to_json(parent)
    child = parent
    for _ in range(steps // 4):
        child, applied = gn.mutate(child, rng, limits=limits, count=4)
        assert applied and all(a in gn.MUTATIONS for a in applied)
        assert gn.is_valid_for(child, limits)
    assert gn.to_json(parent) == before  # the parent never changes
    for shape in limits.input_shapes:
        assert gn.check_genome(child, input_shape=shape, max_channels=limits.max_channels,
                               max_nodes=limits.max_nodes) == []
        _forward_backward(child, shape)


def _delta(a, b):
    return tuple(y - x for x, y in zip(gn.spectrum(a), gn.spectrum(b), strict=True))


BASE = chain(conv(16), pool(), conv(32), hidden=0)
# every block kind once, and both skip kinds: input -> a -> p -> b(sconv) -> s = sum(b, a)
# -> c = concat(s, p) -> output
FULL = make(
    [("in", "input", {}), ("a", *conv(8)), ("p", *pool()), ("b", *sconv(8)), ("s", "sum", {}),
     ("c", "concat", {}), ("out", "output", {"hidden": 0})],
    [("in", "a"), ("a", "p"), ("p", "b"), ("b", "s", 0), ("a", "s", 1), ("s", "c", 0),
     ("p", "c", 1), ("c", "out")],
)


@pytest.mark.parametrize(
    ("name", "delta"),
    [("add_conv", (1, 0, 0, 0, 0)), ("add_pool", (0, 1, 0, 0, 0)), ("add_sconv", (0, 0, 1, 0, 0)),
     ("delete_conv", (-1, 0, 0, 0, 0)), ("delete_pool", (0, -1, 0, 0, 0)),
     ("add_sum", (0, 0, 0, 1, 0)), ("add_concat", (0, 0, 0, 0, 1)),
     ("edit_conv", (0, 0, 0, 0, 0)), ("edit_pool", (0, 0, 0, 0, 0))],
)
def test_each_operator_does_what_it_says(name, delta):
    _check_operator(BASE, name, delta)


@pytest.mark.parametrize(
    ("name", "delta"),
    [("edit_sconv", (0, 0, 0, 0, 0)), ("delete_sconv", (0, 0, -1, 0, 0)),
     ("delete_sum", (0, 0, 0, -1, 0)), ("delete_concat", (0, 0, 0, 0, -1)),
     ("add_conv", (1, 0, 0, 0, 0)), ("add_sum", (0, 0, 0, 1, 0))],
)
def test_each_operator_does_what_it_says_on_a_graph_with_every_block_kind(name, delta):
    _check_operator(FULL, name, delta)


def test_every_operator_is_covered_by_the_parametrisations():
    covered = set()
    for fn in (test_each_operator_does_what_it_says,
               test_each_operator_does_what_it_says_on_a_graph_with_every_block_kind):
        (mark,) = [m for m in fn.pytestmark if m.name == "parametrize"]
        covered |= {name for name, _ in mark.args[1]}
    assert covered == set(gn.MUTATIONS)


def _check_operator(base, name, delta):
    assert gn.is_valid_for(base, LIMITS)
    before = gn.to_json(base)
    child = gn.MUTATIONS[name](base, np.random.default_rng(0), limits=LIMITS)
    assert child is not None and child is not base
    assert gn.to_json(base) == before
    assert _delta(base, child) == delta
    assert gn.is_valid_for(child, LIMITS)
    if name.startswith("edit"):
        assert gn.canonical_hash(child) != gn.canonical_hash(base)
        assert sorted(child.edges) == sorted(base.edges)


def test_new_params_come_from_the_limits():
    rng = np.random.default_rng(1)
    limits = gn.MutationLimits(channels=(24,), kernels=(5,), input_shapes=((1, 28, 28),))
    child = gn.MUTATIONS["add_conv"](BASE, rng, limits=limits)
    new = [a for n, a in child.nodes(data=True) if n not in BASE]
    assert new == [{"op": "conv", "channels": 24, "kernel": 5}]
    assert type(new[0]["channels"]) is int  # JSON-able, not a numpy scalar


def test_delete_skip_removes_the_block_and_any_dangling_branch():
    g = skip_net("sum")
    for keep in range(4):
        child = gn.MUTATIONS["delete_sum"](g, np.random.default_rng(keep), limits=LIMITS)
        assert child is not None and gn.spectrum(child)[3] == 0
        assert gn.is_valid_for(child, LIMITS)


def test_operators_report_when_they_cannot_apply():
    rng = np.random.default_rng(0)
    only_conv = chain(conv(16))
    assert gn.MUTATIONS["delete_pool"](only_conv, rng, limits=LIMITS) is None
    assert gn.MUTATIONS["delete_sum"](only_conv, rng, limits=LIMITS) is None
    one_kind = gn.MutationLimits(pool_kinds=("max",))
    assert gn.MUTATIONS["edit_pool"](chain(pool("max")), rng, limits=one_kind) is None
    full = gn.MutationLimits(max_nodes=len(only_conv))
    assert gn.MUTATIONS["add_conv"](only_conv, rng, limits=full) is None
    tiny = gn.MutationLimits(input_shapes=((1, 2, 2),))
    assert gn.MUTATIONS["add_pool"](chain(pool()), rng, limits=tiny) is None  # 2 -> 1 -> 0


def test_mutate_is_reproducible_and_counts():
    g = sample_genome(np.random.default_rng(5))
    a, ops_a = gn.mutate(g, np.random.default_rng(9), limits=LIMITS, count=5)
    b, ops_b = gn.mutate(g, np.random.default_rng(9), limits=LIMITS, count=5)
    assert ops_a == ops_b and len(ops_a) == 5
    assert gn.to_json(a) == gn.to_json(b)
    c, ops_c = gn.mutate(g, np.random.default_rng(9), limits=LIMITS, count=2,
                         operators=["add_conv"])
    assert ops_c == ["add_conv", "add_conv"] and gn.spectrum(c)[0] == gn.spectrum(g)[0] + 2
    with pytest.raises(ValueError, match="unknown mutation operators"):
        gn.mutate(g, np.random.default_rng(0), count=1, operators=["grow"])
