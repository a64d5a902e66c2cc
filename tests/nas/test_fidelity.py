"""``python -m nas.fidelity``: rank correlation between two child budgets."""

from __future__ import annotations

import json
import math

import pytest

from nas.fidelity import main, sample_children, spearman, summary
from nas.search import config as cfgmod


def test_spearman_and_summary():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [0.5, 0.5, 0.5]))  # a constant side: undefined
    done = {(i, e): {"clean": c, "adv": c, "fitness": c}
            for i, c in enumerate([0.1, 0.5, 0.3]) for e in (3, 12)}
    s = summary(done, (3, 12), 4)  # child 3 missing: left out
    assert s["children"] == 3 and s["spearman_fitness"] == pytest.approx(1.0)
    for i, c in enumerate([0.5, 0.1, 0.3]):  # at 1 epoch the order is reversed
        done[(i, 1)] = {"clean": c, "adv": c, "fitness": c}
    curve = summary(done, (1, 3, 12), 3)
    assert curve["spearman_fitness_3"] == pytest.approx(1.0)
    assert curve["spearman_fitness_1"] == pytest.approx(-1.0)
    assert curve["mean_clean"] == [pytest.approx(0.3)] * 3


def test_children_are_mutants_of_the_search_space_and_seeded():
    search = cfgmod.resolve({}, preset="quick", config_file=None, run_dir="").search
    a = sample_children(5, 0, search, (1, 28, 28))
    assert a == sample_children(5, 0, search, (1, 28, 28)) and len(set(a)) == 5
    assert all(len(json.loads(g)["nodes"]) <= search.max_nodes for g in a)


@pytest.mark.slow
def test_fidelity_command_on_the_smoke_preset(tmp_path, nas_cache_dir, capsys):
    out = tmp_path / "fid.jsonl"
    assert main(["--preset", "smoke", "--children", "3", "--epochs", "1", "--factor", "2",
                 "--workers", "2", "--out", str(out)]) == 0
    summary_line = json.loads(capsys.readouterr().out)
    assert summary_line["budgets"] == [1, 2] and summary_line["children"] == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["child"], r["epochs"]) for r in rows) == [(i, e) for i in range(3)
                                                              for e in (1, 2)]
    out.write_text("\n".join(out.read_text().splitlines()[:5]) + '\n{"child": 2, "ep')  # a kill
    assert main(["--preset", "smoke", "--children", "3", "--epochs", "1", "--factor", "2",
                 "--out", str(out)]) == 0  # resumed: only the cut training runs again
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and len({(r["child"], r["epochs"]) for r in rows}) == 6
