"""Selection that knows its fitness is noisy (nas/search/ga.py): members re-evaluated from
fresh seeds when a challenger beats them narrowly (their fitness the mean of their draws),
common random numbers across a generation, and regularized evolution as a baseline."""

from __future__ import annotations

import collections
import functools
import json

import numpy as np
import pytest
import torch
from search_toys import Crash, child_events, comparable, noisy_fitness, run_toy
from torch import nn

from nas.errors import UserError
from nas.search.config import SearchSettings
from nas.search.ga import close_calls, redraw_seed, train_seed
from nas.search.rundir import read_events

NOISY = dict(evaluate=noisy_fitness, reevaluate_margin=0.2, max_draws=3, generations=3)


def events_of(run, kind):
    events, _ = read_events(run / "events.jsonl")
    return [e for e in events if e["type"] == kind]


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("noisy") / "run"
    run_toy(run, **NOISY)
    return run


def test_a_reevaluated_members_fitness_is_the_mean_of_its_draws(noisy_run):
    redraws = events_of(noisy_run, "reevaluated")
    assert redraws, "the margin is wide enough that some member is re-evaluated"
    first = {e["id"]: e for e in child_events(noisy_run)}
    draws = collections.defaultdict(lambda: {})
    for e in redraws:
        draws[e["id"]][e["draw"]] = e
    for cid, by_draw in draws.items():
        assert sorted(by_draw) == list(range(1, len(by_draw) + 1))  # draws 1, 2, ... in turn
        assert len(by_draw) + 1 <= 3  # max_draws counts the first training
        seeds = [first[cid]["seed"]] + [by_draw[k]["seed"] for k in sorted(by_draw)]
        assert len(set(seeds)) == len(seeds)  # every draw from its own seed
        gen, index = first[cid]["generation"], int(cid.split("-c")[1])
        assert by_draw[1]["seed"] == redraw_seed(7, gen, index, 1)
    members = [m for m in json.loads((noisy_run / "final.json").read_text())["population"]]
    population = json.loads((noisy_run / "population.json").read_text())["members"]
    drawn = [m for m in population if "draws" in m]
    for m in drawn:
        logged = [first[m["id"]]["metrics"]["fitness"]] + [
            draws[m["id"]][k]["metrics"]["fitness"] for k in sorted(draws[m["id"]])]
        # the draws made before the last generation's end are the member's (a later draw
        # would be a later generation's)
        assert m["draws"] == logged[: len(m["draws"])]
        assert m["fitness"] == pytest.approx(float(np.mean(m["draws"])))
    assert len(members) == 4
    cost = json.loads((noisy_run / "final.json").read_text())["search_cost"]
    assert cost["reevaluations"] == len(redraws)
    assert cost["reevaluation_epochs"] == sum(e["epochs"] for e in redraws)


def test_replacements_compare_the_child_with_the_members_mean(noisy_run):
    redraws = {(e["id"], e["generation"]): e for e in events_of(noisy_run, "reevaluated")}
    means: dict[str, list[float]] = {e["id"]: [e["metrics"]["fitness"]]
                                     for e in child_events(noisy_run)}
    for e in sorted(events_of(noisy_run, "reevaluated"), key=lambda e: e["draw"]):
        means[e["id"]].append(e["metrics"]["fitness"])
    for rep in events_of(noisy_run, "replacement"):
        assert rep["fitness"] > rep["replaced_fitness"]
        old = means[rep["replaced"]]
        # the replaced fitness is the member's mean over the draws made so far
        assert any(rep["replaced_fitness"] == pytest.approx(float(np.mean(old[:k])))
                   for k in range(1, len(old) + 1))
    assert redraws


def test_without_a_margin_no_member_is_reevaluated(tmp_path):
    run_toy(tmp_path / "plain", evaluate=noisy_fitness, generations=2)
    assert not events_of(tmp_path / "plain", "reevaluated")
    final = json.loads((tmp_path / "plain" / "final.json").read_text())
    assert "search_cost" not in final  # Algorithm 1 as written


def test_resume_in_the_middle_of_a_reevaluation_is_exact(noisy_run, tmp_path):
    from search_toys import _redraws

    run = tmp_path / "crashed"
    _redraws.clear()
    with pytest.raises(Crash):
        run_toy(run, **{**NOISY, "evaluate": functools.partial(noisy_fitness, crash_after=1)})
    _redraws.clear()
    made = events_of(run, "reevaluated")
    assert len(made) == 1 and not (run / "final.json").exists()
    run_toy(run, resume=True, **NOISY)
    again = events_of(run, "reevaluated")
    assert len({(e["id"], e["draw"]) for e in again}) == len(again)  # none made twice
    assert again[0] == made[0]  # the draw made before the crash is replayed, not retrained
    assert comparable(run) == comparable(noisy_run)


class Member:
    def __init__(self, fitness, draws=1, spectrum=(0, 0, 0, 0, 0)):
        self.fitness = type("F", (), {"values": (fitness,)})()
        self.draws = [fitness] * draws
        self.spectrum, self.metrics = spectrum, {"status": "ok"}


def test_close_calls_are_the_narrowly_beaten_members_each_once():
    search = SearchSettings(reevaluate_margin=0.05, max_draws=2)
    near, far, full = (Member(0.80, spectrum=(0, 0, 0, 0, 0)),
                       Member(0.50, spectrum=(9, 9, 9, 9, 9)),
                       Member(0.70, draws=2, spectrum=(0, 9, 0, 9, 0)))
    population = [near, far, full]
    children = [Member(0.83), Member(0.84),  # both beat `near` narrowly: it is drawn once
                Member(0.60, spectrum=(9, 9, 9, 9, 8)),  # beats `far` by 0.10: no close call
                Member(0.72, spectrum=(0, 9, 0, 9, 1)),  # `full` has its max draws
                Member(0.79)]  # loses to `near`: nothing to check
    rejected = Member(0.81)
    rejected.metrics = {"status": "rejected"}
    assert close_calls(population, [*children, rejected], search) == [near]
    assert close_calls(population, [Member(0.851)], search) == []  # beyond the margin


def test_common_seeds_train_a_generation_from_one_seed(tmp_path):
    run_toy(tmp_path / "crn", evaluate=noisy_fitness, generations=2, common_seeds=True)
    seeds = collections.defaultdict(set)
    for e in child_events(tmp_path / "crn"):
        seeds[e["generation"]].add(e["seed"])
    assert all(len(s) == 1 for s in seeds.values())
    assert len({next(iter(s)) for s in seeds.values()}) == len(seeds)  # one per generation
    assert seeds[1] == {train_seed(7, 1, 0)}
    run_toy(tmp_path / "own", evaluate=noisy_fitness, generations=2)
    own = [e["seed"] for e in child_events(tmp_path / "own") if e["generation"] == 1]
    assert len(set(own)) == len(own)


def test_one_seed_gives_two_architectures_the_same_data_order_and_draws():
    """What common random numbers buy in real training: with one seed, two different
    networks see the same batches in the same order, and a defense's random draws (an
    attack's random start) are the same numbers."""
    from defenses.plain import PlainCE
    from nas.evaluation.training import TrainConfig, TrainData, train

    class Recording(PlainCE):
        def __init__(self):
            self.seen = []

        def loss(self, model, batch, ctx):
            draw = torch.rand(1, generator=ctx.generator)
            self.seen.append((batch.index.tolist(), float(draw)))
            return super().loss(model, batch, ctx)

    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    data = TrainData(x=x, y=torch.randint(0, 10, (64,)), num_classes=10)
    config = TrainConfig(epochs=2, batch_size=16, device="cpu")

    def net(width):
        return lambda: nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(width * 6 * 6, 10))

    seen = []
    for factory, seed in ((net(4), 3), (net(16), 3), (net(4), 4)):
        defense = Recording()
        train(factory, defense, data, config=config, seed=seed, log=lambda _m: None)
        seen.append(defense.seen)
    assert seen[0] == seen[1]
    assert seen[0] != seen[2]


def test_aging_replaces_the_oldest_member_and_keeps_the_best_in_history(tmp_path):
    run = tmp_path / "aging"
    final = run_toy(run, evaluate=noisy_fitness, strategy="aging", generations=3)
    children = {e["id"]: e for e in child_events(run)}
    population = events_of(run, "generation_finished")[0]["population"]
    for t in (1, 2, 3):
        reps = [r for r in events_of(run, "replacement") if r["generation"] == t]
        assert len(reps) == 8  # every child joins, whatever its fitness
        assert any(r["fitness"] < r["replaced_fitness"] for r in events_of(run, "replacement"))
        for rep in reps:
            oldest = min(population, key=lambda c: (children[c]["generation"], c))
            assert rep["replaced"] == oldest and rep["aged_out"]
            population[population.index(oldest)] = rep["id"]
        finished = next(e for e in events_of(run, "generation_finished") if e["generation"] == t)
        assert finished["population"] == population
    finalists = final["population"]
    assert len({m["hash"] for m in finalists}) == len(finalists) == 4
    assert all(m["id"] in children for m in finalists)
    fit = {c: e["metrics"]["fitness"] for c, e in children.items()}
    assert max(m["metrics"]["fitness"] for m in finalists) == max(fit.values())
    assert min(m["metrics"]["fitness"] for m in finalists) >= sorted(
        fit[c] for c in population)[0]


def flat_fitness(genome_json, *, epochs, seed, out_dir=None, split=None, **_):
    """Every architecture scores the same: no child is strictly fitter, nothing replaces."""
    return {"fitness": 0.5, "clean_acc": 0.5, "adv_acc": 0.5, "status": "ok", "reason": "",
            "epochs": epochs, "seconds": 0.0}


def test_a_stagnant_population_gets_immigrants_and_resumes_exactly(tmp_path):
    run = tmp_path / "stuck"
    run_toy(run, evaluate=flat_fitness, generations=5, stagnation=2)
    immigrants = events_of(run, "immigrants")
    # generations 1 and 2 replace nothing, so 3 is immigrants; 4 and 5 are quiet again
    assert [e["generation"] for e in immigrants] == [3]
    assert immigrants[0]["quiet_generations"] == 2
    by_generation = collections.defaultdict(list)
    for e in child_events(run):
        by_generation[e["generation"]].append(e)
    assert all(e["parent"] is None for e in by_generation[3])  # fresh samples
    assert all(e["parent"] is not None for g in (1, 2, 4, 5) for e in by_generation[g])
    assert len(by_generation[3]) == len(by_generation[2])  # the same number of children
    again = tmp_path / "again"
    run_toy(again, evaluate=flat_fitness, generations=5, stagnation=2)
    assert comparable(again) == comparable(run)
    assert not events_of(run, "replacement")  # an immigrant too must be strictly fitter


def test_options_that_do_not_fit_the_strategy_are_refused():
    with pytest.raises(UserError, match="no-early-reject"):
        SearchSettings(strategy="aging", early_reject=True).check()
    with pytest.raises(UserError, match="reevaluate-margin"):
        SearchSettings(strategy="random", reevaluate_margin=0.05).check()
    with pytest.raises(UserError, match="stagnation"):
        SearchSettings(strategy="aging", stagnation=2).check()
    SearchSettings(strategy="aging").check()
    SearchSettings(reevaluate_margin=0.05, common_seeds=True).check()
