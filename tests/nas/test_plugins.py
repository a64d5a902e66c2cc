"""Plugins: an installed distribution's entry points and ``--plugin`` modules register
defenses (and datasets, references) that every command and every worker process finds;
``--list`` says where each name came from; a plugin that fails to import is one line, exit 2."""

from __future__ import annotations

import json
import re
import sys

import pytest

from nas.cli import run
from nas.evolve import main as evolve_main
from nas.train import main as train_main

PLUGIN = '''
import torch.nn.functional as F

from defenses import Defense, DefenseOutput, register_defense
from nas.evaluation.data import DatasetInfo, register_dataset, synthetic_images


@register_defense("halfce")
class HalfCE(Defense):
    """Half the cross-entropy: a defense only this plugin has."""

    def __init__(self, *, scale: float = 0.5) -> None:
        self.scale = scale

    def loss(self, model, batch, ctx):
        logits = model(batch.x)
        ce = F.cross_entropy(logits, batch.y)
        return DefenseOutput(self.scale * ce, logits, {"ce": ce.item()})


@register_dataset(DatasetInfo("stripes4", 4, (1, 16, 16), (0.5,), (0.25,)))
def stripes4(*, cache, data_root, sizes, seed, log=print):
    import torch

    g = torch.Generator().manual_seed(seed)
    x_tr, y_tr = synthetic_images(sizes[0], 4, (1, 16, 16), g)
    x_te, y_te = synthetic_images(sizes[1], 4, (1, 16, 16), g)
    return x_tr, y_tr, x_te, y_te
'''


def install(site, module: str, body: str, dist: str = "nas-halfce-plugin") -> None:
    """A distribution as pip leaves it in site-packages: the module and a dist-info folder whose
    ``entry_points.txt`` registers it under the ``nas.defenses`` and ``nas.datasets`` groups."""
    (site / f"{module}.py").write_text(body)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nas.defenses]\nhalfce = {module}\n\n"
                                           f"[nas.datasets]\nstripes4 = {module}\n")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """Registries that have not looked at entry points yet (restored afterwards), and a
    site folder on ``sys.path``."""
    import nas.plugins
    from nas.plugins import registries

    for registry in registries().values():
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_origins", dict(registry._origins))
        monkeypatch.setattr(registry, "_plugins_loaded", registry.group is None)
        monkeypatch.setattr(registry, "_loaded_points", set())
    monkeypatch.setattr(nas.plugins, "_LOADED", set())
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:  # the plugin modules: imported afresh next time
        if getattr(sys.modules[name], "__file__", None) and str(site) in sys.modules[name].__file__:
            del sys.modules[name]


def test_an_installed_plugin_is_listed_with_its_distribution_and_found_by_defense_in_workers(
        fresh, tmp_path, capsys, monkeypatch):
    from joblib.externals.loky import get_reusable_executor

    install(fresh, "halfce_plugin", PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(fresh))  # the worker processes' environment
    get_reusable_executor().shutdown(wait=True)  # workers of earlier tests lack the site folder
    assert run(evolve_main, ["--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"halfce\s+entry point nas-halfce-plugin", out), out
    assert re.search(r"stripes4\s+entry point nas-halfce-plugin", out)
    assert re.search(r"gm\s+built-in", out)
    code = run(evolve_main, ["--preset", "smoke", "--defense", "halfce", "--dataset", "stripes4",
                             "--train-size", "40", "--val-size", "20", "--test-size", "20",
                             "--generations", "1", "--workers", "2", "--run-dir",
                             str(tmp_path / "runs"), "--name", "ep", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    events = [json.loads(x) for x in (tmp_path / "runs" / "ep" / "events.jsonl").read_text()
              .splitlines()]
    children = [e for e in events if e["type"] == "child_finished"]
    assert children and all(e["metrics"]["status"] == "ok" for e in children)


def test_a_plugin_module_is_recorded_and_imported_again_on_resume(fresh, tmp_path, capsys):
    (fresh / "my_halfce.py").write_text(PLUGIN)
    argv = ["--preset", "smoke", "--plugin", "my_halfce", "--defense", "halfce",
            "--generations", "1", "--population", "2", "--run-dir", str(tmp_path / "runs"),
            "--name", "p", "--no-progress"]
    assert run(evolve_main, argv) == 0
    capsys.readouterr()
    cfg = json.loads((tmp_path / "runs" / "p" / "config.json").read_text())["config"]
    assert cfg["fitness"]["plugins"] == ["my_halfce"]
    assert run(evolve_main, ["--resume", str(tmp_path / "runs" / "p"), "--no-progress"]) == 0
    assert run(evolve_main, ["--list", "--plugin", "my_halfce"]) == 0
    assert re.search(r"halfce\s+--plugin my_halfce", capsys.readouterr().out)


def test_an_entry_point_that_fails_to_import_is_one_line_and_exit_2(fresh, capsys):
    install(fresh, "broken_plugin", "import no_such_dependency_here\n", dist="broken-dist")
    code = run(evolve_main, ["--list"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "broken-dist" in err and "No module named 'no_such_dependency_here'" in err


@pytest.mark.parametrize("main", [evolve_main, train_main], ids=["evolve", "train"])
def test_a_plugin_module_that_fails_to_import_is_one_line_and_exit_2(fresh, tmp_path, capsys,
                                                                    main):
    (fresh / "bad_plugin.py").write_text("raise RuntimeError('plugin is broken')\n")
    argv = (["--preset", "smoke", "--run-dir", str(tmp_path / "runs")] if main is evolve_main
            else ["he-ref", "--dataset", "synthetic", "--epochs", "1"])
    code = run(main, [*argv, "--plugin", "bad_plugin"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "plugin bad_plugin (--plugin) failed to import: RuntimeError: plugin is broken" in err
    assert not (tmp_path / "runs").exists()


def test_the_api_takes_plugins_file_datasets_and_reference_forms(fresh, tmp_path):
    import numpy as np
    import torch

    from nas import api
    from nas.evaluation.data import synthetic_images

    (fresh / "my_halfce.py").write_text(PLUGIN)
    x, y = synthetic_images(6, 3, (1, 12, 12), torch.Generator().manual_seed(0))
    np.savez(tmp_path / "d.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=x.numpy(),
             y_test=y.numpy())
    metrics = api.train("he-ref", plugins=["my_halfce"], defense="halfce",
                        dataset=f"npz:{tmp_path / 'd.npz'}", train_size=9, val_size=3,
                        test_size=6, reference="torchvision:resnet18", reference_epochs=1,
                        steps=1, epochs=1, cache_dir=str(tmp_path / "cache"))
    assert metrics["status"] == "ok" and 0 <= metrics["fitness"] <= 1
    assert metrics["params"] > 0
