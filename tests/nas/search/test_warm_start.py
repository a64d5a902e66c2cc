"""``--init-samples K``: generation 0 trains K random genomes and keeps the s fittest that are
spread by spectrum distance (a warm start of Algorithm 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from search_toys import TOY_SEARCH, child_events, comparable, run_toy

from genome import spectrum_distance
from nas.search.rundir import read_events

K = 10


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("warm") / "run"
    return run, run_toy(run, init_samples=K)


def generation_zero(run):
    events, _ = read_events(run / "events.jsonl")
    gen0 = {e["id"]: e for e in events if e["type"] == "child_finished" and e["generation"] == 0}
    first = next(e for e in events if e["type"] == "generation_finished" and e["generation"] == 0)
    return gen0, first["population"], events


def test_generation_zero_trains_k_candidates_and_keeps_the_fittest_spread_ones(warm_run):
    run, _ = warm_run
    gen0, kept, events = generation_zero(run)
    s, d = TOY_SEARCH["population"], TOY_SEARCH["min_distance"]
    assert len(gen0) == K and len(kept) == s and set(kept) <= set(gen0)
    assert all(e["parent"] is None for e in gen0.values())
    spec = {i: e["spectrum"] for i, e in gen0.items()}
    fit = {i: e["metrics"]["fitness"] for i, e in gen0.items()}
    assert all(spectrum_distance(spec[a], spec[b]) >= d
               for a in kept for b in kept if a < b)
    # a candidate left out is either less fit than every kept one, or too close to a kept
    # one at least as fit
    for i in set(gen0) - set(kept):
        assert fit[i] <= min(fit[k] for k in kept) or any(
            spectrum_distance(spec[i], spec[k]) < d and fit[k] >= fit[i] for k in kept)
    # the fittest candidate always starts the population
    assert max(gen0, key=lambda i: (fit[i], -int(i[-3:]))) in kept
    # generation 1 mutates the kept members only; K + g*s*n children in all
    parents = {e["parent"] for e in events if e["type"] == "child_finished"
               and e["generation"] == 1}
    assert parents <= set(kept)
    assert len(child_events(run)) == K + TOY_SEARCH["generations"] * s * TOY_SEARCH["children"]
    assert events[0]["init_samples"] == K


def test_warm_start_is_seeded_and_resumes_exactly(warm_run, tmp_path):
    run, _ = warm_run
    again = tmp_path / "again"
    run_toy(again, init_samples=K)
    assert comparable(again) == comparable(run)
    # a run stopped inside generation 0 (5 of its K candidates logged) resumes to the same run
    cut = tmp_path / "cut"
    run_toy(cut, init_samples=K)
    log = cut / "events.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    fifth = [i for i, x in enumerate(lines) if '"child_finished"' in x][4]
    log.write_text("".join(lines[:fifth + 1]))
    for name in ("final.json", "population.json"):
        (cut / name).unlink(missing_ok=True)
    run_toy(cut, resume=True, init_samples=K)
    assert comparable(cut) == comparable(run)


def test_init_samples_equal_to_the_population_is_algorithm_1(warm_run, tmp_path):
    run_toy(tmp_path / "plain")
    run_toy(tmp_path / "same", init_samples=TOY_SEARCH["population"])
    plain, same = comparable(tmp_path / "plain"), comparable(tmp_path / "same")
    assert plain["children"] == same["children"] and plain["final"] == same["final"]
    # the warm start's K candidates begin with Algorithm 1's population, then new architectures
    first = {e["id"]: e["hash"] for e in child_events(tmp_path / "plain") if e["generation"] == 0}
    warm, _, _ = generation_zero(warm_run[0])
    assert all(warm[i]["hash"] == h for i, h in first.items())
    assert len({e["hash"] for e in warm.values()}) == K


def test_random_search_with_init_samples_keeps_the_fittest_of_its_k_samples(tmp_path):
    run_toy(tmp_path / "r", init_samples=K, strategy="random")
    gen0, kept, events = generation_zero(tmp_path / "r")
    s = TOY_SEARCH["population"]
    fit = {i: e["metrics"]["fitness"] for i, e in gen0.items()}
    assert len(gen0) == K and len(kept) == s
    # no distance rule: the s fittest of the K (earlier first on ties), whatever their spectra
    order = sorted(gen0, key=lambda i: (-fit[i], int(i[-3:])))
    assert sorted(kept) == sorted(order[:s])
    # then fresh samples only, K + g*s*n in all: equal children with the GA's warm start
    assert all(e["parent"] is None for e in child_events(tmp_path / "r"))
    assert len(child_events(tmp_path / "r")) == K + TOY_SEARCH["generations"] * s * TOY_SEARCH[
        "children"]
    assert events[0]["init_samples"] == K and events[0]["strategy"] == "random"


def test_bad_init_samples_is_one_line_exit_2(tmp_path):
    flags = ["--init-samples", "2"]
    proc = subprocess.run([sys.executable, "-m", "nas.evolve", "--preset", "smoke",
                           "--run-dir", str(tmp_path), "--name", "x", "--population", "4", *flags],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--init-samples" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x").exists()
