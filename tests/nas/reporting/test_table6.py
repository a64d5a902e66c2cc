"""Table 6 (nas/reporting/table6.py, python -m nas.table6): the paper's protocol (the
reference's correct images, one set of examples for every network, the fooling rate modified
for filters), the rows built from the registries, and the written table."""

from __future__ import annotations

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
    build_models,
    protocol_set,
    score_row,
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


def test_every_flag_has_help():
    for action in table6_cli.build_parser()._actions:
        assert action.help, action.dest
