"""``nas.report`` on a real tiny search (``nas.evolve --preset smoke``) and on bad input."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nas import report
from nas.cli import run
from nas.errors import UserError
from nas.reporting.runview import child_files, finalist_genome, generation_stats, load_run

SECTIONS = {"run", "progress", "population", "front", "transfer", "fooling", "ig", "extra",
            "stages"}


class Page(HTMLParser):
    """Collects section ids, img sources and table count of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(str(a["id"]))
        elif tag == "img":
            self.images.append(str(a["src"]))
        elif tag == "table":
            self.tables += 1


def parse(page: Path) -> Page:
    p = Page()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def assert_images_resolve(page: Path, images: list[str]) -> None:
    """Every img is an embedded PNG or a PNG file beside the page."""
    for src in images:
        if src.startswith("data:image/png;base64,"):
            assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            target = page.parent / src
            assert target.is_file() and target.read_bytes()[:4] == b"\x89PNG", src


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished real search: synthetic data, he-ref reference, 3 members, 1 generation."""
    from nas.evolve import main as evolve

    parent = tmp_path_factory.mktemp("runs")
    assert evolve(["--preset", "smoke", "--run-dir", str(parent), "--name", "smoke",
                   "--no-progress", "--held-out", "he-baseline",
                   "--generations", "1"]) == 0
    return parent / "smoke"


def test_full_report_has_every_section_and_image(smoke_run: Path, tmp_path: Path) -> None:
    # a nas.train-style metrics.json
    extra = next(smoke_run.glob("children/*/refined/metrics.json"))
    out = tmp_path / "report"
    rc = run(report.main, [str(smoke_run), "--out", str(out), "--ig-images", "2", "--ig-steps", "8",
                           "--attacks", "fgsm,pgd-linf", "--eval-size", "0", "--transfer-from",
                           "own", "--baselines", "he-baseline",
                           "--extra-metrics", str(extra), "--no-progress", "--full"])
    assert rc == 0
    page = parse(out / "index.html")
    assert set(page.sections) == SECTIONS
    # progress, replacements, spectra, one drawing per finalist, front, hypervolume, transfer,
    # fooling, IG
    view = load_run(smoke_run)
    assert len(page.images) == 3 + len(view.finalists) + 2 + 3
    assert all(src.startswith("data:image/png;base64,") for src in page.images)  # self-contained
    assert_images_resolve(out / "index.html", page.images)
    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    names = {"reference", "ref. arch+CE", "ref. arch+GM", "he-baseline+gm"}
    names |= {f"evolved #{i}" for i in range(1, len(view.finalists) + 1)}
    assert set(models["accuracy"]) == names
    for name, row in models["accuracy"].items():  # every network against the held-out source
        assert set(row) == {"clean", "adv", "fitness", "held-out he-baseline"}, name
        assert row["fitness"] == min(row["clean"], row["adv"])
    assert set(models["fooling"]) == {"fgsm", "pgd-linf"}
    for row in models["fooling"].values():
        for r in row.values():
            assert 0 <= r["fooled"] <= r["eligible"] <= 32  # smoke preset: 32 test images
    assert models["ig"]["reference"]["distance"] == [0.0, 0.0]
    for name, r in models["ig"].items():
        assert len(r["distance"]) == 2 and all(0.0 <= d <= 1.0 for d in r["distance"]), name
    assert len(models["extra"]) == 1 and models["extra"][0]["clean_acc"] is not None
    assert len(results["generations"]) == len(view.generations)
    front = results["front"]
    assert {p["id"] for p in front["points"]} <= set(view.children)
    assert front["front"] and [h["generation"] for h in front["hypervolume"]] == [0, 1]


def test_baselines_over_budget_are_left_out_then_reused_from_the_cache(
        smoke_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))  # no baseline cached yet
    flags = ["--ig-images", "1", "--ig-steps", "4", "--skip-transfer", "--no-progress"]

    def build(name: str, *extra: str) -> dict:
        assert run(report.main,
                   [str(smoke_run), "--out", str(tmp_path / name), *flags, *extra]) == 0
        return json.loads((tmp_path / name / "results.json").read_text())["models"]

    lean = build("lean", "--budget", "0")
    err = capsys.readouterr().err
    assert "ref. arch+CE" not in lean["accuracy"] and "ref. arch+GM" not in lean["accuracy"]
    assert sum("left out" in n and "--full" in n for n in lean["notes"]["transfer"]) == 2
    # one line per stage with its measured time, and the same stages in results.json
    for stage in ("read the run", "baselines", "finalists", "accuracies", "integrated gradients"):
        assert f"stage {stage}: " in err and " s\n" in err
        assert any(k.startswith(stage) for k in lean["timings"])
    build("full", "--full")  # trains and caches both baselines
    capsys.readouterr()
    again = build("again", "--budget", "0")
    assert {"ref. arch+CE", "ref. arch+GM"} <= set(again["accuracy"])
    assert "training" not in capsys.readouterr().err  # reused from the cache


def test_ce_copies_train_each_finalist_architecture_anew_and_are_cached(
        smoke_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import torch

    from nas.reporting import models as report_models

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    flags = ["--ig-images", "0", "--skip-transfer", "--no-progress", "--ce-copies"]
    nets: dict[str, torch.nn.Module] = {}
    real = report_models.baselines

    def keep(*args, **kwargs):  # the trained networks, to compare them with the finalists
        out = real(*args, **kwargs)
        nets.update(out)
        return out

    monkeypatch.setattr(report_models, "baselines", keep)
    assert run(report.main, [str(smoke_run), "--out", str(tmp_path / "a"), *flags,
                             "--full"]) == 0
    view = load_run(smoke_run)
    copies = {f"evolved #{i}+CE" for i in range(1, len(view.finalists) + 1)}
    models = json.loads((tmp_path / "a" / "results.json").read_text())["models"]
    assert copies <= set(models["accuracy"])
    assert "training" in capsys.readouterr().err
    for rank, f in enumerate(view.finalists, start=1):
        weights = child_files(view, str(f["id"]))[1]
        evolved = torch.load(weights, weights_only=True)
        copy = nets[f"evolved #{rank}+CE"].state_dict()
        assert set(copy) == set(evolved) and all(copy[k].shape == evolved[k].shape
                                                 for k in copy)  # the same architecture
        assert any(not torch.equal(copy[k], evolved[k]) for k in copy
                   if copy[k].is_floating_point())  # trained anew, not the finalist's weights
    assert run(report.main, [str(smoke_run), "--out", str(tmp_path / "b"), *flags,
                             "--budget", "0"]) == 0
    again = json.loads((tmp_path / "b" / "results.json").read_text())["models"]
    assert copies <= set(again["accuracy"]) and "training" not in capsys.readouterr().err


def test_compare_puts_another_run_s_best_beside_and_refuses_runs_evaluated_otherwise(
        smoke_run: Path, tmp_path: Path, capsys) -> None:
    from nas.evolve import main as evolve

    common = ["--preset", "smoke", "--run-dir", str(tmp_path), "--no-progress",
              "--held-out", "he-baseline", "--generations", "1"]
    assert evolve([*common, "--name", "random", "--strategy", "random"]) == 0
    assert evolve([*common, "--name", "other-attack", "--attack", "fgsm"]) == 0
    flags = ["--ig-images", "0", "--skip-transfer", "--no-progress", "--budget", "0"]
    out = tmp_path / "report"
    assert run(report.main, [str(smoke_run), "--out", str(out), *flags,
                             "--compare", str(tmp_path / "random")]) == 0
    accuracy = json.loads((out / "results.json").read_text())["models"]["accuracy"]
    best = load_run(tmp_path / "random").finalists[0]
    row = accuracy["random best"]
    assert row["clean"] == pytest.approx(best["test"]["clean_acc"], abs=1e-6)  # its own weights
    assert set(row) == set(accuracy["evolved #1"])  # the same columns, held-out ones included
    capsys.readouterr()
    assert run(report.main, [str(smoke_run), "--out", str(tmp_path / "no"), *flags,
                             "--compare", str(tmp_path / "other-attack")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ" in err[0] and not (tmp_path / "no").exists()
    assert run(report.main, [str(smoke_run), "--out", str(tmp_path / "no"), *flags,
                             "--compare", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "no").exists()


def test_log_only_report_links_images_beside_the_page(smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    from nas.reporting.build import build_report
    from nas.reporting.options import ReportOptions

    opts = ReportOptions(run_dir=str(smoke_run), out=str(out), embed=False)
    page_path = build_report(opts, models=False)
    page = parse(page_path)
    assert page.sections == ["run", "progress", "population", "front"]
    assert page.images and not any(s.startswith("data:") for s in page.images)
    assert_images_resolve(page_path, page.images)
    stats = generation_stats(load_run(smoke_run))
    assert [s["generation"] for s in stats] == [0, 1]
    assert all(s["fitness_best"] >= s["fitness_mean"] for s in stats)


def test_bad_input_is_one_line_and_writes_nothing(smoke_run: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing"
    assert run(report.main, [str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(smoke_run / "config.json", empty / "config.json")
    (empty / "events.jsonl").write_text('{"type": "run_started", "seed": 0}\n')
    assert run(report.main, [str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no results" in err[0]
    assert not (empty / "report").exists()
    for flags in (["--transfer-from", "alexnet"], ["--attacks", "nope"],
                  ["--extra-metrics", str(missing)],
                  ["--baselines", "lenet"], ["--ig-steps", "0"]):
        assert run(report.main, [str(smoke_run), "--out", str(tmp_path / "x"), *flags]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_population_is_replayed_when_generation_lines_carry_none(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"config": {"search": {}, "fitness": {}}}))

    def child(cid: str, gen: int, fit: float) -> dict:
        return {"type": "child_finished", "id": cid, "generation": gen,
                "spectrum": [gen, 0, 0, 0, 1],
                "metrics": {"fitness": fit, "clean_acc": fit + 0.1, "adv_acc": fit}}

    events = [child("a", 0, 0.1), child("b", 0, 0.2),
              {"type": "generation_finished", "generation": 0},
              child("c", 1, 0.5),
              {"type": "replacement", "generation": 1, "id": "c", "replaced": "a"},
              {"type": "generation_finished", "generation": 1}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n"
                                                  for e in events) + '{"type": "chi')
    view = load_run(run_dir)  # the torn last line is ignored
    assert [g["population"] for g in view.generations] == [["a", "b"], ["c", "b"]]
    assert view.replacements == {1: 1}
    assert [f["id"] for f in view.finalists] == ["c", "b"] and not view.finished
    stats = generation_stats(view)
    assert stats[1]["fitness_best"] == 0.5 and stats[1]["fitness_mean"] == pytest.approx(0.35)


def test_finalist_spec_resolves_to_genome_files(smoke_run: Path) -> None:
    view = load_run(smoke_run)
    best = finalist_genome(f"{smoke_run}:best")
    assert best == smoke_run / "children" / view.finalists[0]["id"] / "genome.json"
    assert (finalist_genome(f"{smoke_run}:2")
            == smoke_run / "children" / view.finalists[1]["id"] / "genome.json")
    assert finalist_genome("he-ref") is None
    with pytest.raises(UserError, match="no finalist"):
        finalist_genome(f"{smoke_run}:g999-c999")


def test_nas_train_accepts_a_run_finalist(smoke_run: Path) -> None:
    import torch

    from nas.evaluation.data import dataset_info
    from nas.networks import resolve_architecture

    label, factory = resolve_architecture(f"{smoke_run}:best", dataset_info("synthetic"))
    assert label == f"{smoke_run}:best"
    net = factory()
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_a_runs_table6_is_a_section_of_its_report(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    from nas.reporting.build import build_report
    from nas.reporting.options import ReportOptions
    from nas.table6 import main as table6

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    assert table6([str(run), "--epochs", "1", "--replicates", "2", "--rows",
                   "Ref+GM,search best,Ref+JPEG", "--white-box-size", "8", "--device", "cpu",
                   "--no-progress"]) == 0
    out = tmp_path / "r"
    page_path = build_report(ReportOptions(run_dir=str(run), out=str(out), embed=False),
                             models=False)
    page = parse(page_path)
    assert page.sections[-1] == "table6"
    text = page_path.read_text(encoding="utf-8")
    assert "Means over 2 replicates" in text and "Ref+JPEG - Ref+GM" in text
    assert "search best" in text and "(n=1)" in text  # the finalist is trained once
    assert_images_resolve(page_path, page.images)
    assert (out / "table6-differences.png").is_file()
    # an unreadable table is one note, not a failed report
    (run / "table6" / "table6.json").write_text("{not json")
    text = build_report(ReportOptions(run_dir=str(run), out=str(out), embed=False),
                        models=False).read_text(encoding="utf-8")
    assert "is unreadable" in text and "python -m nas.table6" in text
