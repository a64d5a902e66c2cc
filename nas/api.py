"""The Python API: the same searches, runs, exports and trainings as the commands, for notebooks
and scripts. The commands are thin wrappers over the same library functions (``nas.evolve`` ->
:func:`nas.search.driver.evolve`, ``nas.export`` -> :func:`nas.reporting.exporting.export_run`,
``nas.report`` -> :func:`nas.reporting.build.build_report`, ``nas.train`` ->
:func:`nas.networks.train_architecture`); this module imports no command.

Example (the ``smoke`` preset: synthetic data, seconds)::

    from nas import api

    run = api.search("smoke", run_dir="runs", name="demo", generations=1)
    print(run.best["id"], run.best["test"]["fitness"])   # chosen by validation fitness
    for row in run.history:                              # best / mean fitness per generation
        print(row["generation"], row["fitness_best"])
    print(len(run.front().front), "children on the trade-off front")
    run.export("evolved/", which="best")                 # net_<id>.py + .pt + genome
    metrics = api.train("he-baseline", reference="he-ref", defense="gm", dataset="synthetic",
                        train_size=60, val_size=30, test_size=30, epochs=1)
    print(metrics["fitness"])

Keys are the command line's flag names with ``_`` (``population``, ``reference``,
``defense_args``, ``workers``, ...), layered as on the command line: defaults < ``preset`` <
``config_file`` < keys. Bad values raise :class:`nas.errors.UserError` with the same message
the commands print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.reporting.runview import RunView, generation_stats, load_run
from nas.search import config as cfgmod
from nas.search.config import EvolveConfig
from nas.search.driver import evolve, new_run_path
from nas.search.rundir import load_config

__all__ = ["Run", "configure", "open_run", "resume", "search", "train"]


def _silent(_line: str) -> None:
    pass


def configure(preset: str | None = None, *, config_file: str | None = None,
              run_dir: str = "runs", name: str | None = None, **keys: Any) -> EvolveConfig:
    """The resolved configuration of a new search (nothing is run or written).

    Args:
        preset: ``paper`` (default), ``quick``, ``cpu``, ``smoke``, ... (``nas.search.config``).
        config_file: a JSON file of settings (flat keys, or a run's ``config.json``).
        run_dir: parent folder of run folders.
        name: run folder name (default ``<date>-<time>-<dataset>-<reference>-s<seed>``).
        **keys: settings by their flag names with ``_``.
    """
    cfg = cfgmod.resolve(keys, preset=preset, config_file=config_file, run_dir="")
    return dataclasses.replace(cfg, run_dir=new_run_path(run_dir, name, cfg))


def search(preset: str | None = None, *, config_file: str | None = None, run_dir: str = "runs",
           name: str | None = None, progress: bool = False,
           log: Callable[[str], None] = _silent, **keys: Any) -> Run:
    """Run a whole search (as ``python -m nas.evolve``) and return its :class:`Run`."""
    cfg = configure(preset, config_file=config_file, run_dir=run_dir, name=name, **keys)
    evolve(cfg, progress=progress, log=log)
    return open_run(cfg.run_dir)


def resume(path: str | Path, *, progress: bool = False, log: Callable[[str], None] = _silent,
           **execution: Any) -> Run:
    """Continue an interrupted search (as ``nas.evolve --resume``); only execution keys
    (``workers``, ``backend``, ``scheduler``, ``progress``) may change."""
    path = str(path)
    cfg = cfgmod.resolve_resume(load_config(path), execution, preset=None, config_file=None,
                                run_dir=path)
    evolve(cfg, resume=True, progress=progress, log=log)
    return open_run(path)


def open_run(path: str | Path) -> Run:
    """A finished (or interrupted) run directory, read."""
    return Run(load_run(path))


@dataclasses.dataclass
class Run:
    """A run directory, read: its configuration, history, finalists, front; export."""

    view: RunView

    @property
    def path(self) -> Path:
        return Path(self.view.path)

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration (``search`` / ``fitness`` / ``execution``)."""
        return self.view.config

    @property
    def finalists(self) -> list[dict[str, Any]]:
        """The final population, best first by validation fitness (test fitness under the
        paper's ``fitness_split="test"``); each with ``id``, ``metrics`` and ``test``."""
        return self.view.finalists

    @property
    def best(self) -> dict[str, Any]:
        """The first of :attr:`finalists`."""
        if not self.view.finalists:
            raise UserError(f"{self.path} has no finalists yet")
        return self.view.finalists[0]

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per generation: best / mean fitness and clean / adversarial accuracies."""
        return generation_stats(self.view)

    @property
    def children(self) -> dict[str, dict[str, Any]]:
        """Every evaluated child by id (its ``child_finished`` event)."""
        return self.view.children

    def front(self, size: str = "params") -> Any:
        """The trade-off front over every evaluated child (``nas.reporting.front.Front``)."""
        from nas.reporting.front import run_front

        return run_front(self.path, size)

    def export(self, out: str | Path, *, which: str | Sequence[str] = "best",
               onnx: bool = False) -> list[Path]:
        """Export children as standalone modules (as ``python -m nas.export``).

        ``which``: ``"best"``, ``"all"`` (the final population), ``"front"`` or child ids.
        """
        from nas.reporting.exporting import export_run

        if which == "all":
            return export_run(self.path, out, all_=True, onnx=onnx)
        if which == "front":
            return export_run(self.path, out, front=True, onnx=onnx)
        ids = [self.best["id"]] if which == "best" else [which] if isinstance(which, str) \
            else list(which)
        return export_run(self.path, out, ids=ids, onnx=onnx)


    def report(self, out: str | Path | None = None, *, models: bool = True,
               log: Callable[[str], None] = _silent, **options: Any) -> Path:
        """Write the run's HTML report (as ``python -m nas.report``) and return the page.

        ``out``: the page's folder (default ``<run>/report``); ``models=False`` leaves out
        every section that needs a network (seconds); ``options``: the fields of
        :class:`nas.reporting.options.ReportOptions` (``ig_images``, ``baselines``, ``full``,
        ``compare``, ...).
        """
        from nas.reporting.build import build_report
        from nas.reporting.options import ReportOptions

        try:
            opts = ReportOptions(run_dir=str(self.path), out=str(out or self.path / "report"),
                                 **options)
        except TypeError as exc:
            raise UserError(f"invalid report options: {exc}") from None
        return build_report(opts, models=models, log=log)


def train(arch: str, *, epochs: int | None = None, max_epochs: int = 40, patience: int = 10,
          seed: int = 0, out_dir: str | None = None, progress: bool = False,
          log: Callable[[str], None] = _silent, **keys: Any) -> dict[str, Any]:
    """Train and evaluate one architecture on the test split (as ``python -m nas.train``).

    Args:
        arch: a reference name, a named genome, a genome JSON path or ``runs/<name>:best``.
        epochs: training epochs; ``None`` trains to the validation plateau (at most
            ``max_epochs``, stopping after ``patience`` epochs without improvement).
        seed: seed of the training.
        out_dir: where ``metrics.json`` and ``weights.pt`` go (``None``: nowhere).
        **keys: fitness settings (``dataset``, ``reference``, ``defense``, ``defense_args``,
            ``train_size``, ...; ``nas.evaluation.fitness.FitnessSettings``).

    Returns:
        The metrics (``fitness``, ``clean_acc``, ``adv_acc``, ``fooling_rate``, ``status``, ...).
    """
    from nas.evaluation.filedata import fold_image_size
    from nas.evaluation.fitness import Budget, FitnessSettings, check_names
    from nas.networks import train_architecture

    if "defense_args" in keys:
        keys["defense_args"] = tuple(sorted(dict(keys["defense_args"]).items()))
    values = fold_image_size(cfgmod.check_values({"defense": "gm", **keys}))
    try:
        settings = FitnessSettings(**values)
    except TypeError as exc:
        raise UserError(f"invalid settings: {exc}") from None
    check_names(settings)  # plugins first, then every name
    settings.training_recipe()
    if epochs is None and settings.val_size < 1:
        raise UserError("training to the validation plateau needs val_size > 0 (or give epochs)")
    budget = Budget(epochs or max_epochs, seed, patience=0 if epochs else patience)
    trained = train_architecture(arch, settings, budget, out_dir=out_dir, progress=progress,
                                 log=log)
    return trained.result.to_dict()
