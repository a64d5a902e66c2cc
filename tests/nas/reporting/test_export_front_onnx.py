"""``nas.export --front`` and ``--onnx``: the front's children, ONNX files beside the modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from search_toys import run_toy

import genome as gn
from nas.cli import run
from nas.evaluation.data import dataset_info
from nas.export import main
from nas.reporting.exporting import module_name
from nas.search.rundir import read_events


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    """A finished toy search where every trained child has (random) weights."""
    run_dir = tmp_path_factory.mktemp("front") / "run"
    run_toy(run_dir, generations=1)
    info = dataset_info("synthetic")
    events, _ = read_events(run_dir / "events.jsonl")
    children = [e for e in events if e["type"] == "child_finished" and not e["reused"]]
    for k, ev in enumerate(children):
        torch.manual_seed(k)
        genome = gn.load(run_dir / "children" / ev["id"] / "genome.json")
        model = gn.compile_genome(genome, **info.network_args())
        torch.save(model.state_dict(), run_dir / "children" / ev["id"] / "weights.pt")
    return run_dir, children


def test_front_exports_exactly_the_non_dominated_children(weighted_run, tmp_path):
    run_dir, children = weighted_run
    # The toy fitness gives clean = adv and size 0 to every child: the front is the set of
    # children with the highest accuracy.
    best = max(c["metrics"]["clean_acc"] for c in children)
    expected = {c["id"] for c in children if c["metrics"]["clean_acc"] == best}
    out = tmp_path / "out"
    assert main([str(run_dir), "--out", str(out), "--front"]) == 0
    assert {p.name for p in out.glob("net_*.py")} == {f"{module_name(i)}.py" for i in expected}


def test_onnx_beside_the_module_gives_its_logits(weighted_run, tmp_path, caplog):
    ort = pytest.importorskip("onnxruntime")
    run_dir, children = weighted_run
    cid = children[0]["id"]
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        assert main([str(run_dir), "--out", str(out), "--ids", cid, "--onnx"]) == 0
    name = module_name(cid)
    assert (out / f"{name}.py").is_file() and (out / f"{name}.onnx").is_file()
    assert "opset" in caplog.text
    info = dataset_info("synthetic")
    genome = gn.load(out / f"{name}.genome.json")
    model = gn.compile_genome(genome, **info.network_args())
    model.load_state_dict(torch.load(out / f"{name}.pt", weights_only=True))
    x = torch.rand(3, *info.input_shape, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(session.run(None, {"pixels": x.numpy()})[0], expected, atol=1e-4)
    assert f"{name}.onnx" in (out / "README.md").read_text()


def test_onnx_without_the_extra_exits_2_with_one_line(weighted_run, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnx", "onnxscript") else real(name, *a))
    run_dir, children = weighted_run
    out = tmp_path / "out"
    assert run(main, [str(run_dir), "--out", str(out), "--ids", children[0]["id"], "--onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "onnx, onnxscript" in err and "[onnx]" in err
    assert not out.exists()  # checked before anything is written


def test_front_flag_excludes_all_and_ids(weighted_run, tmp_path, capsys):
    run_dir, _ = weighted_run
    assert run(main, [str(run_dir), "--out", str(tmp_path / "x"), "--front", "--all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not allowed with argument --front" in err[0]
    assert not (tmp_path / "x").exists()
