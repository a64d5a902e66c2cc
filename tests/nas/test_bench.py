"""``python -m nas.bench --quick`` smoke test: every measurement present and positive."""

from __future__ import annotations

import json

from defenses import list_defenses
from nas.bench import build_parser, main


def test_quick_bench_reports_every_measurement_as_json(capsys):
    assert main(["--quick", "--json", "--batch-size", "4", "--reps", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    for child in ("he-ref", "he-baseline"):
        row = r["children"][child]
        assert row["plain_s"] > 0 and row["gm_cached_s"] > 0 and row["gm_live_he-ref_s"] > 0
    assert r["attack"]["he-ref_s_per_1000"] > 0
    assert set(r["defenses"]) == set(list_defenses())
    assert all(("s" in v) != ("skipped" in v) for v in r["defenses"].values())
    for name in ("fast-at", "pgd-at", "free-at"):  # fed: the bench's adversary names its eps
        assert r["defenses"][name]["s"] > 0, r["defenses"][name]
    assert r["children_per_hour_quick_preset"]["children_per_hour"] > 0


def test_every_flag_has_help():
    for action in build_parser()._actions:
        assert action.help, action.dest
