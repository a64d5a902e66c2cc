"""Fitness (eq. 4), fooling rate, prepare caching and the never-raising genome evaluation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from nas.evaluation.fitness import (
    Budget,
    ChildResult,
    FitnessSettings,
    evaluate_module,
    prepare,
    score,
)
from nas.search.refinement import refine_network
from nas.search.worker import evaluate_genome


def test_settings_and_result_round_trip_through_json():
    s = FitnessSettings(defense_args=(("lam", 0.5),), eps=0.2)
    back = FitnessSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and hash(back) == hash(s)
    r = ChildResult(0.5, 0.6, 0.5, 0.1, "ok", "", 3, 1.5, 100, 2000)
    assert ChildResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_prepare_is_idempotent_and_loads_from_the_cache(workspace, small_settings):
    msgs: list[str] = []
    again = prepare(small_settings, progress=False, log=msgs.append)
    # nothing trained or generated the second time: only the timed stage lines
    assert msgs and all(m.startswith("stage ") for m in msgs), msgs
    assert again.reference_key == workspace.reference_key
    assert torch.equal(again.adversarial["val"], workspace.adversarial["val"])
    assert torch.equal(again.reference_grads, workspace.reference_grads)
    x_val, _ = workspace.splits.split("val")
    adv = workspace.adversarial["val"]
    assert adv.shape == x_val.shape and adv.dtype == torch.float32
    assert (adv - x_val.float() / 255).abs().max() <= workspace.attack.eps + 1e-6
    assert set(workspace.adversarial) == {"val", "test"}
    assert workspace.reference_grads.shape == workspace.splits.x_train.shape


class Fixed(nn.Module):
    """Predicts a label from a lookup on the image's first pixel (known answers)."""

    def __init__(self, table: dict[float, int]) -> None:
        super().__init__()
        self.table = table
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3)
        for i, v in enumerate(x[:, 0, 0, 0].tolist()):
            logits[i, self.table[round(v, 2)]] = 1.0
        return logits


def test_score_computes_accuracies_and_the_fooling_rate_of_paper_4_2_2():
    # 4 images with pixel values 0.0/0.2/0.4/0.6; adversarial versions 0.1/0.3/0.5/0.7.
    x = torch.tensor([0, 51, 102, 153], dtype=torch.uint8).view(4, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 0])
    adv = torch.tensor([0.1, 0.3, 0.5, 0.7]).view(4, 1, 1, 1)
    # clean: right, right, right, wrong; adversarial: right, wrong, wrong, wrong
    model = Fixed({0.0: 0, 0.2: 1, 0.4: 2, 0.6: 1, 0.1: 0, 0.3: 0, 0.5: 0, 0.7: 1})
    ws = type("WS", (), {})()
    ws.splits = type("S", (), {"split": staticmethod(lambda name: (x, y))})()
    ws.adversarial = {"val": adv}
    ws.reference_pred = {"val": torch.tensor([0, 1, 0, 0])}  # reference right on 0, 1, 3
    clean, adv_acc, fooling = score(model, ws, "val")
    assert clean == 0.75 and adv_acc == 0.25
    # correct for both: images 0 and 1; the child's adversarial label is wrong for image 1 only
    assert fooling == 0.5


def test_fooling_rate_without_eligible_images_has_one_definition_nan():
    """Issue 11.4: the search's fitness said 1.0 where the report's fooling rates said NaN."""
    import math

    x = torch.tensor([0, 51, 102, 153], dtype=torch.uint8).view(4, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 0])
    model = Fixed({0.0: 1, 0.2: 2, 0.4: 0, 0.6: 1, 0.1: 0, 0.3: 0, 0.5: 0, 0.7: 1})  # all wrong
    ws = type("WS", (), {})()
    ws.splits = type("S", (), {"split": staticmethod(lambda name: (x, y))})()
    ws.adversarial = {"val": x.float() / 255 + 0.1}
    ws.reference_pred = {"val": y.clone()}
    _, _, fooling = score(model, ws, "val")
    assert math.isnan(fooling)
    from nas.evaluation.transfer import fooling_rate

    assert math.isnan(fooling_rate(0, 0))  # the report's definition
    failed = ChildResult.failed("failed", "boom", 1, 0.0)
    assert math.isnan(failed.fooling_rate)
    assert json.loads(json.dumps(failed.to_dict()))["fooling_rate"] is None  # standard JSON
    assert math.isnan(ChildResult.from_dict(failed.to_dict()).fooling_rate)


def test_evaluate_genome_trains_scores_and_writes_files(workspace, small_settings, tmp_path):
    from genome import to_json
    from search_spaces import named_genome

    out = tmp_path / "child"
    r = evaluate_genome(to_json(named_genome("he-baseline")), settings=small_settings, epochs=1,
                        seed=3, out_dir=str(out))
    assert r.status == "ok", r.reason
    assert r.fitness == min(r.clean_acc, r.adv_acc) and 0.0 <= r.fooling_rate <= 1.0
    assert r.params > 0 and r.macs > 0 and r.epochs == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fitness"] == r.fitness and metrics["settings"]["defense"] == "gm"
    from genome import compile_genome

    info = workspace.splits.info
    fresh = compile_genome(named_genome("he-baseline"), **info.network_args())
    fresh.load_state_dict(torch.load(out / "weights.pt", weights_only=True))  # strict: fits
    assert sum(p.numel() for p in fresh.parameters()) == r.params
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*tmp*"))


def test_bad_children_never_raise(workspace, small_settings, tmp_path):
    bad = evaluate_genome("{not json", settings=small_settings, epochs=1, seed=0,
                          out_dir=str(tmp_path / "bad"))
    assert bad.status == "failed" and bad.fitness == 0.0 and "\n" not in bad.reason
    assert json.loads((tmp_path / "bad" / "metrics.json").read_text())["status"] == "failed"
    from genome import to_json
    from search_spaces import named_genome

    nan = dataclasses.replace(small_settings, defense_args=(("lam", float("nan")),))
    div = evaluate_genome(to_json(named_genome("he-ref")), settings=nan, epochs=1, seed=0)
    assert div.status == "diverged" and div.fitness == 0.0


def test_evaluate_module_scores_any_architecture_on_a_chosen_split(workspace, small_settings,
                                                                  small_net_factory):
    plain = dataclasses.replace(small_settings, defense="none")
    r, model = evaluate_module(small_net_factory, workspace.trained_with(plain), Budget(1, 0),
                               split="test", log=lambda m: None)
    assert r.status == "ok" and isinstance(model, nn.Module)
    assert r.fitness == pytest.approx(min(r.clean_acc, r.adv_acc))


@pytest.mark.parametrize("defense, label", [("gm", "validation fitness"),
                                            ("none", "validation accuracy")])
def test_early_stopping_keeps_the_weights_the_fitness_would_pick(
        workspace, small_settings, small_net_factory, defense, label):
    """A defense's run keeps its best-on-validation *fitness* weights (eq. 4 on the validation
    split); a plain copy keeps its best clean accuracy."""
    settings = dataclasses.replace(small_settings, defense=defense)
    msgs: list[str] = []
    r, model = evaluate_module(small_net_factory, workspace.trained_with(settings),
                               Budget(4, 0, patience=1), split="test", log=msgs.append)
    kept = [m for m in msgs if m.startswith("early stopping")]
    assert len(kept) == 1 and label in kept[0]
    best = float(kept[0].rsplit(" ", 1)[1].rstrip(")"))
    clean, adv, _ = score(model, workspace, "val")
    assert (min(clean, adv) if defense == "gm" else clean) == pytest.approx(best, abs=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_one_cost_measure_the_measured_macs_equal_the_genome_count(seed):
    """Issue 11.4: `nas.genome describe` and the run's metrics counted the cost 2x apart."""
    import numpy as np

    import genome as gn
    from nas.evaluation.fitness import count_macs
    from search_spaces.sampling import sample_genome

    g = sample_genome(np.random.default_rng(seed), input_shape=(1, 28, 28))
    net = gn.compile_genome(g, num_classes=10, input_shape=(1, 28, 28))
    assert count_macs(net, (1, 28, 28)) == gn.count_macs(g, (1, 28, 28), 10)
    from nas.genome import describe_genome

    described = describe_genome(g, (1, 28, 28), 10)
    assert described["macs"] == count_macs(net, (1, 28, 28)) and "flops" not in described


def test_refinement_keeps_the_search_weights_only_when_they_score_higher_on_validation(
        workspace, small_settings, small_net_factory, tmp_path):
    """``fallback_weights``: a refinement that trained worse than the search (here: a rate
    that cannot move the weights) reports the search's weights; one that trained better keeps
    its own."""
    settings = dataclasses.replace(small_settings, defense="none")
    quiet = {"log": lambda _m: None}
    evaluate_module(small_net_factory, workspace.trained_with(settings), Budget(4, 0),
                    split="val", out_dir=str(tmp_path / "searched"), **quiet)
    searched = str(tmp_path / "searched" / "weights.pt")
    trained_model = small_net_factory()
    trained_model.load_state_dict(torch.load(searched, weights_only=True))
    trained_val = min(score(trained_model, workspace, "val")[:2])

    frozen = dataclasses.replace(settings, lr=1e-12)  # the refined net stays at its init
    stuck, own = evaluate_module(small_net_factory, workspace.trained_with(frozen),
                                 Budget(1, 1), split="test", **quiet)
    kept, model = refine_network(small_net_factory, workspace.trained_with(frozen),
                                 Budget(1, 1), split="test", fallback_weights=searched,
                                 out_dir=str(tmp_path / "kept"), **quiet)
    assert min(score(own, workspace, "val")[:2]) < trained_val  # the premise of the case
    assert kept.kept_search_weights is True and stuck.kept_search_weights is None
    assert kept.val_fitness == pytest.approx(trained_val)
    assert (kept.clean_acc, kept.adv_acc) == score(trained_model, workspace, "test")[:2]
    written = torch.load(tmp_path / "kept" / "weights.pt", weights_only=True)
    assert all(torch.equal(written[k], v) for k, v in trained_model.state_dict().items())
    assert json.loads((tmp_path / "kept" / "metrics.json").read_text())["kept_search_weights"]

    untrained = tmp_path / "untrained.pt"
    torch.save(small_net_factory().state_dict(), untrained)
    better, _ = refine_network(small_net_factory, workspace.trained_with(settings),
                               Budget(4, 1), split="test", fallback_weights=str(untrained),
                               **quiet)
    assert better.kept_search_weights is None
    assert "kept_search_weights" not in better.to_dict()


def test_replicates_are_scored_each_and_the_best_on_validation_is_kept(
        workspace, small_settings, small_net_factory, tmp_path):
    """``--replicates``: independent trainings, each scored on validation and test; the one
    with the highest validation fitness kept and written; replicate 0 is bit for bit the
    single training."""
    from nas.evaluation.fitness import draw_seed

    quiet = {"log": lambda _m: None, "split": "test"}
    single, single_model = evaluate_module(small_net_factory, workspace, Budget(4, 3), **quiet)
    best, model = refine_network(small_net_factory, workspace, Budget(4, 3), draws=3,
                                 out_dir=str(tmp_path / "drawn"), **quiet)
    reps = best.replicates
    assert [d["seed"] for d in reps] == [draw_seed(3, i) for i in range(3)]
    assert len({d["seed"] for d in reps}) == 3
    first = {k: reps[0][k] for k in ("fitness", "clean_acc", "adv_acc")}
    assert first == {"fitness": single.fitness, "clean_acc": single.clean_acc,
                     "adv_acc": single.adv_acc}  # replicate 0 is the single training
    assert reps[0]["val_fitness"] == pytest.approx(score(single_model, workspace, "val").fitness)
    fits = [d["val_fitness"] for d in reps]
    assert len(set(fits)) > 1  # the premise: the replicates differ
    kept = [i for i, d in enumerate(reps) if d["kept"]]
    assert kept == [fits.index(max(fits))]
    assert best.val_fitness == pytest.approx(max(fits))
    assert (best.clean_acc, best.adv_acc) == score(model, workspace, "test")[:2]
    assert (reps[kept[0]]["clean_acc"], reps[kept[0]]["adv_acc"]) == (best.clean_acc,
                                                                      best.adv_acc)
    written = torch.load(tmp_path / "drawn" / "weights.pt", weights_only=True)
    assert all(torch.equal(written[k], v) for k, v in model.state_dict().items())
    metrics = json.loads((tmp_path / "drawn" / "metrics.json").read_text())
    assert metrics["replicates"] == reps
    assert single.replicates is None and "replicates" not in single.to_dict()


def test_results_written_before_replicates_read_their_draws_as_replicates():
    old = ChildResult(0.5, 0.6, 0.5, 0.1, "ok", "", 3, 1.5, 100, 2000).to_dict()
    old["draws"] = [{"seed": 1, "val_fitness": 0.4, "kept": True}]
    assert ChildResult.from_dict(old).replicates == old["draws"]


def test_draws_need_a_validation_split_and_no_racing(workspace, small_settings,
                                                     small_net_factory):
    with pytest.raises(ValueError, match="validation"):
        refine_network(small_net_factory, workspace, Budget(2, 0, reject_below=0.5), draws=2,
                       log=lambda _m: None)
