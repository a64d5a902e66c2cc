"""Caches keyed by what they hold, all-or-nothing entries, corrupt entries rebuilt
(issues 11, 12)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.errors import UserError
from nas.evaluation.attacks import AttackSettings, transferred_set
from nas.evaluation.data import dataset_info, load_splits
from nas.evaluation.fitness import FitnessSettings, prepare
from nas.evaluation.references import build_reference, get_reference, load_weights
from nas.evaluation.training import TrainConfig, reference_gradients

ROOT = Path(__file__).resolve().parents[3]


def _settings(cache: Path, **kw) -> FitnessSettings:
    base = dict(dataset="synthetic", train_size=100, val_size=20, test_size=20,
                reference="he-ref", reference_epochs=1, steps=2, batch_size=50, device="cpu",
                cache_dir=str(cache))
    return FitnessSettings(**{**base, **kw})


def _distance(ws, split: str) -> float:
    x = ws.splits.split(split)[0].float() / 255.0
    return float((ws.adversarial[split] - x).abs().max())


def test_one_weights_file_on_other_images_never_reuses_their_adversarial_sets(tmp_path):
    """Issue 11.1: prepare() with one --reference-weights file, seed 0 then seed 1."""
    torch.manual_seed(0)
    torch.save(build_reference("he-ref", dataset_info("synthetic")).state_dict(), tmp_path / "w.pt")
    spaces = []
    for seed in (0, 1):
        ws = prepare(_settings(tmp_path / "cache", seed=seed,
                               reference_weights=str(tmp_path / "w.pt")),
                     progress=False, log=lambda _m: None)
        for split in ("val", "test"):
            assert _distance(ws, split) <= ws.attack.eps + 1e-6, (seed, split)
        fresh = reference_gradients(ws.reference, ws.splits.x_train, ws.splits.y_train)
        assert torch.equal(ws.reference_grads, fresh)  # gradients of these training images
        spaces.append(ws)
    assert not torch.equal(spaces[0].splits.x_val, spaces[1].splits.x_val)


def test_a_cached_set_outside_its_eps_ball_is_regenerated_with_one_log_line(tmp_path):
    from nas.evaluation.attacks import check_adversarial, transferred_key
    from nas.evaluation.cache import digest, save_entry

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = (torch.rand(20, 1, 4, 4) * 255).to(torch.uint8)
    y = torch.randint(0, 3, (20,))
    s = AttackSettings("pgd-linf", 0.1, 0.05, 2)
    content = transferred_key("key", "val", x, y, s)
    path = tmp_path / "adversarial" / f"pgd-linf-val-{digest(content)}.pt"
    save_entry(path, content, {"x_adv": torch.rand(20, 1, 4, 4)})  # a well-formed wrong set
    msgs: list[str] = []
    x_adv = transferred_set(model, "key", "val", x, y, s, tmp_path, log=msgs.append)
    assert check_adversarial(x_adv, x, s) is None
    assert sum("eps-ball" in m for m in msgs) == 1 and any("generating" in m for m in msgs)
    assert transferred_set(model, "key", "val", x, y, s, tmp_path, log=msgs.append).equal(x_adv)
    assert len(msgs) == 2  # the rebuilt entry is then used as is


def test_check_adversarial_names_each_kind_of_wrong_set():
    from nas.evaluation.attacks import check_adversarial

    x = torch.full((4, 1, 2, 2), 128, dtype=torch.uint8)
    s = AttackSettings("pgd-linf", 0.1, 0.05, 2)
    clean = x.float() / 255
    assert check_adversarial(clean + 0.05, x, s) is None
    assert "eps-ball" in check_adversarial(clean + 0.2, x, s)
    assert "box" in check_adversarial(clean + 2.0, x, s)
    assert "expected" in check_adversarial(clean[:3], x, s)
    l2 = AttackSettings("pgd-l2", 0.5, 0.1, 2)
    assert check_adversarial(clean + 0.2, x, l2) is None  # L2 norm 0.4 <= 0.5
    assert "eps-ball" in check_adversarial(clean + 0.3, x, l2)  # L2 norm 0.6


def _files(cache: Path) -> dict[str, Path]:
    return {kind: next((cache / kind).glob("*.pt"))
            for kind in ("references", "adversarial", "refgrad")}


@pytest.mark.parametrize("kind", ["references", "adversarial", "refgrad"])
def test_a_truncated_cache_entry_is_logged_in_one_line_and_rebuilt(tmp_path, kind):
    """Issue 12.1: a truncated entry broke every later run (traceback or exit 2)."""
    settings = _settings(tmp_path / "cache")
    first = prepare(settings, progress=False, log=lambda _m: None)
    path = _files(tmp_path / "cache")[kind]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    msgs: list[str] = []
    again = prepare(settings, progress=False, log=msgs.append)
    bad = [m for m in msgs if str(path) in m]
    assert len(bad) == 1 and "corrupt" in bad[0] and "\n" not in bad[0]
    for a, b in zip(first.reference.state_dict().values(), again.reference.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(first.adversarial[s], again.adversarial[s]) for s in first.adversarial)
    assert torch.equal(first.reference_grads, again.reference_grads)
    msgs.clear()
    prepare(settings, progress=False, log=msgs.append)
    assert all(m.startswith("stage ") for m in msgs), msgs  # the rebuilt entry is whole


_PREPARE = """
import sys
from nas.evaluation.fitness import FitnessSettings, prepare
prepare(FitnessSettings(dataset="synthetic", train_size=100, val_size=20, test_size=20,
        reference="he-ref", reference_epochs=1, steps=2, batch_size=50, device="cpu",
        cache_dir=sys.argv[1]), progress=False, log=lambda _m: None)
"""


@pytest.mark.parametrize("kind", ["references", "adversarial", "refgrad"])
def test_a_kill_while_writing_an_entry_leaves_none_and_the_next_run_builds_it(tmp_path, kind):
    """Issue 12.1: SIGKILL at the worst moment of a cache write (entry complete in a temporary
    file, not yet renamed); the next run sees no entry, builds it and cleans the leftover."""
    cache = tmp_path / "cache"
    env = {**os.environ, "NAS_TEST_KILL_AT": f"cache:{kind}:before-rename",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PREPARE, str(cache)], env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not list((cache / kind).glob("*.pt"))  # no half entry
    assert list((cache / kind).glob(".*.tmp*"))  # the killed write's temporary file
    prepare(_settings(cache), progress=False, log=lambda _m: None)
    assert len(list((cache / kind).glob("*.pt"))) == (2 if kind == "adversarial" else 1)
    assert not list((cache / kind).glob(".*.tmp*"))


def test_fresh_and_cached_reference_give_bitwise_equal_gradients(tmp_path):
    """Issue 12.7: a run that resumed after the reference was cached computed other gradients."""
    splits = load_splits("synthetic", train_size=100, val_size=20, test_size=20, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=50, device="cpu")
    fresh, key1, _ = get_reference("he-ref", splits, tmp_path, config=cfg, log=lambda _m: None)
    cached, key2, _ = get_reference("he-ref", splits, tmp_path, config=cfg,
                                    log=lambda _m: pytest.fail("retrained"))
    assert key1 == key2
    g1 = reference_gradients(fresh, splits.x_train, splits.y_train)
    g2 = reference_gradients(cached, splits.x_train, splits.y_train)
    assert torch.equal(g1, g2)


def test_reference_key_takes_the_whole_training_configuration(tmp_path):
    from nas.evaluation.references import reference_key, training_fields
    from nas.evaluation.training import TrainConfig

    splits = load_splits("synthetic", train_size=100, val_size=20, test_size=20, seed=0)
    base = TrainConfig(epochs=1, device="cpu")
    key = reference_key("he-ref", splits, training_fields(base))
    assert key == reference_key("he-ref", splits, training_fields(
        dataclasses.replace(base, progress=True)))  # display only
    faster = dataclasses.replace(base.recipe, lr=base.recipe.lr * 10)
    for change in ({"amp": "off"}, {"recipe": faster}, {"batch_size": 64}, {"patience": 3}):
        changed = training_fields(dataclasses.replace(base, **change))
        assert key != reference_key("he-ref", splits, changed)
    other = load_splits("synthetic", train_size=100, val_size=20, test_size=20, seed=1)
    assert key != reference_key("he-ref", other, training_fields(base))  # other images
    # early stopping picks the weights on the validation split: then it is part of the key
    other_val = dataclasses.replace(splits, x_val=other.x_val, y_val=other.y_val)
    assert key == reference_key("he-ref", other_val, training_fields(base))
    stopping = training_fields(dataclasses.replace(base, patience=3))
    assert (reference_key("he-ref", splits, stopping)
            != reference_key("he-ref", other_val, stopping))


class Payload:
    """Any pickled object besides tensors (the kind of file a malicious checkpoint is)."""


def test_a_pickled_weights_file_is_refused_without_advice_to_load_it_anyway(tmp_path):
    """Issue 12.7: the error must never suggest ``weights_only=False`` for an untrusted file."""
    path = tmp_path / "evil.pt"
    torch.save({"weight": Payload()}, path)
    with pytest.raises(UserError) as err:
        load_weights(build_reference("he-ref", dataset_info("synthetic")), path)
    msg = str(err.value)
    assert "cannot read weights" in msg and "\n" not in msg
    for advice in ("weights_only", "still be loaded", "trust", "safe_globals"):
        assert advice not in msg


def test_report_baselines_are_keyed_by_the_training_images_and_rebuilt_when_corrupt(tmp_path):
    """Issue 11.1 for the report's baselines: one weights file, two training sets, two baselines."""
    from nas.reporting.models import baseline

    torch.manual_seed(0)
    torch.save(build_reference("he-ref", dataset_info("synthetic")).state_dict(), tmp_path / "w.pt")
    msgs: list[str] = []
    spaces = []
    for size in (100, 50):
        s = _settings(tmp_path / "cache", train_size=size, reference_weights=str(tmp_path / "w.pt"),
                      defense="none")
        ws = prepare(s, progress=False, log=lambda _m: None)
        spaces.append((ws, s))
        baseline(ws, s, "he-baseline", "none", 1, msgs.append, False)
    assert sum("training he-baseline" in m for m in msgs) == 2  # not reused across images
    (entry,) = [p for p in (tmp_path / "cache" / "report").glob("*.pt")
                if p.stat().st_mtime_ns == max(
                    q.stat().st_mtime_ns for q in (tmp_path / "cache" / "report").glob("*.pt"))]
    entry.write_bytes(entry.read_bytes()[:200])
    msgs.clear()
    ws, s = spaces[1]
    baseline(ws, s, "he-baseline", "none", 1, msgs.append, False)
    assert any("corrupt" in m and str(entry) in m for m in msgs)
    assert any("training he-baseline" in m for m in msgs)


SHARED = Path(os.environ.get("NAS_DATA_ROOT") or ROOT.parent / "shared" / "data")


@pytest.mark.skipif(not all((SHARED / d / "raw").is_dir() for d in ("MNIST", "FashionMNIST")),
                    reason="no local MNIST / Fashion-MNIST")
def test_one_weights_file_on_two_same_shaped_datasets_keeps_their_sets_apart(tmp_path):
    """Issue 11.1, second case: MNIST then Fashion-MNIST (both 1x28x28) with one weights file."""
    info = dataset_info("mnist")
    torch.manual_seed(0)
    torch.save(build_reference("he-ref", info).state_dict(), tmp_path / "w.pt")
    for dataset in ("mnist", "fashion-mnist"):
        ws = prepare(_settings(tmp_path / "cache", dataset=dataset, data_root=str(SHARED),
                               reference_weights=str(tmp_path / "w.pt")),
                     progress=False, log=lambda _m: None)
        for split in ("val", "test"):
            assert _distance(ws, split) <= ws.attack.eps + 1e-6, (dataset, split)


def test_a_baseline_trains_and_is_keyed_with_the_run_defense_arguments_only_for_that_defense(
        tmp_path):
    """The run's ``--defense-arg`` values go to baselines of the run's defense, and change their
    cache key; a baseline of another defense trains with that defense's defaults."""
    from nas.reporting.models import Candidate, baseline_entry, baseline_settings

    s = _settings(tmp_path / "cache", train_size=50, defense="gm", defense_args=(("lam", 0.5),))
    ws = prepare(s, progress=False, log=lambda _m: None)
    gm, ce = Candidate("he-baseline+gm", "he-baseline", "gm"), Candidate("x", "he-baseline", "none")
    assert baseline_settings(s, gm).defense_args == (("lam", 0.5),)
    ce_settings = baseline_settings(s, ce)
    assert ce_settings.defense_args == () and ce_settings.defense == "none"
    keyed = baseline_entry(ws, s, gm, 1)[0]
    plain = dataclasses.replace(s, defense_args=())
    assert baseline_entry(ws, plain, gm, 1)[0] != keyed
    assert baseline_entry(ws, plain, ce, 1)[0] == baseline_entry(ws, s, ce, 1)[0]
    # the refinement's budget: patience and the number of training draws change the key
    assert len({baseline_entry(ws, s, gm, 1, patience, draws)[0]
                for patience in (0, 5) for draws in (1, 3)}) == 4
    assert baseline_entry(ws, s, gm, 1, 0, 1)[0] == keyed  # draws=1: the key as before
