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
    done = {(i, e, 0): {"clean": c, "adv": c, "fitness": c}
            for i, c in enumerate([0.1, 0.5, 0.3]) for e in (3, 12)}
    s = summary(done, (3, 12), 4)  # child 3 missing: left out
    assert s["children"] == 3 and s["spearman_fitness"] == pytest.approx(1.0)
    for i, c in enumerate([0.5, 0.1, 0.3]):  # at 1 epoch the order is reversed
        done[(i, 1, 0)] = {"clean": c, "adv": c, "fitness": c}
    curve = summary(done, (1, 3, 12), 3)
    assert curve["spearman_fitness_3"] == pytest.approx(1.0)
    assert curve["spearman_fitness_1"] == pytest.approx(-1.0)
    assert curve["mean_clean"] == [pytest.approx(0.3)] * 3
    assert curve["kendall_fitness_3"] == pytest.approx(1.0)
    assert curve["kendall_fitness_1"] == pytest.approx(-1.0)


def test_replicates_measure_the_noise_and_the_rank_of_one_draw():
    """Four children whose long-budget fitness is 0.2 < 0.4 < 0.6 < 0.8; at the short budget
    their means rank the same, but the first draw swaps children 1 and 2."""
    short = {0: (0.10, 0.30), 1: (0.50, 0.30), 2: (0.30, 0.70), 3: (0.70, 0.90)}
    done = {}
    for i, (a, b) in short.items():
        done[(i, 3, 0)] = {"clean": a, "adv": a, "fitness": a}
        done[(i, 3, 1)] = {"clean": b, "adv": b, "fitness": b}
        for r in (0, 1):
            f = 0.2 * (i + 1)
            done[(i, 12, r)] = {"clean": f, "adv": f, "fitness": f}
    s = summary(done, (3, 12), 4, replicates=2)
    assert s["kendall_fitness"] == pytest.approx(1.0)  # means: 0.2, 0.4, 0.5, 0.8
    # one draw 0.1, 0.5, 0.3, 0.7 against 1..4: 5 concordant pairs, 1 discordant of 6
    assert s["kendall_fitness_one_draw"] == pytest.approx((5 - 1) / 6, abs=1e-3)  # 3 places
    sds = [abs(a - b) / 2 ** 0.5 for a, b in short.values()]  # sd of two values, ddof 1
    assert s["noise_sd"][0] == pytest.approx(sum(sds) / 4, abs=1e-4) and s["noise_sd"][1] == 0
    assert s["signal_sd"][1] == pytest.approx(float(__import__("numpy").std(
        [0.2, 0.4, 0.6, 0.8], ddof=1)), abs=1e-4)


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
    assert {r["replicate"] for r in rows} == {0}
    out.write_text("\n".join(out.read_text().splitlines()[:5]) + '\n{"child": 2, "ep')  # a kill
    assert main(["--preset", "smoke", "--children", "3", "--epochs", "1", "--factor", "2",
                 "--out", str(out)]) == 0  # resumed: only the cut training runs again
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and len({(r["child"], r["epochs"]) for r in rows}) == 6
