"""The whole test split (``full_test``): finalists scored on every test image, and on the
protocol's ``test_size`` subset beside it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from nas.evaluation.data import load_splits
from nas.evaluation.fitness import Budget, evaluate_module, prepare, score

SHARED = Path(os.environ.get("NAS_DATA_ROOT")
              or Path(__file__).resolve().parents[4] / "shared" / "data")


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(), reason="no local data")
def test_the_whole_test_split_keeps_train_val_and_the_protocol_subset(tmp_path):
    kw = dict(train_size=100, val_size=50, test_size=100, seed=3, data_root=str(SHARED),
              cache_dir=str(tmp_path))
    subset = load_splits("fashion-mnist", **kw)
    whole = load_splits("fashion-mnist", full_test=True, **kw)
    assert torch.equal(whole.x_train, subset.x_train) and torch.equal(whole.y_val, subset.y_val)
    assert len(whole.y_test) == 10_000 and subset.protocol is None
    assert torch.equal(whole.x_test[whole.protocol], subset.x_test)  # the same 100 images
    assert torch.equal(whole.y_test[whole.protocol], subset.y_test)
    assert torch.bincount(whole.y_test).tolist() == [1000] * 10


def test_a_whole_test_split_result_reports_the_protocol_subset_beside_it(
        small_settings, small_net_factory):
    settings = dataclasses.replace(small_settings, full_test=True, test_size=20)
    ws = prepare(settings, progress=False, log=lambda _m: None)
    assert ws.splits.protocol is not None and len(ws.splits.protocol) == 20
    # the synthetic set's whole test split is its protocol subset; score half of it as one
    ws.splits.protocol = torch.arange(0, len(ws.splits.y_test), 2)
    result, model = evaluate_module(small_net_factory, ws, Budget(1, 0), split="test",
                                    log=lambda _m: None)
    whole, part = score(model, ws, "test"), score(model, ws, "protocol")
    assert (result.clean_acc, result.adv_acc) == (whole.clean, whole.adv)
    assert result.protocol == {"fitness": part.fitness, "clean_acc": part.clean,
                               "adv_acc": part.adv}
    idx = ws.splits.protocol
    from nas.evaluation.training import predict

    by_hand = float((predict(model, ws.splits.x_test[idx]) == ws.splits.y_test[idx])
                    .float().mean())
    assert part.clean == by_hand
    plain = prepare(small_settings, progress=False, log=lambda _m: None)
    no_protocol, _ = evaluate_module(small_net_factory, plain, Budget(1, 0), split="test",
                                     log=lambda _m: None)
    assert no_protocol.protocol is None and "protocol" not in no_protocol.to_dict()
