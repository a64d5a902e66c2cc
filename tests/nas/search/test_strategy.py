"""``--strategy random``, refinement with early stopping, held-out sources, the cpu preset."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import pytest
import torch
from search_toys import (
    RACING,
    TOY_SEARCH,
    child_events,
    comparable,
    racing_fitness,
    run_toy,
    spectrum_fitness,
)

from nas.search.rundir import read_events


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("random") / "run"
    return run, run_toy(run, strategy="random")


def test_random_search_evaluates_as_many_children_of_the_same_space(random_run, tmp_path):
    from genome import from_json
    from genome.validate import check_genome
    from nas.search.config import SearchSettings
    from nas.search.ga import search_space

    run, final = random_run
    ga = tmp_path / "ga"
    run_toy(ga)
    rand_children, ga_children = child_events(run), child_events(ga)
    assert len(rand_children) == len(ga_children) == 4 + 4 * 4 * 2
    assert all(e["parent"] is None for e in rand_children)  # samples, not mutations
    assert sorted((e["generation"], e["epochs"]) for e in rand_children) == sorted(
        (e["generation"], e["epochs"]) for e in ga_children)  # same budget per generation
    space = search_space(SearchSettings(**TOY_SEARCH), (1, 28, 28))
    for e in rand_children:
        g = from_json((run / "children" / e["id"] / "genome.json").read_text())
        assert check_genome(g, input_shape=(1, 28, 28), max_channels=space.max_channels) == []
        assert g.number_of_nodes() <= space.max_nodes
        # the same evaluation function scored it
        assert e["metrics"]["fitness"] == spectrum_fitness(json.dumps(json.loads(
            (run / "children" / e["id"] / "genome.json").read_text())), epochs=1, seed=0)["fitness"]
    events, _ = read_events(run / "events.jsonl")
    assert events[0]["strategy"] == "random" and final["strategy"] == "random"
    assert json.loads((run / "config.json").read_text())["config"]["search"]["strategy"] == "random"
    # the finalists are the best distinct architectures seen
    best = sorted({e["hash"]: e["metrics"]["fitness"] for e in rand_children}.values(),
                  reverse=True)[:4]
    assert sorted((m["metrics"]["fitness"] for m in final["population"]), reverse=True) == best


def test_random_search_is_seeded(random_run, tmp_path):
    run, _ = random_run
    run_toy(tmp_path / "again", strategy="random")
    assert comparable(tmp_path / "again") == comparable(run)
    run_toy(tmp_path / "other", strategy="random", seed=8)
    assert ({e["hash"] for e in child_events(tmp_path / "other")}
            != {e["hash"] for e in child_events(run)})


def test_refinement_passes_patience_only_when_set(tmp_path):
    from search_toys import toy_config

    from nas.search.driver import run_search
    from nas.search.ga import genome_ops
    from nas.search.rundir import create_run

    for patience in (0, 3):
        run = tmp_path / f"p{patience}"
        cfg = toy_config(run, generations=1, refine_patience=patience)
        events = create_run(run, cfg.to_dict())
        evaluate = functools.partial(racing_fitness)
        final = run_search(cfg, ops=genome_ops(cfg.search, (1, 28, 28)), evaluate=evaluate,
                           events=events, log=lambda m: None)
        events.close()
        assert {m["test"]["patience"] for m in final["population"]} == {patience}
        assert {e["metrics"]["patience"]
                for e in child_events(run)} == {0}  # search children: never


def weights_writing_fitness(genome_json: str, *, out_dir: str | None = None,
                            split: str | None = None, fallback_weights: str | None = None,
                            **kwargs) -> dict:
    """:func:`racing_fitness` whose search children leave a weights file, and which reports
    the ``fallback_weights`` a refinement was given."""
    out = racing_fitness(genome_json, out_dir=out_dir, split=split, **kwargs)
    if split is None and out_dir:
        (Path(out_dir) / "weights.pt").write_bytes(b"weights")
    return {**out, "fallback": fallback_weights}


def test_refinement_offers_each_finalist_the_weights_the_search_trained(tmp_path):
    from search_toys import toy_config

    from nas.search.driver import run_search
    from nas.search.ga import genome_ops
    from nas.search.rundir import create_run

    run = tmp_path / "run"
    cfg = toy_config(run, generations=1)
    events = create_run(run, cfg.to_dict())
    final = run_search(cfg, ops=genome_ops(cfg.search, (1, 28, 28)),
                       evaluate=weights_writing_fitness, events=events, log=lambda m: None)
    events.close()
    logged = {e["id"]: e for e in child_events(run)}
    for member in final["population"]:
        source = logged[member["id"]].get("reused_from") or member["id"]
        assert member["test"]["fallback"] == str(run / "children" / source / "weights.pt")
    assert {e["metrics"]["fallback"] for e in logged.values()} == {None}  # search children


def drawing_fitness(genome_json: str, *, draws: int = 1, **kwargs) -> dict:
    """:func:`weights_writing_fitness` that reports the ``draws`` it was asked for."""
    return {**weights_writing_fitness(genome_json, **kwargs), "draws_asked": draws}


def test_refine_draws_reach_every_finalist_and_no_search_child(tmp_path):
    from search_toys import toy_config

    from nas.search.driver import run_search
    from nas.search.ga import genome_ops
    from nas.search.rundir import create_run

    for draws in (1, 3):
        run = tmp_path / f"d{draws}"
        cfg = toy_config(run, generations=1, refine_draws=draws)
        events = create_run(run, cfg.to_dict())
        final = run_search(cfg, ops=genome_ops(cfg.search, (1, 28, 28)),
                           evaluate=drawing_fitness, events=events, log=lambda m: None)
        events.close()
        assert {m["test"]["draws_asked"] for m in final["population"]} == {draws}
        assert {e["metrics"]["draws_asked"] for e in child_events(run)} == {1}


def test_refine_draws_need_a_validation_split():
    from nas.cli import UserError
    from nas.evolve import build_parser, flags_from_args
    from nas.search.config import resolve

    args = build_parser().parse_args(["--refine-draws", "3"])
    assert resolve(flags_from_args(args), preset="cpu", config_file=None,
                   run_dir="").search.refine_draws == 3
    with pytest.raises(UserError, match="refine_draws.*val_size"):
        resolve({"refine_draws": 3, "val_size": 0}, preset="cpu", config_file=None, run_dir="")
    with pytest.raises(UserError, match="refine_draws"):
        resolve({"refine_draws": 0}, preset="cpu", config_file=None, run_dir="")


def test_cpu_preset_keeps_its_invariants_and_yields_to_flags():
    from nas.search.config import CPU_MNIST, resolve

    def cpu(**flags):
        return resolve(flags, preset="cpu", config_file=None, run_dir="")

    cfg = cpu()
    f, s = cfg.fitness, cfg.search
    assert f.reference not in f.held_out and f.held_out  # held-out sources the search never sees
    assert f.reference_patience > 0 and s.refine_patience > 0  # trained to their plateaus
    assert f.test_size > 0 and f.val_size > 0 and f.fitness_split == "val"  # test only reports
    flipped = cpu(early_reject=not s.early_reject, train_size=f.train_size // 2)
    assert flipped.search.early_reject != s.early_reject  # a flag wins over the preset
    assert flipped.fitness.train_size == f.train_size // 2
    ga, random = cpu(dataset="mnist"), cpu(dataset="mnist", strategy="random")
    assert random.search.strategy == "random" and ga.search.strategy == s.strategy
    # the MNIST tuning reaches random search as it reaches the GA
    assert random.search.init_samples == ga.search.init_samples == CPU_MNIST["init_samples"]
    assert cpu().search.init_samples != CPU_MNIST["init_samples"]  # and only MNIST


def test_options_are_flags_and_bad_values_are_user_errors():
    from nas.cli import UserError
    from nas.evolve import build_parser, flags_from_args
    from nas.search.config import resolve

    off = build_parser().parse_args(["--no-early-reject", "--no-inherit"])
    flags = flags_from_args(off)
    assert flags["early_reject"] is False and flags["inherit"] is False
    args = build_parser().parse_args(["--early-reject", "--inherit", "--strategy", "random",
                                      "--held-out", "he-baseline,resnet18", "--refine-patience",
                                      "4"])
    cfg = resolve(flags_from_args(args), preset="smoke", config_file=None, run_dir="")
    assert cfg.search.early_reject and cfg.search.inherit and cfg.search.strategy == "random"
    assert cfg.fitness.held_out == ("he-baseline", "resnet18") and cfg.search.refine_patience == 4
    with pytest.raises(UserError, match="strategy"):
        resolve({"strategy": "bayes"}, preset="smoke", config_file=None, run_dir="")


def test_held_out_sources_score_the_finalists_on_the_test_split_only(workspace, small_settings,
                                                                     tmp_path):
    from genome import to_json
    from nas.evaluation.fitness import prepare
    from nas.evolve import final_table
    from nas.search.worker import evaluate_genome
    from search_spaces import named_genome

    settings = dataclasses.replace(small_settings, held_out=("he-baseline",))
    ws = prepare(settings, progress=False, log=lambda m: None)
    assert set(ws.held_out_adv) == {"he-baseline"}
    assert ws.held_out_adv["he-baseline"].shape == ws.splits.x_test.shape
    assert not torch.equal(ws.held_out_adv["he-baseline"], ws.adversarial["test"])
    msgs: list[str] = []
    prepare(settings, progress=False, log=msgs.append)
    # source and its PGD set come from the cache the second time: only the timed stage lines
    assert msgs and all(m.startswith("stage ") for m in msgs), msgs
    genome = to_json(named_genome("he-ref"))
    test = evaluate_genome(genome, settings=settings, epochs=1, seed=0, split="test")
    search = evaluate_genome(genome, settings=settings, epochs=1, seed=0)
    assert set(test.held_out) == {"he-baseline"} and 0.0 <= test.held_out["he-baseline"] <= 1.0
    assert search.held_out is None  # never used by the search
    final = {"population": [{"id": "g001-c000", "spectrum": [1, 0, 0, 0, 0],
                             "metrics": search.to_dict(), "test": test.to_dict()}],
             "fitness_split": "val"}
    table = final_table(final)
    assert "adv he-baseline" in table and f"{test.held_out['he-baseline']:.4f}" in table


def test_raced_random_search_races_each_sample_against_the_worst_member(tmp_path):
    run = tmp_path / "raced"
    final = run_toy(run, strategy="random", racing=True, **RACING)
    events, _ = read_events(run / "events.jsonl")
    worst = {e["generation"]: e["min"] for e in events if e["type"] == "generation_finished"}
    children = child_events(run)
    assert len(children) == 4 + 4 * 4 * 2  # as many samples as without racing
    raced = [e for e in children if e["generation"] > 0]
    # the bar of generation t is the worst fitness of the population generation t - 1 left
    assert all(e["threshold"] == pytest.approx(worst[e["generation"] - 1]) for e in raced)
    rejected = {e["id"] for e in raced if e["metrics"]["status"] == "rejected"}
    assert rejected and len(rejected) < len(raced)  # the toy has both kinds
    members = {m["id"] for m in final["population"]}
    entered = {i for e in events if e["type"] == "generation_finished" for i in e["population"]}
    assert not rejected & entered and not rejected & members
    # the finalists are the best distinct fully trained samples
    full = {e["hash"]: e["metrics"]["fitness"] for e in children
            if e["metrics"]["status"] == "ok"}
    assert sorted((m["metrics"]["fitness"] for m in final["population"]), reverse=True) == sorted(
        full.values(), reverse=True)[:4]
    assert final["search_cost"]["rejected"] == len(rejected) > 0
