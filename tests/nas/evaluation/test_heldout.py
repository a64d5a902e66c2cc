"""Held-out evaluation: every source x attack, cached sets, the worst case, white-box PGD."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nas.evaluation.heldout import (
    evaluate_held_out,
    held_out_pairs,
    held_out_sets,
    worst_case,
)


@pytest.fixture(scope="module")
def strong_settings(small_settings):
    return dataclasses.replace(small_settings, held_out=("he-baseline", "vit_mini"),
                               held_out_attacks=("pgd-linf", "mi-fgsm", "di-mi-fgsm"))


def test_pairs_cross_sources_and_attacks_with_the_runs_budget(strong_settings, small_settings):
    pairs = held_out_pairs(strong_settings)
    assert [p.label for p in pairs] == [
        "he-baseline pgd-linf", "he-baseline mi-fgsm", "he-baseline di-mi-fgsm",
        "vit_mini pgd-linf", "vit_mini mi-fgsm", "vit_mini di-mi-fgsm"]
    assert {p.attack.steps for p in pairs} == {2}  # the run's --steps
    # without held_out_attacks: the search's attack, labelled by the source (as before)
    plain = held_out_pairs(dataclasses.replace(small_settings, held_out=("he-baseline",)))
    assert [(p.label, p.attack.name) for p in plain] == [("he-baseline", "pgd-linf")]


def test_worst_case_is_the_minimum():
    accs = {"a pgd-linf": 0.61, "b mi-fgsm": 0.42, "c di-mi-fgsm": 0.58}
    assert worst_case(accs) == ("b mi-fgsm", 0.42)
    assert worst_case({}) is None


def test_a_trained_network_gets_every_pair_its_worst_case_and_white_box(
        workspace, strong_settings, small_net_factory, nas_cache_dir):
    from nas.evaluation.fitness import Budget, evaluate_module
    from nas.evaluation.heldout import white_box_settings

    splits = workspace.splits
    pairs = held_out_pairs(strong_settings)
    config = strong_settings.reference_config()
    sets, clean = held_out_sets(pairs, splits, nas_cache_dir, config=config, seed=0,
                                log=lambda _m: None)
    for p in pairs:
        delta = (sets[p.label] - splits.x_test.float() / 255).abs().max()
        assert delta <= p.attack.eps + 1e-6 and 0.0 <= clean[p.label] <= 1.0
    assert not torch.equal(sets["vit_mini mi-fgsm"], sets["vit_mini di-mi-fgsm"])
    msgs: list[str] = []
    again, _ = held_out_sets(pairs, splits, nas_cache_dir, config=config, seed=0,
                             log=msgs.append)
    assert not any("generating" in m or "training" in m for m in msgs), msgs  # all cached
    assert all(torch.equal(again[k], sets[k]) for k in sets)

    result, model = evaluate_module(
        small_net_factory, dataclasses.replace(workspace, settings=strong_settings,
                                               held_out_adv=sets),
        Budget(1, 0), split="test", log=lambda _m: None)
    assert set(result.held_out) == {p.label for p in pairs}
    assert result.held_out_worst == min(result.held_out.values())
    direct = evaluate_held_out(model, splits, pairs, nas_cache_dir, config=config, seed=0,
                               white_box=white_box_settings(strong_settings),
                               log=lambda _m: None)
    assert direct.accuracies == result.held_out
    assert direct.white_box == result.white_box_acc is not None
    assert 0.0 <= result.white_box_acc <= 1.0
    assert "white_box_acc" in result.to_dict() and "held_out_worst" in result.to_dict()


def test_the_final_table_shows_the_worst_case_and_white_box_columns():
    from nas.evolve import final_table

    test = {"val_fitness": 0.5, "clean_acc": 0.9, "adv_acc": 0.6, "fitness": 0.6,
            "held_out": {"resnet18 mi-fgsm": 0.55, "vit_mini di-mi-fgsm": 0.7},
            "held_out_worst": 0.55, "white_box_acc": 0.02}
    table = final_table({"population": [{"id": "g001-c000", "spectrum": [1, 0, 0, 0, 0],
                                         "metrics": {"fitness": 0.5}, "test": test}],
                         "fitness_split": "val"})
    head, row = table.splitlines()[-3], table.splitlines()[-1]
    assert head.rstrip().endswith("worst case     white-box PGD")
    assert row.split()[-4:] == ["0.5500", "0.7000", "0.5500", "0.0200"]
