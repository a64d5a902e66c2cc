"""compile_genome: the model contract, skip semantics (zero padding), naming, shapes, counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from genome_factories import chain, conv, make, pool, sconv, skip_net

import genome as gn
from search_spaces import sample_genome


def test_model_contract():
    g = skip_net("concat", c_main=8, c_skip=4)
    net = gn.compile_genome(g, num_classes=7, input_shape=(3, 32, 32), mean=[0.1, 0.2, 0.3],
                            std=0.5)
    x = torch.rand(2, 3, 32, 32)
    f = net.forward_features(x)
    assert f.shape == (2, net.num_features, 16, 16) and net.num_features == 12
    logits = net(x)
    assert logits.shape == (2, 7) and net.num_classes == 7
    assert torch.allclose(net.forward_head(f), logits)
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))  # raw logits
    assert net.tap_names == ("conv_a", "sconv_b", "concat_s")
    outs = []
    hooks = [net.get_submodule(n).register_forward_hook(lambda m, i, o: outs.append(o))
             for n in net.tap_names]
    net(x)
    for h in hooks:
        h.remove()
    assert [o.dim() for o in outs] == [4, 4, 4]
    assert [o.shape[2] for o in outs] == [32, 16, 16]  # shallow to deep


def test_normalisation_is_the_first_layer():
    g = chain(conv(4))
    mean, std = [0.3, 0.4, 0.5], [0.2, 0.25, 0.5]
    net = gn.compile_genome(g, input_shape=(3, 8, 8), mean=mean, std=std).eval()
    plain = gn.compile_genome(g, input_shape=(3, 8, 8)).eval()
    plain.load_state_dict({**net.state_dict(), "normalize.mean": torch.zeros(1, 3, 1, 1),
                           "normalize.std": torch.ones(1, 3, 1, 1)})
    x = torch.rand(2, 3, 8, 8)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(net(x), plain((x - m) / s), atol=1e-6)
    assert "normalize.mean" in net.state_dict()
    with pytest.raises(ValueError, match="normalisation values"):
        gn.compile_genome(g, input_shape=(3, 8, 8), mean=[0.1, 0.2])


def _identity_conv(block: torch.nn.Module, scale: float) -> None:
    """conv weight = scale * identity on the first channels, BN an exact pass-through."""
    w = block.conv.weight
    with torch.no_grad():
        w.zero_()
        k = w.shape[-1] // 2
        for c in range(min(w.shape[0], w.shape[1])):
            w[c, c, k, k] = scale
        block.bn.reset_running_stats()  # mean 0, var 1
        block.bn.weight.fill_(1.0)
        block.bn.bias.zero_()
        block.bn.eps = 0.0


def test_sum_zero_pads_the_smaller_input():
    # input(2ch) -> a: conv 2ch (x1) ; a -> b: conv 4ch (x10) ; s = sum(b, a) -> output
    g = make([("i", "input", {}), ("a", "conv", {"channels": 2, "kernel": 1}),
              ("b", "conv", {"channels": 4, "kernel": 1}), ("s", "sum", {}),
              ("o", "output", {"hidden": 0})],
             [("i", "a"), ("a", "b"), ("b", "s", 0), ("a", "s", 1), ("s", "o")])
    net = gn.compile_genome(g, input_shape=(2, 3, 3)).eval()
    _identity_conv(net.conv_a, 1.0)
    _identity_conv(net.conv_b, 10.0)
    x = torch.rand(1, 2, 3, 3)
    out = net.forward_features(x)  # (1, 4, 3, 3)
    assert out.shape == (1, 4, 3, 3)
    assert torch.allclose(out[:, :2], 11 * x, atol=1e-5)  # 10x + x on the shared channels
    assert torch.all(out[:, 2:] == 0)  # b's extra channels are 0 (10 * 0), a padded with 0


def test_skip_reconciles_spatial_size_with_adaptive_max_pool():
    g = skip_net("concat", c_main=3, c_skip=2)  # a at 6x6, b (stride 2) at 3x3
    net = gn.compile_genome(g, input_shape=(1, 6, 6)).eval()
    acts = {}
    for name in ("conv_a", "sconv_b"):
        net.get_submodule(name).register_forward_hook(
            lambda m, i, o, n=name: acts.__setitem__(n, o))
    out = net.forward_features(torch.rand(2, 1, 6, 6))
    assert out.shape == (2, 5, 3, 3)
    assert torch.equal(out[:, :3], acts["sconv_b"])  # port 0 first
    assert torch.equal(out[:, 3:], torch.nn.functional.max_pool2d(acts["conv_a"], 2))


def test_module_names_are_deterministic():
    g = chain(conv(), pool(), sconv(), hidden=16)
    k1 = list(gn.compile_genome(g).state_dict())
    k2 = list(gn.compile_genome(gn.from_json(gn.to_json(g))).state_dict())
    assert k1 == k2
    assert {k.split(".")[0] for k in k1} == {"normalize", "conv_n1", "sconv_n3", "head"}


def test_compile_rejects_invalid_genomes():
    with pytest.raises(gn.InvalidGenome, match="below 1"):
        gn.compile_genome(chain(*[pool()] * 4), input_shape=(1, 8, 8))


def _real_shapes(net, g, x):
    shapes, hooks = {}, []
    for n in g.nodes:
        op = g.nodes[n]["op"]
        if op in ("input", "output"):
            continue
        mod = net.get_submodule(f"{op}_{n}")
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:]))))
    net(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_static_shapes_params_and_macs_match_the_network(seed, shape):
    g = sample_genome(np.random.default_rng(seed), input_shape=shape)
    net = gn.compile_genome(g, num_classes=10, input_shape=shape)
    inferred = gn.infer_shapes(g, shape)
    real = _real_shapes(net, g, torch.rand(1, *shape))
    assert real == {n: s for n, s in inferred.items() if n in real}
    assert gn.count_params(g, shape, 10) == sum(p.numel() for p in net.parameters())
    assert gn.count_macs(g, shape, 10) > 0


def test_macs_of_a_single_conv():
    g = chain(conv(8, 3), hidden=0)
    # conv: 8 out * 1 in * 3 * 3 per pixel * 28 * 28 pixels; head: 8 * 10
    assert gn.count_macs(g, (1, 28, 28), 10) == 8 * 9 * 28 * 28 + 8 * 10
    assert gn.count_params(g, (1, 28, 28), 10) == 8 * 9 + 2 * 8 + 8 * 10 + 10
