"""Weight inheritance (``--inherit``): unchanged nodes start from the parent's trained tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import genome as gn
from genome.ops import module_name, topological_order
from nas.evaluation.inherit import inherited_state, unchanged_modules
from search_spaces import named_genome

INFO = type("Info", (), {"input_shape": (1, 28, 28), "num_classes": 10})


def trained_like(g) -> dict[str, torch.Tensor]:
    """A 'trained' state of ``g``: its fresh weights shifted by a constant, so nothing equals
    a fresh initialisation by accident."""
    torch.manual_seed(123)
    net = gn.compile_genome(g, num_classes=10, input_shape=(1, 28, 28))
    return {k: v + 0.5 if v.is_floating_point() else v for k, v in net.state_dict().items()}


def edited_child(parent):
    """The parent with its first conv's channel count changed (edit_block), by hand."""
    child = parent.copy()
    conv = next(n for n in topological_order(child) if child.nodes[n]["op"] == "conv")
    child.nodes[conv]["channels"] = child.nodes[conv]["channels"] * 2
    return child, conv


def test_inherited_tensors_equal_the_parents_and_changed_nodes_are_fresh():
    parent = named_genome("he-baseline")
    child, edited = edited_child(parent)
    state = trained_like(parent)
    start = inherited_state(parent, child, state, INFO)
    names = unchanged_modules(parent, child, (1, 28, 28), 10)
    edited_name = module_name(child, edited)
    assert names and edited_name not in names
    # the consumer of the edited conv sees a new input shape: it is changed too
    succ = next(iter(child.successors(edited)))
    if child.nodes[succ]["op"] in ("conv", "sconv"):
        assert module_name(child, succ) not in names
    assert start and all(torch.equal(start[k], state[k]) for k in start)
    torch.manual_seed(7)
    fresh = gn.compile_genome(child, num_classes=10, input_shape=(1, 28, 28))
    torch.manual_seed(7)
    net = gn.compile_genome(child, num_classes=10, input_shape=(1, 28, 28))
    net.load_state_dict(start, strict=False)
    for key, value in net.state_dict().items():
        module = key.split(".")[0]
        if module in names:
            assert torch.equal(value, state[key]), key
        else:
            assert torch.equal(value, fresh.state_dict()[key]), key
    assert any(k.startswith(f"{edited_name}.") for k in fresh.state_dict())


def test_an_unmutated_child_inherits_every_tensor_but_the_normalisation():
    parent = named_genome("he-ref")
    state = trained_like(parent)
    start = inherited_state(parent, parent.copy(), state, INFO)
    assert set(start) == {k for k in state if not k.startswith("normalize.")}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_mutations_keep_ids_so_some_nodes_are_inherited(seed):
    from nas.search.config import SearchSettings
    from nas.search.ga import search_space

    space = search_space(SearchSettings(max_channels=32, max_nodes=16), (1, 28, 28))
    parent = named_genome("he-baseline")
    child, _ = gn.mutate(parent, np.random.default_rng(seed), limits=space.limits(), count=1)
    names = unchanged_modules(parent, child, (1, 28, 28), 10)
    changed = [n for n in child.nodes if n not in parent.nodes
               or dict(child.nodes[n]) != dict(parent.nodes[n])]
    assert all(module_name(child, n) not in names
               for n in changed if child.nodes[n]["op"] != "input")
    assert names  # one operator leaves most of the network as it was


def test_inherit_in_evaluate_genome_records_the_count_and_trains(workspace, small_settings,
                                                                 tmp_path):
    from nas.search.worker import evaluate_genome

    parent = named_genome("he-baseline")
    p_out = tmp_path / "parent"
    r = evaluate_genome(gn.to_json(parent), settings=small_settings, epochs=1, seed=0,
                        out_dir=str(p_out))
    assert r.status == "ok"
    child, _ = edited_child(parent)
    c = evaluate_genome(gn.to_json(child), settings=small_settings, epochs=1, seed=1,
                        inherit_genome=gn.to_json(parent),
                        inherit_weights=str(p_out / "weights.pt"))
    assert c.status == "ok", c.reason
    weights = torch.load(p_out / "weights.pt", weights_only=True)
    expected = inherited_state(parent, child, weights, workspace.splits.info)
    assert c.inherited == len(expected) > 0
