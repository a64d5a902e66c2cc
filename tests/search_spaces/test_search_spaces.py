"""The default space, the random sampler, the diverse initial population, named genomes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import genome as gn
import search_spaces as ss
from search_spaces import DEFAULT_SPACE


def test_space_is_frozen_and_builds_mutation_limits():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_SPACE.max_nodes = 3
    limits = DEFAULT_SPACE.limits()
    assert isinstance(limits, gn.MutationLimits)
    assert limits.channels == DEFAULT_SPACE.channels and limits.max_nodes == DEFAULT_SPACE.max_nodes
    assert set(limits.input_shapes) == {(1, 28, 28), (3, 32, 32)}
    assert min(DEFAULT_SPACE.channels) == 16 and max(DEFAULT_SPACE.channels) == 128
    assert dataclasses.asdict(DEFAULT_SPACE)["kernels"] == (1, 3, 5)


@pytest.mark.parametrize(("text", "shape"), [("1x28x28", (1, 28, 28)), ("3X32x32", (3, 32, 32))])
def test_parse_input_shape(text, shape):
    assert ss.parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["28x28", "axbxc", "0x28x28", ""])
def test_parse_input_shape_rejects(text):
    with pytest.raises(ValueError, match="CxHxW"):
        ss.parse_input_shape(text)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_sampled_genomes_are_valid_small_and_varied(shape):
    rng = np.random.default_rng(0)
    gs = [ss.sample_genome(rng, DEFAULT_SPACE, shape) for _ in range(40)]
    for g in gs:
        assert gn.is_valid_for(g, DEFAULT_SPACE.limits())
        assert gn.check_genome(g, input_shape=shape, max_channels=DEFAULT_SPACE.max_channels) == []
        convs = [a for _, a in g.nodes(data=True) if a["op"] in ("conv", "sconv")]
        assert all(a["channels"] in DEFAULT_SPACE.initial_channels for a in convs)
    assert len({gn.canonical_hash(g) for g in gs}) == len(gs)
    with_skips = sum(1 for g in gs if sum(gn.spectrum(g)[3:]) > 0)
    assert 0 < with_skips < len(gs)  # occasional skips, not always
    assert len({len(g) for g in gs}) > 5  # chain lengths vary


def test_sampler_is_reproducible():
    a = ss.sample_genome(np.random.default_rng(42))
    b = ss.sample_genome(np.random.default_rng(42))
    assert gn.to_json(a) == gn.to_json(b)


def _blocks(g):
    conv, pool, sconv, sum_, concat = gn.spectrum(g)
    return conv + sconv, pool, sum_ + concat


def test_named_genomes_follow_the_paper_appendix():
    ref, base = ss.named_genome("he-ref"), ss.named_genome("he-baseline")
    # (a): three convolutional blocks, three skip blocks (sum and concat), two FC blocks
    assert _blocks(ref) == (3, 0, 3)
    assert gn.spectrum(ref)[3] > 0 and gn.spectrum(ref)[4] > 0
    # (b): four convolutional blocks, one pooling block, two skip blocks, two FC blocks
    assert _blocks(base) == (4, 1, 2)
    for g in (ref, base):
        (head,) = [a for _, a in g.nodes(data=True) if a["op"] == "output"]
        assert head["hidden"] > 0  # hidden FC + classifier = two fully-connected blocks
        channels = [a["channels"] for _, a in g.nodes(data=True) if "channels" in a]
        assert min(channels) >= 32 and max(channels) <= 64
        assert gn.is_valid_for(g, DEFAULT_SPACE.limits())
    assert gn.canonical_hash(ref) != gn.canonical_hash(base)


@pytest.mark.parametrize("name", ["he-ref", "he-baseline"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_named_genomes_compile_and_train_a_step(name, shape):
    torch.manual_seed(0)
    net = gn.compile_genome(ss.named_genome(name), num_classes=10, input_shape=shape)
    x, y = torch.rand(8, *shape), torch.arange(8) % 10
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss0 = torch.nn.functional.cross_entropy(net(x), y)
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and loss.item() < loss0.item()


def test_named_genome_lookup():
    assert ss.list_named_genomes() == ["he-baseline", "he-ref"]
    a = ss.named_genome("he-ref")
    a.add_node("zz", op="input")
    assert "zz" not in ss.named_genome("he-ref")  # a fresh copy each time
    with pytest.raises(KeyError) as info:
        ss.named_genome("resnet")
    assert str(info.value) == "unknown genome 'resnet'; valid: he-baseline, he-ref"
    assert isinstance(info.value, gn.GenomeFormatError)  # reported by every command as one line


def test_resolve_genome(tmp_path):
    path = tmp_path / "g.json"
    gn.save(ss.named_genome("he-baseline"), path)
    assert (gn.canonical_hash(ss.resolve_genome(str(path)))
            == gn.canonical_hash(ss.named_genome("he-baseline")))
    assert (gn.canonical_hash(ss.resolve_genome("he-ref"))
            == gn.canonical_hash(ss.named_genome("he-ref")))
    with pytest.raises(gn.GenomeFormatError, match="does not exist"):
        ss.resolve_genome(str(tmp_path / "missing.json"))
    with pytest.raises(ss.UnknownGenomeName, match="valid: he-baseline, he-ref"):
        ss.resolve_genome("nothing")
