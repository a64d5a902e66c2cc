"""Each kind of invalid genome gives its own specific message."""

from __future__ import annotations

import pytest
from genome_factories import chain, conv, make, pool, skip_net

import genome as gn


def _problems(g, **kw):
    return gn.check_genome(g, input_shape=kw.pop("input_shape", (1, 28, 28)), **kw)


def test_valid_genomes_have_no_problems():
    assert _problems(chain(conv(), pool(), conv())) == []
    assert _problems(skip_net("sum"), max_channels=8, max_nodes=5) == []
    g = skip_net("concat")
    assert gn.assert_valid(g) is g  # the genome itself, for chaining


def test_cycle():
    g = chain(conv(), conv())
    g.add_edge("n2", "n1")
    assert any(p.startswith("genome has a cycle: ") and "n1" in p and "n2" in p
               for p in _problems(g))


def test_sum_with_one_input():
    g = make([("i", "input", {}), ("s", "sum", {}), ("o", "output", {"hidden": 0})],
             [("i", "s", 0), ("s", "o")])
    assert "node 's' (sum) has 1 inputs; sum takes exactly 2" in _problems(g)


def test_conv_with_two_inputs():
    g = chain(conv(), conv())
    g.add_edge("n0", "n2")
    assert "node 'n2' (conv) has 2 inputs; conv takes exactly 1" in _problems(g)


def test_skip_ports_must_be_0_and_1():
    g = skip_net("concat")
    g.edges["a", "s"]["port"] = 0
    assert "node 's' (concat): input ports must be 0 and 1, got [0, 0]" in _problems(g)


def test_port_on_a_plain_edge():
    g = chain(conv())
    g.edges["n0", "n1"]["port"] = 0
    assert "edge 'n0' -> 'n1': a port is only allowed on sum/concat inputs" in _problems(g)


def test_node_off_every_path():
    g = chain(conv())
    g.add_node("dead", op="conv", channels=4, kernel=3)
    g.add_edge("n1", "dead")  # reachable from input, never reaches the output
    assert "node 'dead' (conv) is not on any input->output path" in _problems(g)


def test_unknown_op_and_params():
    g = chain(conv())
    g.nodes["n1"]["op"] = "dense"
    assert any("node 'n1': unknown op 'dense'" in p for p in _problems(g))
    g = chain(conv())
    g.nodes["n1"]["stride"] = 2
    assert "node 'n1': unknown param 'stride' for op 'conv'" in _problems(g)
    g = chain(conv())
    del g.nodes["n1"]["kernel"]
    assert "node 'n1': op 'conv' is missing param 'kernel'" in _problems(g)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"channels": "8", "kernel": 3}, "param 'channels' must be an integer"),
     ({"channels": 8, "kernel": 4}, "kernel must be odd and >= 1, got 4"),
     ({"channels": 0, "kernel": 3}, "channels must be >= 1, got 0"),
     ({"channels": True, "kernel": 3}, "param 'channels' must be an integer")],
)
def test_bad_param_values(params, message):
    g = chain(("conv", params))
    assert any(message in p for p in _problems(g))


def test_bad_pool_kind():
    assert any("pool kind must be one of" in p for p in _problems(chain(pool("min"))))


def test_spatial_size_below_one_is_reported_where_it_first_drops():
    g = chain(*[pool()] * 5)  # 28 -> 14 -> 7 -> 3 -> 1 -> 0
    problems = _problems(g)
    assert problems == ["node 'n5' (pool): spatial size 0x0 is below 1 for input 1x28x28"]
    assert _problems(g, input_shape=(3, 32, 32)) == []  # 32 -> ... -> 1


def test_channel_cap():
    g = skip_net("concat", c_main=40, c_skip=30)
    assert "node 's' (concat): 70 channels exceed the cap of 64" in _problems(g, max_channels=64)
    assert "node 'b' (sconv): 40 channels exceed the cap of 32" in _problems(g, max_channels=32)


def test_node_cap():
    assert "genome has 5 nodes; the cap is 4" in _problems(skip_net(), max_nodes=4)


def test_input_and_output_counts():
    g = chain(conv())
    g.add_node("i2", op="input")
    g.add_edge("i2", "n1")
    assert "genome has 2 input nodes (i2, n0); exactly one is required" in _problems(g)
    g = chain(conv())
    g.remove_node("n2")
    assert "genome has 0 output nodes; exactly one is required" in _problems(g)
    assert _problems(make([], [])) == ["genome has no nodes"]


def test_bad_node_id():
    g = make([("in put", "input", {}), ("o", "output", {"hidden": 0})], [("in put", "o")])
    assert "node id 'in put' may only contain letters, digits and '_'" in _problems(g)


def test_assert_valid_raises_every_problem():
    g = chain(conv(channels=300))
    g.add_node("x", op="bogus")
    with pytest.raises(gn.InvalidGenome) as info:
        gn.assert_valid(g, max_channels=256)
    assert len(info.value.problems) >= 2
    assert all(p in str(info.value) for p in info.value.problems)
    with pytest.raises(gn.InvalidGenome, match="channels exceed the cap of 256"):
        gn.assert_valid(chain(conv(channels=300)), max_channels=256)
