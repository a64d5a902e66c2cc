"""ONNX export: onnxruntime gives the PyTorch module's logits, for any batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import genome as gn
from nas.reporting.onnx import (
    OnnxUnavailable,
    adaptive_max_pool2d_static,
    check_available,
    export_onnx,
)
from search_spaces import DEFAULT_SPACE, named_genome


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (7, 9), (1, 1), (2, 3), (5, 2)])
def test_adaptive_max_pool_decomposition_equals_pytorch(size):
    x = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    x[0, 0, :3, :3] = 1.0  # ties: the first maximum in row-major order wins, as in PyTorch
    values, indices = F.adaptive_max_pool2d(x, size, return_indices=True)
    got_values, got_indices = adaptive_max_pool2d_static(x, list(size))
    assert torch.equal(got_values, values)
    assert torch.equal(got_indices, indices)


def _mutated(op: str) -> object:
    """he-baseline after mutations that add a ``op`` skip block (and shrink maps unevenly)."""
    g, applied = gn.mutate(named_genome("he-baseline"), np.random.default_rng(1),
                           limits=DEFAULT_SPACE.limits(), count=3,
                           operators=[f"add_{op}", "add_pool", "add_sconv"])
    assert f"add_{op}" in applied
    return g


CASES = {
    "he-ref": (lambda: named_genome("he-ref"), (3, 32, 32)),
    # 28 -> 14 -> 7 -> 4: its skips pool 7x7 maps adaptively to 4x4 (sizes that do not divide)
    "he-baseline": (lambda: named_genome("he-baseline"), (1, 28, 28)),
    "mutated-sum": (lambda: _mutated("sum"), (1, 28, 28)),
    "mutated-concat": (lambda: _mutated("concat"), (1, 28, 28)),
}


# An export takes seconds (torch.export + the ONNX converter): the default tier exports
# he-baseline, which has a sum and a concat skip over sizes that do not divide; the slow tier
# (``pytest -m slow``) the other networks.
@pytest.mark.parametrize("case",
                         [c if c == "he-baseline" else pytest.param(c, marks=pytest.mark.slow)
                                  for c in CASES])
def test_onnxruntime_logits_equal_pytorch(case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    make, shape = CASES[case]
    g = make()
    torch.manual_seed(0)
    net = gn.compile_genome(g, num_classes=10, input_shape=shape, mean=[0.4] * shape[0],
                            std=[0.3] * shape[0])
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial BN statistics, so eval-mode BN is really exported
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    net.eval()
    path = export_onnx(net, tmp_path / "net.onnx", input_shape=shape)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    for batch in (1, 5):  # neither is the batch size of the export
        x = torch.rand(batch, *shape, generator=gen)
        got = session.run(None, {"pixels": x.numpy()})[0]
        with torch.no_grad():
            expected = net(x).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_missing_extra_is_one_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(OnnxUnavailable, match=r"onnxruntime.*\[onnx\]"):
        check_available()
