"""``python -m nas.study``: cells reused, a killed cell resumed, the table equal to the stats
of the cells' own metrics; the table's handling of replicates and of one seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nas.cli import run
from nas.reporting.studytable import study_table
from nas.study import main

# t_{0.975, 1} from a printed t table: two seeds give one degree of freedom.
T_DF1 = 12.706
ARGS = ["--preset", "smoke", "--seeds", "0,1", "--generations", "0", "--strategies", "ga",
        "--baselines", "he-ref,best:none", "--workers", "1"]


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()
            if line.strip()]


def _stamps(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.name in ("final.json", "metrics.json", "events.jsonl", "weights.pt")}


def _best_test(run_dir: Path) -> dict:
    """The best finalist's test metrics, chosen by validation fitness as the run ranks them."""
    final = json.loads((run_dir / "final.json").read_text())
    return max((m["test"] for m in final["population"]), key=lambda t: t["val_fitness"])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "s"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def test_the_table_is_the_paired_statistics_of_the_cells_metrics(study):
    table = json.loads((study / "table.json").read_text())
    search = [_best_test(study / f"search-ga-s{s}")["fitness"] for s in (0, 1)]
    for method in ("he-ref+gm", "best+ce"):
        other = [json.loads((study / f"{method}-s{s}" / "metrics.json").read_text())["fitness"]
                 for s in (0, 1)]
        entry = table["differences"][f"ga - {method}"]["fitness"]
        diffs = [a - b for a, b in zip(search, other, strict=True)]
        mean = sum(diffs) / 2
        half = T_DF1 * abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)  # sd = |d0-d1|/√2
        assert entry["n"] == 2 and entry["mean"] == pytest.approx(mean)
        assert entry["low"] == pytest.approx(mean - half, abs=1e-3)
        assert entry["high"] == pytest.approx(mean + half, abs=1e-3)
    assert table["methods"]["ga"]["fitness"]["mean"] == pytest.approx(sum(search) / 2)
    assert "ga - he-ref+gm" in (study / "table.md").read_text()
    assert (study / "differences.png").read_bytes()[:4] == b"\x89PNG"
    # the CE copy is the search's own best architecture, trained without the defense
    ce = json.loads((study / "best+ce-s0" / "metrics.json").read_text())
    assert ce["settings"]["defense"] == "none" and ce["settings"]["seed"] == 0


def test_a_rerun_reuses_every_cell_and_a_killed_search_resumes(study, capsys):
    before = _stamps(study)
    assert main([*ARGS, "--out", str(study)]) == 0
    assert _stamps(study) == before  # nothing trained, nothing rewritten
    # kill search-ga-s1 during its refinement: no final.json, its last finalist not logged
    cell = study / "search-ga-s1"
    events = _events(cell)
    refined = [i for i, e in enumerate(events) if e.get("type") == "refined"]
    (cell / "final.json").unlink()
    lines = (cell / "events.jsonl").read_text().splitlines(keepends=True)
    (cell / "events.jsonl").write_text("".join(lines[: refined[-1]]))
    capsys.readouterr()
    assert main([*ARGS, "--out", str(study)]) == 0
    assert "cell search-ga-s1: resuming" in capsys.readouterr().out
    after = _events(cell)
    kinds = [e.get("type") for e in after]
    assert kinds.count("child_finished") == [e.get("type") for e in events].count(
        "child_finished")  # no child of the search trained again
    assert kinds.count("refined") == len(refined)  # only the lost finalist again
    assert (cell / "final.json").is_file()
    stamps = _stamps(study)
    assert {k: v for k, v in stamps.items() if not k.startswith("search-ga-s1")} == \
        {k: v for k, v in before.items() if not k.startswith("search-ga-s1")}


def test_other_settings_in_the_same_folder_are_refused(study, capsys):
    code = run(main, [*ARGS[:5], "2", *ARGS[6:], "--out", str(study)])
    err = capsys.readouterr().err
    assert code == 2 and "other settings" in err and "generations: 0 -> 2" in err
    assert len(err.strip().splitlines()) == 1


def test_replicates_are_averaged_and_one_seed_has_no_interval():
    rep = lambda f: {"fitness": f, "clean_acc": f, "adv_acc": f, "held_out": {"a": f, "b": f / 2}}  # noqa: E731
    cells = {
        "ga": {0: {"fitness": 0.7, "replicates": [rep(0.6), rep(0.8)]},
               1: {"fitness": 0.9, "replicates": [rep(0.9)]}},
        "random": {0: rep(0.5), 1: rep(0.6)},
        "he-ref+gm": {1: rep(0.4)},
    }
    table = study_table(cells, "ga", ["random", "he-ref+gm"])
    ga = table["methods"]["ga"]
    assert ga["fitness"]["per_seed"] == {"0": pytest.approx(0.7), "1": pytest.approx(0.9)}
    assert ga["held_out_worst"]["per_seed"]["0"] == pytest.approx(0.35)  # mean of 0.3, 0.4
    d = table["differences"]["ga - random"]["fitness"]
    assert d["per_seed"] == {"0": pytest.approx(0.2), "1": pytest.approx(0.3)}
    one = table["differences"]["ga - he-ref+gm"]["fitness"]  # paired on seed 1 only
    assert one["n"] == 1 and one["low"] is None and one["verdict"] == "undefined (n=1)"
    assert one["mean"] == pytest.approx(0.5)
