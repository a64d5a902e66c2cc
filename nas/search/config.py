"""The resolved configuration of a search and its presets (STYLE.md §8).

Library code receives a frozen :class:`EvolveConfig`; it never sees an
``argparse.Namespace``. A configuration is resolved from four layers, later ones winning:

1. the built-in defaults (the paper's configuration, ``--preset paper``);
2. the chosen preset (``--preset quick`` / ``smoke``, or ``"preset"`` in the config file),
   with its tuning for the resolved dataset if it has one (:data:`PRESET_DATASETS`:
   ``--preset cpu --dataset mnist``);
3. a JSON config file (``--config FILE``): flat ``{"population": 4, "dataset": "mnist"}``
   or the ``config`` object of a run's ``config.json``;
4. the flags given explicitly on the command line.

Keys are flat names (the flag names with ``_``); :data:`SEARCH_KEYS`, :data:`EXEC_KEYS` and
every field of ``nas.evaluation.fitness.FitnessSettings`` say which section a key belongs to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.devices import check_device_setting, parse_devices
from nas.errors import UserError
from nasbase.values import (
    finite_float,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    unit_float,
)


@dataclass(frozen=True)
class SearchSettings:
    """What determines the search itself (paper §3.2, Algorithm 1, §4 implementation details).

    Attributes:
        population: s, candidates kept (paper: four or five; default 5).
        children: n, children per candidate per generation (paper: two).
        generations: g (paper: 50).
        min_distance: d, minimum pairwise spectrum distance (eq. 3) of the initial population (4).
        mutations_min: fewest mutation operators per child ("aggressive": 4).
        mutations_max: most mutation operators per child (5).
        epochs: training epochs of a child in generations 1-10 (paper: 20).
        epochs_step: epochs added every ``epochs_every`` generations (paper: +5 per 10).
        epochs_every: generations between epoch increments (10).
        refine_epochs: epochs the final population is trained for before the test report
            (paper: 1000).
        seed: run seed; every random draw derives from (seed, generation, child index).
        sequential: follow Algorithm 1 line by line instead of evaluating a whole generation
            in parallel (see docs/search.md).
        max_channels: channel cap of the search space (mutation limit).
        max_nodes: node cap of a genome (mutation limit).
        max_mmacs: cap on a genome's multiply-accumulates per image, in millions (sampling and
            mutation limit; 0 = none). A child's training time grows with its MACs, so this is
            what bounds the cost of the slowest child on a CPU.
        refine_patience: refinement stops after this many epochs without a better validation
            fitness (accuracy with the ``none`` defense) and keeps the best-on-validation
            weights (``refine_epochs`` is then the cap); 0 trains exactly ``refine_epochs``
            (the paper).
        refine_draws: the refinement trains each finalist this many times from independent
            seeds and keeps the draw with the highest validation fitness (1: one training, the
            paper); on MNIST GM's protection of one architecture is mostly the training draw
            (docs/lab-log.md). The report's baselines get the same number of draws.
        strategy: ``ga`` (Algorithm 1), ``random`` (random search over the same space, the
            same evaluation, the same number of evaluated children; a baseline) or ``aging``
            (regularized evolution, Real et al. 2019: each child replaces the population's
            oldest member; a baseline that ages lucky members out).
        early_reject: race each child against its replacement threshold (the fitness of its
            nearest member when it was mutated): scored on the fitness split after 1/3 and 2/3
            of its epochs, stopped with status ``rejected`` when below the threshold by more
            than ``reject_margin``; a rejected child never replaces (docs/search.md). With
            ``strategy="random"`` a sample's threshold is the population's worst fitness.
        reject_margin: how far below its threshold a child's fitness at a rung must be to stop it.
        inherit: a child starts from its parent's trained weights for every node the mutation
            left unchanged (op, parameters, input and output shapes); Lamarckian.
        init_samples: 0 (Algorithm 1 line 1: s random genomes) or K >= s: generation 0 trains K
            random genomes and the initial population is the s fittest of them at pairwise
            spectrum distance >= d (a warm start; each extra sample costs one child). With
            ``strategy="random"`` the population is the s fittest of the K, as random search
            keeps its population.
        reevaluate_margin: noise-aware selection (0: off, Algorithm 1 as written): when a
            child beats its nearest member by no more than this, the member is trained once
            more from a fresh seed before the comparison and its fitness becomes the mean of
            its draws (set it to the training-seed noise ``nas.fidelity`` measures).
        max_draws: the most trainings of one member under ``reevaluate_margin``.
        common_seeds: common random numbers: every child of a generation is trained from
            the same seed (data order, augmentation and attack draws), so the children it
            compares differ by architecture, not by luck.
        stagnation: G > 0: after G generations in a row in which no child replaced a member,
            the next generation's children are immigrants (fresh samples of the space)
            compared by Algorithm 1's rule; 0: off.
    """

    population: int = 5
    children: int = 2
    generations: int = 50
    min_distance: float = 4.0
    mutations_min: int = 4
    mutations_max: int = 5
    epochs: int = 20
    epochs_step: int = 5
    epochs_every: int = 10
    refine_epochs: int = 1000
    seed: int = 0
    sequential: bool = False
    max_channels: int = 256
    max_nodes: int = 40
    max_mmacs: float = 0.0
    refine_patience: int = 0
    refine_draws: int = 1
    strategy: str = "ga"
    early_reject: bool = False
    reject_margin: float = 0.1
    inherit: bool = False
    init_samples: int = 0
    reevaluate_margin: float = 0.0
    max_draws: int = 3
    common_seeds: bool = False
    stagnation: int = 0

    @property
    def warm_start(self) -> bool:
        """Whether generation 0 trains more than s candidates (``init_samples > population``)."""
        return self.init_samples > self.population

    def epochs_at(self, generation: int) -> int:
        """Training epochs of a child of ``generation`` (the initial population is generation 0)."""
        steps = max(0, generation - 1) // max(1, self.epochs_every)
        return self.epochs + self.epochs_step * steps

    def check(self) -> None:
        """Raise :class:`UserError` on settings no search can run with."""
        if self.population < 1 or self.children < 1 or self.generations < 0:
            raise UserError("population and children must be >= 1, generations >= 0")
        if not 1 <= self.mutations_min <= self.mutations_max:
            raise UserError("need 1 <= mutations_min <= mutations_max")
        if self.epochs < 1 or self.refine_epochs < 0 or self.min_distance < 0:
            raise UserError("epochs must be >= 1, refine_epochs and min_distance >= 0")
        if self.strategy not in STRATEGIES:
            raise UserError(f"must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}",
                            setting="strategy")
        if self.refine_patience < 0 or self.reject_margin < 0:
            raise UserError("refine_patience and reject_margin must be >= 0")
        if self.refine_draws < 1:
            raise UserError(f"must be at least 1, not {self.refine_draws}", setting="refine_draws")
        if self.stagnation and self.strategy != "ga":
            raise UserError(f"immigrants after stagnation are a rule of the GA; --strategy "
                            f"{self.strategy} has none (leave out --stagnation)",
                            setting="stagnation")
        if self.reevaluate_margin < 0 or self.max_draws < 1:
            raise UserError("reevaluate_margin must be >= 0 and max_draws >= 1")
        if self.reevaluate_margin > 0 and self.strategy != "ga":
            raise UserError(f"re-evaluating members is a selection rule of the GA; --strategy "
                            f"{self.strategy} has no replacement comparison (leave out "
                            "--reevaluate-margin)", setting="reevaluate_margin")
        if self.strategy == "aging" and self.early_reject:
            raise UserError("--strategy aging keeps every child (regularized evolution), so a "
                            "child has no threshold to race against; add --no-early-reject",
                            setting="strategy")
        if self.init_samples and self.init_samples < self.population:
            raise UserError(f"must be 0 or at least the population ({self.population}), not "
                            f"{self.init_samples}", setting="init_samples")


#: Search strategies: the paper's Algorithm 1, and random search and regularized evolution
#: (baselines at equal budget).
STRATEGIES = ("ga", "random", "aging")


@dataclass(frozen=True)
class ExecSettings:
    """How the search is executed; may change between a run and its resume.

    Attributes:
        workers: children evaluated at the same time (processes with loky).
        backend: ``loky`` (local processes) or ``dask`` (a Dask cluster).
        scheduler: Dask scheduler address (``tcp://host:8786``) with ``backend="dask"``.
        progress: show the tqdm progress line.
        devices: devices the children are pinned to (``("cuda:0", "cuda:1")``, or ``("cpu",)``;
            empty: every child on the fitness ``device``); docs/gpu.md.
        workers_per_device: children trained at the same time on each of ``devices``.
    """

    workers: int = 1
    backend: str = "loky"
    scheduler: str | None = None
    progress: bool = True
    devices: tuple[str, ...] = ()
    workers_per_device: int = 1

    @property
    def concurrency(self) -> int:
        """Children evaluated at the same time: one per device slot with ``devices``
        (``len(devices) * workers_per_device``), else ``workers``."""
        return len(self.devices) * self.workers_per_device if self.devices else self.workers

    def check(self) -> None:
        """Raise :class:`UserError` on an execution no search can run with."""
        if self.backend == "dask" and self.devices and self.scheduler:
            raise UserError("with --scheduler the cluster's workers choose their devices (start "
                            "them with dask-cuda-worker); --devices lays out a local cluster, "
                            "give one or the other", setting="devices")
        if self.backend == "dask" and not self.scheduler and not self.devices:
            raise UserError("the dask backend needs the Dask scheduler's address, e.g. "
                            "tcp://host:8786 (or --devices for a local cluster of device "
                            "slots)", setting="scheduler")


@dataclass(frozen=True)
class EvolveConfig:
    """Everything ``python -m nas.evolve`` was asked to do, frozen.

    ``search`` and ``fitness`` define the result (a resume must match them exactly);
    ``execution`` and ``run_dir`` only say where and how it runs.
    """

    search: SearchSettings
    fitness: Any  # nas.evaluation.fitness.FitnessSettings
    execution: ExecSettings = field(default_factory=ExecSettings)
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form written to ``config.json`` (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict[str, Any]:
        """The part a resume must match: ``search`` and ``fitness``."""
        d = self.to_dict()
        return {"search": d["search"], "fitness": d["fitness"]}


SEARCH_KEYS = frozenset(f.name for f in dataclasses.fields(SearchSettings))
EXEC_KEYS = frozenset(f.name for f in dataclasses.fields(ExecSettings))

# --------------------------------------------------------------------------------------------
# PRESETS, applied over the dataclass defaults; ``paper`` is used when none is chosen.
# >>> QUICK PRESET NUMBERS: the README's main job (resnet34 reference, Fashion-MNIST), sized to
# >>> finish within 15 minutes on 2 CPU cores with a cold cache. The ``cpu`` training recipe
# >>> (nas/evaluation/recipe.py) trains the reference, the children and the refinement; the
# >>> reference's cap is the smallest at which it reaches its validation plateau (the one-cycle
# >>> schedule spans the cap, so a shorter cap leaves it less accurate). The node cap bounds the
# >>> costliest child: more nodes admit full-resolution chains whose training dominates the
# >>> search. Timings and results: docs/results.md. Change them here and only here.
QUICK: dict[str, Any] = {
    "dataset": "fashion-mnist",
    "train_size": 5000,
    "val_size": 500,
    "test_size": 500,
    "recipe": "cpu",
    "reference_epochs": 10,
    "reference_patience": 3,
    "steps": 10,
    "population": 4,
    "children": 1,
    "generations": 3,
    "epochs": 3,
    "epochs_step": 1,
    "epochs_every": 2,
    "refine_epochs": 10,
    "max_channels": 32,
    "max_nodes": 12,
    "workers": 2,
}
# <<< END QUICK PRESET NUMBERS
# ``smoke``: synthetic data, seconds; for tests and CI.
SMOKE: dict[str, Any] = {
    "dataset": "synthetic",
    "train_size": 60,
    "val_size": 30,
    "test_size": 30,
    "reference": "he-ref",
    "reference_epochs": 1,
    "steps": 2,
    "batch_size": 32,
    "population": 3,
    "children": 1,
    "generations": 2,
    "min_distance": 1.0,
    "mutations_min": 1,
    "mutations_max": 2,
    "epochs": 1,
    "epochs_step": 0,
    "refine_epochs": 1,
    "max_channels": 8,
    "max_nodes": 8,
}
# >>> CPU PRESET NUMBERS: the two-hour CPU run: the paper's reduced experiment (Fashion-MNIST
# >>> 10,000 / 1,000 val / 1,000 test; ``--dataset mnist`` for MNIST), he-ref reference trained
# >>> with the ``cpu`` recipe at peak lr 6e-3 (the rate at which every he-ref seed reaches its
# >>> plateau within the 40-epoch cap) to its validation plateau, GM, Algorithm 1 with early
# >>> rejection (each child raced against its replacement threshold, so the same wall time buys
# >>> twice the generations; ``--no-early-reject`` gives Algorithm 1 as written), no inheritance
# >>> unless asked, two held-out CE sources for the final table, finalists refined to their
# >>> validation plateau. The MACs cap bounds the costliest child, which the channel and node
# >>> caps alone do not. The sizing arithmetic is in docs/lab-log.md ("The cpu preset: how it
# >>> is sized"), the results in docs/results.md. Change them here and only here.
CPU: dict[str, Any] = {
    "dataset": "fashion-mnist",
    "train_size": 10000,
    "val_size": 1000,
    "test_size": 1000,
    "reference": "he-ref",
    "recipe": "cpu",
    "lr": 0.006,
    "reference_epochs": 40,
    "reference_patience": 10,
    "held_out": ("he-baseline", "squeezenet1_1"),
    "full_test": True,
    "steps": 10,
    "population": 4,
    "children": 2,
    "generations": 16,
    "early_reject": True,
    "epochs": 6,
    "epochs_step": 0,
    "refine_epochs": 30,
    "refine_patience": 5,
    "max_channels": 32,
    "max_nodes": 16,
    "max_mmacs": 10.0,
    "workers": 2,
}
# >>> CPU PRESET ON MNIST (``--preset cpu --dataset mnist``): the same 132 children, spent
# >>> otherwise. On MNIST the 6-epoch fitness misranks architectures (deep convolution chains
# >>> that GM protects after the refinement score low after 6 epochs) and GM's protection of
# >>> one architecture varies with the training seed, so children train 12 epochs, generation 0
# >>> samples 36 architectures and keeps the 4 fittest >= d apart (then 12 generations of 8),
# >>> and each finalist is trained 3 times (the draw best on validation kept). Results in
# >>> docs/results.md; a flag or a config file still wins over these.
CPU_MNIST: dict[str, Any] = {
    "epochs": 12,
    "init_samples": 36,
    "generations": 12,
    "refine_draws": 3,
}
# <<< END CPU PRESET NUMBERS
# ``paper``: CIFAR-10 with a ResNet-34 reference (paper §4 full-dataset experiment); the search
# settings are the SearchSettings defaults. 5000 training images are held out for the fitness.
# The paper's training recipe (Adam, PyTorch defaults, constant rate); the paper does not say
# how long its references trained: ours train to their validation plateau (patience 10), at
# most 100 epochs (docs/howto.md, "Reproduce the paper", states the same).
PAPER: dict[str, Any] = {
    "dataset": "cifar10",
    "train_size": 45000,
    "val_size": 5000,
    "test_size": 10000,
    "reference": "resnet34",
    "reference_epochs": 100,
    "reference_patience": 10,
    "recipe": "paper",
    "batch_size": 128,
}
# >>> GPU PRESET NUMBERS: the paper's reduced CIFAR-10 experiment (§4.2: 10,000 training / 1,000
# >>> test images, the he-ref reference, PGD-L-inf, Tables 4, 5 and 7) on one GPU in about an hour.
# >>> The paper's recipe and child schedule (Adam with PyTorch defaults, batch 128, 20 epochs +5
# >>> every 10 generations, s=5, n=2) for 20 generations instead of 50, finalists refined to their
# >>> validation plateau (at most 200 epochs, patience 20) instead of 1,000 epochs, four children
# >>> at a time on cuda:0. Sized by nas.search.budget from a GM step time per GPU with four
# >>> children sharing it; ``python -m nas.gpucheck`` gives the real step time and sharing gain
# >>> and prints the expected hours. Change them here and only here; docs/gpu.md has the
# >>> arithmetic and the step time assumed.
GPU: dict[str, Any] = {
    "dataset": "cifar10",
    "train_size": 10000,
    "val_size": 1000,
    "test_size": 1000,
    "reference": "he-ref",
    "recipe": "paper",
    "batch_size": 128,
    "reference_epochs": 100,
    "reference_patience": 10,
    "held_out": ("he-baseline", "squeezenet1_1"),
    "population": 5,
    "children": 2,
    "generations": 20,
    "epochs": 20,
    "epochs_step": 5,
    "epochs_every": 10,
    "refine_epochs": 200,
    "refine_patience": 20,
    "devices": ("cuda:0",),
    "workers_per_device": 4,
}
# <<< END GPU PRESET NUMBERS
PRESETS: dict[str, dict[str, Any]] = {"paper": PAPER, "quick": QUICK, "smoke": SMOKE, "cpu": CPU,
                                      "gpu": GPU}
#: A preset's tuning for one dataset, applied over the preset when the resolved dataset is that
#: one (``--preset cpu --dataset mnist``); the config file and the flags still win.
PRESET_DATASETS: dict[str, dict[str, dict[str, Any]]] = {"cpu": {"mnist": CPU_MNIST}}


def preset_values(preset: str, dataset: str | None = None) -> dict[str, Any]:
    """The values of ``preset`` for ``dataset`` (``None``: the preset's own dataset): the
    preset, with its tuning for that dataset (:data:`PRESET_DATASETS`) on top."""
    values = PRESETS[preset]
    tuned = PRESET_DATASETS.get(preset, {}).get(dataset or values.get("dataset"), {})
    return {**values, **tuned}


# --------------------------------------------------------------------------------------------
# VALIDATION of every value, whatever layer it comes from (a flag is already checked by argparse
# with the same functions; a config file or a stored config.json is checked here).


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise argparse.ArgumentTypeError(f"expected a string, got {value!r}")
    return value


def _switch(value: Any) -> bool:
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _backend(value: Any) -> str:
    if value not in ("loky", "dask"):
        raise argparse.ArgumentTypeError(f"must be loky or dask, got {value!r}")
    return value


def _defense_args(value: Any) -> Any:
    pairs = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(str(k), v) for k, v in pairs]
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an object of key: value, "
                                         f"got {value!r}") from None
    for key, v in pairs:
        if isinstance(v, float):
            try:
                finite_float(v)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{key}: {exc}") from None
    return value


def _modules(value: Any) -> tuple[str, ...]:
    """``--plugin`` modules: a list of module names, or one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(m, str) for m in items):
        raise argparse.ArgumentTypeError(f"expected module names, got {value!r}")
    return tuple(m.strip() for m in items if m.strip())


def _image_size(value: Any) -> str:
    from nas.errors import UserError as _UserError
    from nas.evaluation.filedata import parse_image_size

    try:
        h, w = parse_image_size(str(value))
    except _UserError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return str(h) if h == w else f"{h}x{w}"


#: key -> checker (the argparse type of its flag): every value of every layer passes through it.
RULES: dict[str, Callable[[Any], Any]] = {
    # search
    "population": positive_int, "children": positive_int, "generations": nonneg_int,
    "min_distance": nonneg_float, "mutations_min": positive_int, "mutations_max": positive_int,
    "epochs": positive_int, "epochs_step": nonneg_int, "epochs_every": positive_int,
    "refine_epochs": nonneg_int, "seed": nonneg_int, "sequential": _switch,
    "refine_patience": nonneg_int, "refine_draws": positive_int, "strategy": _text,
    "early_reject": _switch, "reject_margin": nonneg_float, "inherit": _switch,
    "init_samples": nonneg_int, "reevaluate_margin": nonneg_float, "max_draws": positive_int,
    "common_seeds": _switch, "stagnation": nonneg_int,
    "max_channels": positive_int, "max_nodes": positive_int, "max_mmacs": nonneg_float,
    # execution
    "workers": positive_int, "backend": _backend, "scheduler": _optional(_text),
    "progress": _switch, "devices": parse_devices, "workers_per_device": positive_int,
    # fitness
    "dataset": _text, "train_size": positive_int, "val_size": nonneg_int, "test_size": positive_int,
    "reference": _text, "reference_epochs": positive_int, "reference_patience": nonneg_int,
    "reference_weights": _optional(_text), "recipe": _text,
    "attack": _text, "eps": _optional(unit_float), "step_size": _optional(positive_float),
    "steps": _optional(positive_int), "defense": _text, "defense_args": _defense_args,
    "batch_size": positive_int, "lr": _optional(positive_float), "device": _text,
    "fitness_split": _text, "full_test": _switch,
    "data_root": _optional(_text), "cache_dir": _optional(_text),
    "plugins": lambda v: _modules(v), "image_size": _optional(_image_size),
}

#: Keys that are no field of their own: ``image_size`` is folded into ``dataset``
#: (``folder:DIR@N``, :func:`nas.evaluation.filedata.fold_image_size`).
FOLDED_KEYS = frozenset({"image_size"})


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every known key checked by :data:`RULES`.

    Raises:
        UserError: one line naming the first bad key and its flag.
    """
    out = dict(values)
    for key, value in values.items():
        rule = RULES.get(key)
        if rule is None:
            continue
        try:
            out[key] = rule(value)
        except argparse.ArgumentTypeError as exc:
            raise UserError(str(exc), setting=key) from None
    return out


def fitness_keys() -> frozenset[str]:
    """Field names of ``nas.evaluation.fitness.FitnessSettings``."""
    from nas.evaluation.fitness import FitnessSettings

    return frozenset(f.name for f in dataclasses.fields(FitnessSettings))


def load_config_file(path: str) -> dict[str, Any]:
    """Flat key -> value mapping from a JSON config file (flat, or a run's nested config)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"config file {path}: not valid JSON "
                        f"({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a JSON object")
    data = data.get("config", data)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("search", "fitness", "execution") and isinstance(value, dict):
            flat.update(value)
        elif key != "run_dir":
            flat[key] = value
    return flat


def layered(preset: str | None, from_file: dict[str, Any],
            flags: dict[str, Any]) -> dict[str, Any]:
    """Layers 2-4 as flat values: ``preset`` (none if ``None``) with its tuning for the dataset
    the file or the flags give, < the config file < the flags given (``None`` entries are
    ignored). The one place both :func:`resolve` and :func:`resolve_resume` take the order from.
    """
    flags = {k: v for k, v in flags.items() if v is not None}
    if preset is None:
        return {**from_file, **flags}
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; valid: {', '.join(sorted(PRESETS))}")
    dataset = flags.get("dataset", from_file.get("dataset"))
    return {**preset_values(preset, dataset), **from_file, **flags}


def resolve(flags: dict[str, Any], *, preset: str | None, config_file: str | None,
            run_dir: str) -> EvolveConfig:
    """Layer defaults < preset < config file < explicit ``flags`` into an :class:`EvolveConfig`.

    Args:
        flags: explicitly given values only (``None`` entries are ignored).
        preset: preset name (or ``None``: from the config file, else ``paper``).
        config_file: optional JSON file path.
        run_dir: the run directory the search writes.
    """
    from_file = load_config_file(config_file) if config_file else {}
    file_preset = from_file.pop("preset", None)
    if file_preset is not None and (not isinstance(file_preset, str) or file_preset not in PRESETS):
        raise UserError(f"config file {config_file}: unknown preset {file_preset!r}; valid: "
                        f"{', '.join(sorted(PRESETS))}")
    values = layered(preset or file_preset or "paper", from_file, flags)
    fkeys = fitness_keys()
    unknown = sorted(set(values) - SEARCH_KEYS - EXEC_KEYS - fkeys - FOLDED_KEYS)
    if unknown:
        raise UserError(f"unknown configuration keys: {', '.join(unknown)}")
    return build(values, run_dir=run_dir)


def build(values: dict[str, Any], *, run_dir: str) -> EvolveConfig:
    """An :class:`EvolveConfig` from flat key -> value pairs (missing keys take defaults)."""
    from nas.evaluation.filedata import fold_image_size
    from nas.evaluation.fitness import FitnessSettings

    values = fold_image_size(check_values(values))
    fkeys = fitness_keys()
    fit = {k: v for k, v in values.items() if k in fkeys}
    if "defense_args" in fit:
        fit["defense_args"] = tuple(sorted((str(k), v)
                                           for k, v in dict(fit["defense_args"]).items()))
    if isinstance(fit.get("held_out"), str):
        fit["held_out"] = [n for n in fit["held_out"].split(",") if n]
    if "held_out" in fit:
        fit["held_out"] = tuple(str(n) for n in fit["held_out"])
    if isinstance(fit.get("held_out_attacks"), str):
        fit["held_out_attacks"] = [n for n in fit["held_out_attacks"].split(",") if n]
    if "held_out_attacks" in fit:
        fit["held_out_attacks"] = tuple(str(n) for n in fit["held_out_attacks"])
    search = SearchSettings(**{k: v for k, v in values.items() if k in SEARCH_KEYS})
    search.check()
    execution = ExecSettings(**{k: v for k, v in values.items() if k in EXEC_KEYS})
    execution.check()
    try:
        fitness = FitnessSettings(**fit)
    except (TypeError, ValueError) as exc:
        raise UserError(f"invalid fitness settings: {exc}") from None
    check_device_setting(fitness.device, execution.devices)
    if search.refine_draws > 1 and fitness.val_size < 1:
        raise UserError("keeps the draw best on validation: needs val_size > 0",
                        setting="refine_draws")
    return EvolveConfig(search=search, fitness=fitness, execution=execution, run_dir=run_dir)


def from_dict(data: dict[str, Any], *, run_dir: str) -> EvolveConfig:
    """Rebuild an :class:`EvolveConfig` from its ``to_dict`` form (a run's config.json)."""
    sections = [data.get(k, {} if k == "execution" else None) if isinstance(data, dict) else None
                for k in ("search", "fitness", "execution")]
    if not all(isinstance(section, dict) for section in sections):
        raise UserError(f"{run_dir or 'the stored configuration'}: config.json does not hold a run "
                        "configuration (search / fitness / execution objects)")
    flat = {k: v for section in sections for k, v in section.items()}
    return build(flat, run_dir=run_dir)


def flat_values(cfg: EvolveConfig) -> dict[str, Any]:
    """The flat key -> value form of a config (inverse of :func:`build`)."""
    d = cfg.to_dict()
    return {**d["search"], **d["fitness"], **d["execution"]}


def resolve_resume(stored: dict[str, Any], flags: dict[str, Any], *, preset: str | None,
                   config_file: str | None, run_dir: str) -> EvolveConfig:
    """The configuration of a resumed run: the stored one, with what the user gave on top.

    Only execution settings (workers, backend, scheduler, progress, devices,
    workers_per_device) may change; any other
    difference raises :class:`UserError` listing every differing key (``key: old -> new``).
    """
    from nas.search.rundir import config_diff

    old = from_dict(stored, run_dir=run_dir)
    from_file = ({k: v for k, v in load_config_file(config_file).items() if k != "preset"}
                 if config_file else {})
    new = build({**flat_values(old), **layered(preset or None, from_file, flags)},
                run_dir=run_dir)
    diff = config_diff(old.identity(), new.identity())
    if diff:
        raise UserError(f"{run_dir} was run with another configuration, refusing to resume "
                        f"(stored -> given): {'; '.join(diff)}")
    return new
