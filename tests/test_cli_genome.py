"""``python -m nas.genome``: every subcommand in-process, one through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genome as gn
from nas.cli import run
from nas.genome import build_parser, main
from search_spaces import named_genome

ROOT = Path(__file__).resolve().parents[1]



def test_every_flag_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"


def test_sample_mutate_validate(tmp_path, capsys):
    g, c = tmp_path / "g.json", tmp_path / "c.json"
    assert main(["sample", "--seed", "3", "--input-shape", "3x32x32", "--out", str(g)]) == 0
    assert gn.check_genome(gn.load(g), input_shape=(3, 32, 32)) == []
    assert main(["mutate", str(g), "--seed", "1", "--count", "4", "--out", str(c)]) == 0
    out = capsys.readouterr().out
    assert "applied" in out and gn.canonical_hash(gn.load(c)) in out
    assert gn.canonical_hash(gn.load(c)) != gn.canonical_hash(gn.load(g))
    assert main(["validate", str(c)]) == 0
    assert "valid" in capsys.readouterr().out
    again = tmp_path / "again.json"
    main(["sample", "--seed", "3", "--input-shape", "3x32x32", "--out", str(again)])
    assert again.read_text() == g.read_text()  # same seed, same genome


def test_validate_reports_one_line_per_problem(tmp_path, capsys):
    g = named_genome("he-ref")
    g.add_node("dead", op="pool", kind="max")
    g.add_edge("n1", "dead")
    g.nodes["n2"]["channels"] = 500
    path = tmp_path / "bad.json"
    gn.save(g, path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(gn.check_genome(g, max_channels=256, max_nodes=32)) >= 2
    assert any("not on any input->output path" in line for line in err)
    assert any("exceed the cap of 256" in line for line in err)


def test_describe_text_and_json(capsys):
    assert main(["describe", "he-baseline"]) == 0
    text = capsys.readouterr().out
    assert "spectrum conv 2, pool 1, sconv 2, sum 1, concat 1" in text
    assert main(["describe", "he-ref", "--json", "--input-shape", "3x32x32",
                 "--num-classes", "7"]) == 0
    d = json.loads(capsys.readouterr().out)
    g = named_genome("he-ref")
    assert d["hash"] == gn.canonical_hash(g)
    assert d["params"] == gn.count_params(g, (3, 32, 32), 7)
    assert d["macs"] == gn.count_macs(g, (3, 32, 32), 7)
    assert d["spectrum"] == {"conv": 0, "pool": 0, "sconv": 3, "sum": 2, "concat": 1}
    assert [n["shape"] for n in d["nodes"]][0] == [3, 32, 32]


def test_export_with_weights(tmp_path, capsys):
    g = named_genome("he-baseline")
    net = gn.compile_genome(g, mean=0.5, std=0.5).eval()
    torch.save(net.state_dict(), tmp_path / "trained.pt")
    out = tmp_path / "exp" / "net.py"
    assert main(["export", "he-baseline", "--out", str(out),
                 "--weights", str(tmp_path / "trained.pt"), "--mean", "0.5", "--std", "0.5"]) == 0
    namespace: dict = {"__file__": str(out)}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    model = namespace["load_model"]()
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(model(x), net(x), atol=1e-6)
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "wrong.pt")
    assert run(main, ["export", "he-ref", "--out", str(tmp_path / "x.py"), "--weights",
                      str(tmp_path / "wrong.pt")]) == 2
    assert "do not fit the architecture" in capsys.readouterr().err
    assert not (tmp_path / "x.py").exists()


def test_draw_writes_a_png(tmp_path):
    out = tmp_path / "g.png"
    assert main(["draw", "he-ref", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["describe", "missing.json"], "genome file 'missing.json' does not exist"),
     (["describe", "resnet"], "unknown genome 'resnet'; valid: he-baseline, he-ref"),
     (["validate", "BAD"], "not valid JSON"),
     (["sample", "--seed", "0", "--input-shape", "28x28", "--out", "x.json"], "CxHxW"),
     (["mutate", "he-ref", "--seed", "0", "--count", "0", "--out", "x.json"],
      "--count: must be an integer >= 1")],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BAD").write_text("{oops")
    assert run(main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_subprocess_validate_invalid_file(tmp_path):
    path = tmp_path / "cyclic.json"
    g = named_genome("he-ref")
    g.add_edge("n4", "n2")
    gn.save(g, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nas.genome", "validate", str(path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "genome has a cycle" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nas.genome", "describe", "he-ref"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and gn.canonical_hash(named_genome("he-ref")) in proc.stdout
