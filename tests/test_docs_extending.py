"""docs/extending.md's three worked examples, run exactly as written, each in an empty folder.

An example is the part of the guide after ``<!-- example: NAME -->``: its ``python
file=PATH`` blocks are written to PATH, then the lines of its ``bash run`` blocks run in order,
each of which must exit 0. They run in this process (``python FILE`` as ``runpy``, ``python -m
nas.X`` as that command's ``main``) so the examples cost seconds, with the registries, the
loaded plugins and the example modules restored afterwards: what an example registers stays
in its test.
"""

from __future__ import annotations

import importlib
import json
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nas.cli import run

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"
_BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


def examples() -> dict[str, tuple[dict[str, str], list[str]]]:
    """``{name: ({file: text}, [command lines])}`` of the guide's examples."""
    out = {}
    parts = re.split(r"<!-- example: (\w+) -->", GUIDE.read_text())
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        files, commands = {}, []
        for lang, info, text in _BLOCK.findall(body):
            if "file=" in info:
                files[info.split("file=")[1].strip()] = text
            elif lang == "bash" and "run" in info.split():
                commands += [line for line in text.splitlines() if line.strip()]
        out[name] = (files, commands)
    return out


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty working folder on ``sys.path``, with the registries and plugins restored after."""
    import nas.plugins
    from nas.plugins import registries

    for registry in registries().values():
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_origins", dict(registry._origins))
    monkeypatch.setattr(nas.plugins, "_LOADED", set())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("my_", "make_", "train_my")):
            del sys.modules[name]


def run_example(name: str, folder: Path, capsys) -> list[Done]:
    files, commands = examples()[name]
    assert commands, f"example {name} runs nothing"
    for rel, text in files.items():
        (folder / rel).write_text(text)
    done = []
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "python"
        capsys.readouterr()
        if argv[1] == "-m":
            code = run(importlib.import_module(argv[2]).main, argv[3:])
        else:
            runpy.run_path(str(folder / argv[1]), run_name="__main__")
            code = 0
        out = capsys.readouterr()
        assert code == 0, f"{line}\n{out.err[-2000:]}"
        done.append(Done(code, out.out, out.err))
    return done


def test_the_guide_has_the_three_examples():
    assert set(examples()) == {"folder", "reference", "defense"}


def test_the_folder_dataset_example_searches_the_images_it_wrote(sandbox, capsys):
    tmp_path = sandbox
    run_example("folder", tmp_path, capsys)
    assert len(list((tmp_path / "my_images" / "train").iterdir())) == 3
    cfg = json.loads((tmp_path / "runs" / "my-images" / "config.json").read_text())
    assert cfg["config"]["fitness"]["dataset"] == "folder:my_images"
    final = json.loads((tmp_path / "runs" / "my-images" / "final.json").read_text())
    assert final["population"] and all(m["test"]["status"] == "ok" for m in final["population"])


def test_the_reference_checkpoint_example_evaluates_against_the_loaded_checkpoint(sandbox,
                                                                                    capsys):
    procs = run_example("reference", sandbox, capsys)
    out = procs[-1].stdout
    assert "module:my_reference:small_cnn: clean" in out and "status" in out
    assert re.search(r"status\s+ok", out), out


def test_the_defense_example_is_under_40_lines_listed_and_trains_children(sandbox, capsys):
    tmp_path = sandbox
    files, _ = examples()["defense"]
    assert len(files["my_defense.py"].strip().splitlines()) < 40
    procs = run_example("defense", tmp_path, capsys)
    assert re.search(r"gradreg\s+--plugin my_defense", procs[0].stdout), procs[0].stdout
    run = tmp_path / "runs" / "gradreg"
    cfg = json.loads((run / "config.json").read_text())["config"]["fitness"]
    assert cfg["defense"] == "gradreg" and cfg["plugins"] == ["my_defense"]
    children = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()
                if '"child_finished"' in x]
    assert children and all(c["metrics"]["status"] == "ok" for c in children)


@pytest.mark.parametrize("name", ["folder", "reference", "defense"])
def test_every_example_file_is_valid_python(name):
    for text in examples()[name][0].values():
        compile(text, name, "exec")
