"""``python -m nas.export``: standalone modules that load in a fresh process, same logits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from search_toys import run_toy

import genome as gn
from nas.cli import run
from nas.evaluation.data import dataset_info
from nas.export import main
from nas.reporting.exporting import module_name


def compiled(run_dir, cid, weights):
    info = dataset_info("synthetic")
    genome = gn.load(run_dir / "children" / cid / "genome.json")
    model = gn.compile_genome(genome, **info.network_args())
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished toy search whose finalists get (random) trained weights."""
    run_dir = tmp_path_factory.mktemp("exp") / "run"
    final = run_toy(run_dir, generations=1)
    info = dataset_info("synthetic")
    for k, member in enumerate(final["population"]):
        torch.manual_seed(k)
        genome = gn.load(run_dir / "children" / member["id"] / "genome.json")
        model = gn.compile_genome(genome, **info.network_args())
        torch.save(model.state_dict(),
                   run_dir / "children" / member["id"] / "refined" / "weights.pt")
    return run_dir, [m["id"] for m in final["population"]]


def test_exported_modules_give_the_same_logits_in_a_fresh_process(trained_run, tmp_path):
    run_dir, ids = trained_run
    out = tmp_path / "out"
    assert main([str(run_dir), "--out", str(out)]) == 0
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch, importlib; sys.path.insert(0, sys.argv[1]); "
              "x = torch.load(sys.argv[2]); "
              "[torch.save(importlib.import_module(n).load_model()(x), sys.argv[3] + n + '.pt') "
              "for n in sys.argv[4:]]")
    names = [module_name(i) for i in ids]
    subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "x.pt"),
                    str(tmp_path) + "/", *names], check=True, timeout=120, cwd=tmp_path)
    for cid, name in zip(ids, names, strict=True):
        expected = compiled(run_dir, cid, run_dir / "children" / cid / "refined" / "weights.pt")(x)
        got = torch.load(tmp_path / f"{name}.pt")
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert gn.canonical_hash(gn.load(out / f"{name}.genome.json")) == \
            gn.canonical_hash(gn.load(run_dir / "children" / cid / "genome.json"))
    text = (out / "README.md").read_text()
    assert "load_model" in text and all(f"`{n}`" in text for n in names)
    refined = {json.loads(x)["id"]: json.loads(x) for x in (run_dir / "events.jsonl").read_text()
               .splitlines() if '"refined"' in x}
    assert f"{refined[ids[0]]['metrics']['fitness']:.4f}" in text


def test_unknown_ids_and_missing_weights_write_nothing(trained_run, tmp_path, capsys):
    run_dir, ids = trained_run
    assert run(main, [str(run_dir), "--out", str(tmp_path / "a"), "--ids", "g999-c000"]) == 2
    assert "g999-c000" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert run(main, [str(run_dir), "--out", str(tmp_path / "b"), "--all"]) == 2
    assert "no trained weights" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert run(main, [str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2
    assert "does not exist" in capsys.readouterr().err
