"""Selection never on the test split (issue 11.3): finalists, ``:best``, the final table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.evolve import best_line, final_table
from nas.reporting.runview import finalist_genome, load_run

# Three finalists whose validation and test orders disagree: by validation a > b > c,
# by test c > b > a.
VAL = {"a": 0.70, "b": 0.60, "c": 0.50}
TEST = {"a": 0.40, "b": 0.55, "c": 0.80}


def _metrics(fit: float, **extra) -> dict:
    return {"fitness": fit, "clean_acc": fit + 0.1, "adv_acc": fit, **extra}


def _final(split: str) -> dict:
    """final.json of a finished run: search metrics on the fitness split, refined on test."""
    pop = []
    for i, cid in enumerate(("c", "b", "a")):  # population order is not the ranking
        search = VAL[cid] if split == "val" else TEST[cid] - 0.05
        refined = _metrics(TEST[cid],
                           **({"val_fitness": VAL[cid] + 0.01} if split == "val" else {}))
        pop.append({"id": cid, "parent": None, "generation": 0, "hash": cid,
                    "spectrum": [i, 0, 0, 0, 0], "metrics": _metrics(search), "test": refined})
    return {"population": pop, "hall_of_fame": [], "logbook": [], "refine_epochs": 1,
            "fitness_split": split}


def _run(tmp_path: Path, split: str) -> Path:
    run = tmp_path / split
    final = _final(split)
    events = [{"type": "child_finished", "id": m["id"], "generation": 0, "hash": m["id"],
               "spectrum": m["spectrum"], "metrics": m["metrics"]} for m in final["population"]]
    events.append({"type": "generation_finished", "generation": 0,
                   "population": [m["id"] for m in final["population"]]})
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"config": {"search": {}, "fitness": {"fitness_split": split}}}))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "final.json").write_text(json.dumps(final))
    for m in final["population"]:
        (run / "children" / m["id"]).mkdir(parents=True)
        (run / "children" / m["id"] / "genome.json").write_text("{}")
    return run


@pytest.mark.parametrize(("split", "order"), [("val", ["a", "b", "c"]), ("test", ["c", "b", "a"])])
def test_finalists_and_selectors_are_ranked_by_the_fitness_split(tmp_path, split, order):
    run = _run(tmp_path, split)
    view = load_run(run)
    assert [f["id"] for f in view.finalists] == order
    assert finalist_genome(f"{run}:best") == run / "children" / order[0] / "genome.json"
    assert finalist_genome(f"{run}:3") == run / "children" / order[2] / "genome.json"
    assert view.finalists[0]["metrics"]["fitness"] == TEST[order[0]]  # test is still reported


def test_final_table_and_best_line_rank_by_validation_and_say_so():
    final = _final("val")
    table = final_table(final).splitlines()
    assert "validation" in table[0] and "reported only" in table[0]
    ids = [line.split()[0] for line in table[3:]]
    assert ids == ["a", "b", "c"]
    best = best_line(final)
    assert best.startswith("best evolved network a ") and "validation fitness 0.7100" in best
    assert "test fitness 0.4000" in best  # reported, not what chose it


def test_paper_protocol_ranks_by_test_and_says_so_in_the_caption():
    final = _final("test")
    table = final_table(final).splitlines()
    assert "--fitness-split test" in table[0] and "paper" in table[0]
    assert [line.split()[0] for line in table[3:]] == ["c", "b", "a"]
    assert best_line(final).startswith("best evolved network c ")


def test_refinement_also_measures_the_validation_fitness_it_is_ranked_by(workspace, small_settings,
                                                                         small_net_factory):
    from nas.evaluation.fitness import Budget, evaluate_module, score

    result, model = evaluate_module(small_net_factory, workspace, Budget(1, 0), split="test",
                                    log=lambda _m: None)
    clean, adv, _ = score(model, workspace, "val")
    assert result.val_fitness == min(clean, adv)
    assert (result.val_clean_acc, result.val_adv_acc) == (clean, adv)
    val_result, _ = evaluate_module(small_net_factory, workspace, Budget(1, 0), split="val",
                                    log=lambda _m: None)
    assert val_result.val_fitness is None  # scored on validation already


def test_with_replicates_finalists_are_ranked_by_their_mean_validation_fitness():
    """A lucky kept replicate does not win: ``a`` kept 0.90 but averages 0.55; ``b`` kept 0.80
    and averages 0.75. A failed replicate counts 0."""
    from nas.reporting.runview import ranked

    def refined(vals):
        reps = [{"seed": i, "status": "ok" if v is not None else "diverged",
                 **({"val_fitness": v} if v is not None else {})} for i, v in enumerate(vals)]
        return _metrics(0.5, val_fitness=max(v for v in vals if v is not None), replicates=reps)

    final = {"fitness_split": "val", "population": [
        {"id": "a", "metrics": _metrics(0.6), "test": refined([0.90, 0.20, 0.55])},
        {"id": "b", "metrics": _metrics(0.6), "test": refined([0.80, 0.70, 0.75])},
        {"id": "c", "metrics": _metrics(0.6), "test": refined([0.95, None, 0.95])}]}
    assert [m["id"] for m in ranked(final)] == ["b", "c", "a"]  # 0.75 > 0.633 > 0.55


def test_the_final_table_states_each_finalists_replicates_as_mean_and_interval():
    """Two replicates of test fitness 0.5 and 0.7: mean 0.6, half-width t(0.975, 1) x s / sqrt 2
    = 12.7062 x 0.14142 / 1.41421 = 1.2706 (printed t table)."""
    reps = [{"seed": 0, "val_fitness": 0.6, "fitness": 0.5, "clean_acc": 0.8, "adv_acc": 0.5,
             "kept": True},
            {"seed": 1, "val_fitness": 0.4, "fitness": 0.7, "clean_acc": 0.8, "adv_acc": 0.7,
             "kept": False}]
    final = {"fitness_split": "val", "population": [
        {"id": "a", "spectrum": [1, 0, 0, 0, 0], "metrics": _metrics(0.6),
         "test": _metrics(0.5, val_fitness=0.6, replicates=reps)}]}
    text = final_table(final)
    row = next(line for line in text.splitlines()[text.splitlines().index(
        next(line for line in text.splitlines() if line.startswith("replicates"))):]
        if line.startswith("a "))
    assert "0.6000 +- 1.2706" in row  # test F
    assert "0.5000 +- 0.0000" not in row and "0.8000 +- 0.0000" in row  # clean: no spread
    assert best_line(final).startswith("best evolved network a (highest mean validation "
                                       "fitness 0.5000)")
