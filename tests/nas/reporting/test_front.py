"""The trade-off front: hand-made points with a known front and a hypervolume computed by hand."""

from __future__ import annotations

import json

import pytest

from nas.reporting.front import (
    Point,
    compute_front,
    hypervolume,
    pareto_front,
    points_from_children,
)


def _child(cid, gen, clean, adv, params, *, status="ok", reused=False):
    return {"type": "child_finished", "id": cid, "generation": gen, "reused": reused,
            "metrics": {"clean_acc": clean, "adv_acc": adv, "params": params, "flops": 10 * params,
                        "status": status, "fitness": min(clean, adv)}}


# A and B trade clean for transferred accuracy at equal size; C is smaller but worse;
# D is dominated by A and C (worse or equal everywhere), E by A.
A = _child("A", 0, 0.9, 0.5, 100)
B = _child("B", 1, 0.6, 0.8, 100)
C = _child("C", 1, 0.5, 0.4, 50)
D = _child("D", 0, 0.5, 0.4, 200)
E = _child("E", 0, 0.85, 0.45, 150)


def test_front_of_hand_made_points():
    points = points_from_children([A, B, C, D, E])
    assert {p.id for p in pareto_front(points)} == {"A", "B", "C"}


def test_hypervolume_computed_by_hand():
    # Sizes / 200: A, B at 0.5, C at 0.25. Slab size in [0.5, 1]: union of A's and B's
    # rectangles, 0.9*0.5 + 0.6*0.8 - 0.6*0.5 = 0.63, times 0.5 = 0.315. Slab [0.25, 0.5):
    # only C's rectangle, 0.5*0.4 = 0.2, times 0.25 = 0.05. Total 0.365.
    front = pareto_front(points_from_children([A, B, C, D, E]))
    assert hypervolume(front, size_ref=200) == pytest.approx(0.365)
    # dominated points add no volume
    assert hypervolume(points_from_children([A, B, C, D, E]), size_ref=200) == pytest.approx(0.365)
    assert hypervolume([Point("x", 0, 1.0, 1.0, 0.0)], size_ref=1.0) == pytest.approx(1.0)
    assert hypervolume([], size_ref=1.0) == 0.0


def test_hypervolume_per_generation_is_cumulative():
    front = compute_front([A, B, C, D, E], size_ref=200)
    gens = {h["generation"]: h for h in front.hypervolume}
    # generation 0: A, D, E; the front is A alone: 0.9 * 0.5 * (1 - 0.5)
    assert gens[0]["front_size"] == 1 and gens[0]["hypervolume"] == pytest.approx(0.225)
    assert gens[1]["front_size"] == 3 and gens[1]["hypervolume"] == pytest.approx(0.365)
    assert front.ids == ["A", "B", "C"]  # best clean accuracy first


def test_macs_change_the_front():
    # by MACs (flops key), a child with many parameters but few MACs can join the front
    f = _child("F", 0, 0.4, 0.3, 1000)
    f["metrics"]["flops"] = 1
    assert "F" not in compute_front([A, B, C, f], size="params").ids
    assert "F" in compute_front([A, B, C, f], size="macs").ids


def test_failed_and_reused_children_are_left_out():
    pts = points_from_children([A, _child("X", 0, 1.0, 1.0, 1, status="diverged"),
                                _child("Y", 0, 1.0, 1.0, 1, reused=True)])
    assert [p.id for p in pts] == ["A"]


def test_to_dict_is_json():
    doc = json.loads(json.dumps(compute_front([A, B, C, D, E]).to_dict()))
    assert [p["id"] for p in doc["front"]] == ["A", "B", "C"]
    assert doc["size_ref"] == pytest.approx(220.0) and len(doc["points"]) == 5
