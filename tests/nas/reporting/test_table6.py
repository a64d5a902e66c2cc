"""Table 6 (nas/reporting/table6.py, python -m nas.table6): the paper's protocol (the
reference's correct images, one set of examples for every network, the fooling rate modified
for filters), the rows built from the registries, and the written table."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from defenses import Transformed, create_transform
from nas import table6 as table6_cli
from nas.evaluation.training import predict
from nas.reporting.table6 import (
    WHITE_BOX_NOTE,
    Budget,
    Row,
    Table6,
    build_models,
    protocol_set,
    score_row,
    summarize,
    summary_markdown,
    table6,
    to_json,
    to_markdown,
    wilson,
)


class AlwaysZero(nn.Module):
    """Predicts class 0 for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits + 0 * self.bias


def test_the_eligible_images_are_the_references_and_a_networks_clean_errors_count(workspace):
    ws = workspace
    x_adv, attack = protocol_set(ws)
    assert attack.name == "pgd-linf" and x_adv is ws.adversarial["test"]
    y = ws.splits.y_test
    ref_ok = predict(ws.reference, ws.splits.x_test) == y
    assert 0 < int(ref_ok.sum()) < len(y)
    # the white-box source itself: fooled = its own errors on its examples, among ref_ok
    own = score_row("source", ws.reference, ws, x_adv, None)
    assert own.eligible == int(ref_ok.sum())
    assert own.fooled == int((predict(ws.reference, x_adv) != y)[ref_ok].sum())
    # a network that always answers 0: fooled on every eligible image of another class
    # (Table 6's rate), never on the ones it gets right (Table 5's rate)
    zero = score_row("zero", AlwaysZero(), ws, x_adv, None)
    assert zero.eligible == own.eligible
    assert zero.fooled == int((y != 0)[ref_ok].sum())
    assert zero.fooling_both_correct == 0.0
    assert zero.clean == pytest.approx(float((y == 0).float().mean()))
    lo, hi = zero.interval
    assert lo <= zero.fooling <= hi


def test_a_filter_row_scores_the_filtered_network_on_the_same_examples(workspace):
    ws = workspace
    x_adv, attack = protocol_set(ws)
    jpeg = Transformed(create_transform("jpeg", quality=30), ws.reference).eval()
    idx = torch.arange(10)
    row = score_row("Ref+JPEG", jpeg, ws, x_adv, (attack, idx), seed=0)
    y = ws.splits.y_test
    ref_ok = predict(ws.reference, ws.splits.x_test) == y
    assert row.eligible == int(ref_ok.sum())
    assert row.fooled == int((predict(jpeg, x_adv) != y)[ref_ok].sum())
    assert row.transferred == pytest.approx(float((predict(jpeg, x_adv) == y).float().mean()))
    assert row.kind == "input transform" and 0.0 <= row.white_box <= 1.0


def test_wilson_interval_matches_the_textbook_values():
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    lo, hi = wilson(0, 0)
    assert lo != lo and hi != hi  # nan


def test_rows_are_trained_once_cached_and_written_with_the_white_box_label(workspace,
                                                                            small_settings):
    rows = ("Ref", "Ref+bilateral", "Ref+fast-AT", "Ref+free-AT")
    budget = Budget(epochs=2, defense_args={"free-at": {"replays": 2}})
    messages: list[str] = []
    models = build_models(workspace, small_settings, budget, rows=rows, log=messages.append)
    assert list(models) == list(rows)
    assert "1 epochs" in models["Ref+free-AT"][1]  # epochs / replays (Shafahi et al.)
    assert isinstance(models["Ref+bilateral"][0], Transformed)
    assert models["Ref+bilateral"][0].model is models["Ref"][0]
    trained = [m for m in messages if m.startswith("training")]
    assert len(trained) == 3
    again: list[str] = []
    cached = build_models(workspace, small_settings, budget, rows=rows, log=again.append)
    assert not [m for m in again if m.startswith("training")]
    for name in ("Ref", "Ref+fast-AT"):
        for a, b in zip(models[name][0].state_dict().values(),
                        cached[name][0].state_dict().values(), strict=True):
            assert torch.equal(a.cpu(), b.cpu())
    table = table6(workspace, models, white_box_size=12, log=lambda _m: None)
    assert [r.name for r in table.rows] == list(rows) and table.white_box_images == 12
    assert len({r.eligible for r in table.rows}) == 1
    md = to_markdown(table)
    assert WHITE_BOX_NOTE in md and "AT expected to win" in md.splitlines()[0]
    doc = json.loads(to_json(table))
    assert doc["rows"][0]["paper"] == 0.85 and doc["white_box"] == WHITE_BOX_NOTE


def test_the_command_writes_markdown_and_json(tmp_path, nas_cache_dir, capsys):
    out = tmp_path / "t6"
    argv = ["--dataset", "synthetic", "--train-size", "120", "--val-size", "30",
            "--test-size", "40", "--reference", "he-ref", "--reference-epochs", "1",
            "--epochs", "1", "--rows", "Ref,Ref+JPEG,Ref+PGD-AT", "--defense-arg",
            "pgd-at:steps=2", "--transform-arg", "jpeg:quality=40", "--white-box-size", "8",
            "--device", "cpu", "--cache-dir", str(nas_cache_dir), "--out", str(out),
            "--no-progress"]
    assert table6_cli.main(argv) == 0
    doc = json.loads((out / "table6.json").read_text())
    assert [r["name"] for r in doc["rows"]] == ["Ref", "Ref+JPEG", "Ref+PGD-AT"]
    assert "steps': 2" in doc["rows"][2]["trained"] and "quality': 40" in doc["rows"][1]["trained"]
    assert (out / "table6.md").read_text() == capsys.readouterr().out


def _row(name: str, fooling: float, white_box: float | None = None) -> Row:
    return Row(name, "network", 0.9, 1 - fooling, fooling, round(100 * fooling), 100,
               wilson(round(100 * fooling), 100), fooling, None, white_box, None)


def test_summary_means_intervals_and_paired_differences_have_the_known_answer():
    # three replicates; Ref+fast-AT is fooled exactly 0.2 more than Ref+GM in each, so the
    # paired difference is 0.2 with no spread, while the unpaired spread is wide
    gm = [0.1, 0.3, 0.5]
    tables = [Table6([_row("Ref+GM", f, 0.0), _row("Ref+fast-AT", f + 0.2, 0.4 + f),
                      _row("Ref+JPEG", 0.9 - f)], {}, 10, defense="gm") for f in gm]
    tables[0].rows.append(_row("search best", 0.05))  # trained once: n = 1
    summary = summarize(tables)
    rows = {r.name: r for r in summary.rows}
    fooling = rows["Ref+GM"].columns["fooling"]
    # mean 0.3, sd 0.2, t_{0.975,2} = 4.3027: half-width 4.3027 * 0.2 / sqrt(3)
    assert fooling.mean == pytest.approx(0.3)
    assert fooling.half_width == pytest.approx(4.302653 * 0.2 / 3 ** 0.5, rel=1e-5)
    assert rows["search best"].n == 1 and rows["search best"].columns["fooling"].low is None
    assert rows["Ref+GM"].columns["held_out_worst"] is None  # these rows have no held-out column
    diff = summary.fooling_differences["Ref+fast-AT - Ref+GM"]
    assert diff.mean == pytest.approx(0.2) and diff.half_width == pytest.approx(0.0, abs=1e-12)
    assert diff.verdict() == "higher"
    assert summary.fooling_differences["Ref+JPEG - Ref+GM"].verdict() == "no difference shown"
    assert not any("search best" in k for k in summary.fooling_differences)
    wb = summary.white_box_differences["Ref+fast-AT - Ref+GM"]
    assert wb.mean == pytest.approx(0.7) and wb.verdict() == "higher"
    md = summary_markdown(summary)
    assert "| Ref+fast-AT - Ref+GM | 20.0 [20.0, 20.0] (n=3) | higher |" in md
    doc = summary.to_dict()
    assert doc["replicates"] == 3 and len(doc["tables"]) == 3
    assert doc["fooling_differences"]["Ref+fast-AT - Ref+GM"]["verdict"] == "higher"
    json.dumps(doc)


def test_summary_names_the_rows_of_another_defense():
    tables = [Table6([_row("Ref+ncen", f), _row("HE+ncen", f + 0.1)], {}, 0, defense="ncen")
              for f in (0.2, 0.4)]
    assert list(summarize(tables).fooling_differences) == ["HE+ncen - Ref+ncen"]


def test_replicates_train_from_independent_reproducible_seeds(workspace, small_settings):
    budget = Budget(epochs=1)
    first = build_models(workspace, small_settings, budget, rows=("Ref",),
                         log=lambda _m: None, replicate=1)["Ref"][0]
    zeroth = build_models(workspace, small_settings, budget, rows=("Ref",),
                          log=lambda _m: None)["Ref"][0]
    differs = [not torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                     zeroth.state_dict().values(), strict=True)]
    assert any(differs)
    # the cached replicate is the one a fresh training from its seed gives
    from nas.evaluation.cache import discard
    from nas.reporting.models import Candidate, baseline_entry

    these = dataclasses.replace(small_settings, defense="none", defense_args=())
    path, _ = baseline_entry(workspace, these,
                             Candidate("he-ref+none", these.reference, "none"), 1, replicate=1)
    assert path.exists()
    discard(path, "retrained by the test", lambda _m: None)
    again = build_models(workspace, small_settings, budget, rows=("Ref",),
                         log=lambda _m: None, replicate=1)["Ref"][0]
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_command_with_replicates_writes_the_summary_and_the_plot(tmp_path, nas_cache_dir,
                                                                     capsys):
    out = tmp_path / "t6"
    argv = ["--dataset", "synthetic", "--train-size", "120", "--val-size", "30",
            "--test-size", "40", "--reference", "he-ref", "--reference-epochs", "1",
            "--epochs", "1", "--rows", "Ref+GM,Ref+JPEG,Ref+fast-AT", "--replicates", "2",
            "--white-box-size", "8", "--device", "cpu", "--cache-dir", str(nas_cache_dir),
            "--out", str(out), "--no-progress"]
    assert table6_cli.main(argv) == 0
    doc = json.loads((out / "table6.json").read_text())
    assert doc["replicates"] == 2 and [r["n"] for r in doc["rows"]] == [2, 2, 2]
    assert set(doc["fooling_differences"]) == {"Ref+JPEG - Ref+GM", "Ref+fast-AT - Ref+GM"}
    assert set(doc["white_box_differences"]) == {"Ref+fast-AT - Ref+GM"}
    firsts = [t["rows"][0]["trained"] for t in doc["tables"]]
    assert firsts[0] == firsts[1]  # the same training, from another seed
    assert (out / "table6-differences.png").stat().st_size > 0
    assert (out / "table6.md").read_text() == capsys.readouterr().out


def test_every_flag_has_help():
    for action in table6_cli.build_parser()._actions:
        assert action.help, action.dest
