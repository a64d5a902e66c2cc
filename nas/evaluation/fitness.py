"""Fitness of a child (gm-neuroevolution eq. 4) and the prepared workspace behind it.

``prepare(settings)`` runs once in the driver: it loads the data, trains (or loads) the
reference, generates the transferred adversarial sets of the fitness split and the test split
and the reference's input gradients of the training set, all cached on disk. Worker processes
call :func:`evaluate_genome`, which loads the same artefacts from the cache (memoised per
process), trains the child with the selected defense and scores it:

    F = min(A_CL, A_AD)                                                    (eq. 4)

with ``A_CL`` the clean accuracy on the fitness split and ``A_AD`` the accuracy on the
reference's adversarial examples of that split. The fooling rate (paper §4.2.2) is also
reported: among the images that both the reference and the child classify correctly, the
fraction whose adversarial version the child misclassifies (``nan`` when there is no such
image, :func:`nas.evaluation.transfer.fooling_rate`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from defenses import DEFENSES, create_defense
from nas.evaluation.attacks import ATTACKS, AttackSettings, resolve_attack, transferred_set
from nas.evaluation.cache import (
    derive_seed,
    digest,
    discard,
    load_entry,
    save_entry,
    tensor_digest,
)
from nas.evaluation.callbacks import (
    Callback,
    EarlyStopping,
    StopBelow,
    accuracy_on,
    steps_per_epoch,
)
from nas.evaluation.data import DATASETS, Splits, cache_root, load_splits
from nas.evaluation.recipe import Recipe, get_recipe
from nas.evaluation.references import check_reference, get_reference, held_out_source
from nas.evaluation.training import (
    CachedReferenceGrad,
    TrainConfig,
    TrainData,
    TrainOutcome,
    cpu_has_native_bf16,
    predict,
    reference_gradients,
    resolve_device,
    train,
)
from nas.evaluation.transfer import fooling_rate
from nasbase.files import save_torch_atomically, write_text_atomically
from nasbase.progress import Stages


@dataclass(frozen=True)
class FitnessSettings:
    """Everything that determines a child's score except genome, epochs and seed (JSON-able).

    ``eps`` / ``step_size`` / ``steps`` ``None`` mean the per-dataset default of the attack
    (nas.evaluation.attacks). ``defense_args`` are sorted ``(name, value)`` pairs, e.g.
    ``(("lam", 1.0),)``. ``fitness_split`` is ``"val"`` (held out from training) or ``"test"``
    (paper protocol). ``recipe`` names the training recipe (nas.evaluation.recipe.RECIPES) of
    the reference, the children, the refinement and the baselines; ``lr`` ``None`` keeps the
    recipe's peak rate. The reference trains to its validation plateau: at most
    ``reference_epochs``, stopping after ``reference_patience`` epochs without improvement (0:
    exactly ``reference_epochs``); ``reference_amp`` ``"auto"`` = bf16 autocast where the device
    computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16 / AMX), ``"off"`` / ``"bf16"``
    force it.
    ``held_out``: held-out attack sources (reference names other than ``reference``), trained
    with CE like the reference and cached; their PGD examples of the test split score the
    finalists only (never the search). ``held_out_attacks``: the attacks crafted on every
    held-out source (e.g. ``("pgd-linf", "mi-fgsm", "di-mi-fgsm")``; empty: the search's
    attack), with a worst case and white-box PGD (:mod:`nas.evaluation.heldout`).
    """

    def training_recipe(self) -> Recipe:
        """The resolved :class:`Recipe` (``lr`` applied)."""
        return get_recipe(self.recipe).with_lr(self.lr)

    def reference_config(self, *, progress: bool = False) -> TrainConfig:
        """How the reference is trained (CE, the recipe, to the validation plateau)."""
        amp = self.reference_amp
        if amp == "auto":
            amp = ("bf16" if resolve_device(self.device).type == "cpu" and cpu_has_native_bf16()
                   else "auto")
        return TrainConfig(epochs=self.reference_epochs, batch_size=self.batch_size,
                           recipe=self.training_recipe(), patience=self.reference_patience,
                           device=self.device, amp=amp, progress=progress)

    def child_config(self, epochs: int, *, patience: int = 0,
                     progress: bool = False) -> TrainConfig:
        """How a child / finalist / baseline is trained for ``epochs`` with the recipe."""
        return TrainConfig(epochs=epochs, batch_size=self.batch_size,
                           recipe=self.training_recipe(), patience=patience,
                           device=self.device, progress=progress)

    dataset: str = "fashion-mnist"
    train_size: int = 10000
    val_size: int = 1000
    test_size: int = 1000
    reference: str = "resnet34"
    reference_epochs: int = 100
    reference_patience: int = 10
    reference_amp: str = "auto"
    reference_weights: str | None = None
    attack: str = "pgd-linf"
    eps: float | None = None
    step_size: float | None = None
    steps: int | None = None
    defense: str = "gm"
    defense_args: tuple[tuple[str, Any], ...] = ()
    batch_size: int = 128
    recipe: str = "paper"
    lr: float | None = None
    device: str = "auto"
    fitness_split: str = "val"
    full_test: bool = False
    held_out: tuple[str, ...] = ()
    held_out_attacks: tuple[str, ...] = ()
    data_root: str | None = None
    cache_dir: str | None = None
    seed: int = 0
    plugins: tuple[str, ...] = ()  # --plugin modules, imported first in every process

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``defense_args`` as a list of pairs)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitnessSettings:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["defense_args"] = tuple(sorted(tuple(p) for p in kwargs.get("defense_args", ())))
        kwargs["held_out"] = tuple(kwargs.get("held_out", ()))
        kwargs["plugins"] = tuple(kwargs.get("plugins", ()))
        kwargs["held_out_attacks"] = tuple(kwargs.get("held_out_attacks", ()))
        return cls(**kwargs)


@dataclass(frozen=True)
class ChildResult:
    """The score of one trained network; ``status`` ``"ok"`` | ``"diverged"`` | ``"failed"``.

    ``macs``: multiply-accumulate operations of one forward pass of one image (the one cost
    measure of the project, as ``genome.count_macs``). ``fooling_rate``: ``nan`` when no
    image is eligible (:func:`nas.evaluation.transfer.fooling_rate`; ``null`` in JSON).
    ``val_*``: fitness, clean and adversarial accuracy on the validation split, measured as well
    when the scored split is another one under ``--fitness-split val`` (refinement scores the test
    split; finalists are ranked by these, never by the test numbers); ``None`` otherwise.
    """

    fitness: float
    clean_acc: float
    adv_acc: float
    fooling_rate: float
    status: str
    reason: str
    epochs: int
    seconds: float
    params: int
    macs: int
    val_fitness: float | None = None
    val_clean_acc: float | None = None
    val_adv_acc: float | None = None
    rungs: list[list[float]] | None = None
    reject_below: float | None = None
    inherited: int | None = None
    held_out: dict[str, float] | None = None
    kept_search_weights: bool | None = None
    replicates: list[dict[str, Any]] | None = None
    protocol: dict[str, float] | None = None
    held_out_worst: float | None = None
    white_box_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; an undefined (``nan``) fooling rate is ``None`` (``null`` in JSON:
        run files stay standard JSON and compare equal across runs). The fields of the
        optional features (:data:`OPTIONAL_FIELDS`) are left out when unset, so a run without
        them writes exactly what it wrote before they existed."""
        out = asdict(self)
        if math.isnan(out["fooling_rate"]):
            out["fooling_rate"] = None
        for name in OPTIONAL_FIELDS:
            if out[name] is None:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChildResult:
        """Inverse of :meth:`to_dict`; results written before MACs were the one cost measure
        carry ``flops`` (torch's count: 2 per multiply-accumulate) and are converted."""
        data = dict(data)
        if "replicates" not in data and "draws" in data:  # written before replicates
            data["replicates"] = data["draws"]
        if "macs" not in data and "flops" in data:
            data["macs"] = int(data["flops"]) // 2
        if data.get("fooling_rate") is None:
            data["fooling_rate"] = float("nan")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def failed(cls, status: str, reason: str, epochs: int, seconds: float, params: int = 0,
               macs: int = 0) -> ChildResult:
        """A zero-fitness result for a child that diverged or failed (no image is classified
        correctly, so none is eligible for the fooling rate: ``nan``)."""
        return cls(0.0, 0.0, 0.0, float("nan"), status, reason, epochs, seconds, params, macs)


#: ``rungs`` ([epoch, fitness] at each rung of early rejection), ``reject_below`` (the
#: threshold minus the margin), ``inherited`` (tensors taken from the parent, ``--inherit``),
#: ``held_out`` (transferred accuracy per held-out source, test split of the finalists),
#: ``kept_search_weights`` (a refinement kept the search's weights: they scored higher on
#: validation than the refined ones), ``replicates`` (``--replicates`` > 1: one record per
#: training, its seed, kept epoch, validation and test scores, ``"kept"`` on the one kept),
#: ``protocol`` (``full_test``: the scores on the protocol's ``test_size`` subset),
#: ``held_out_worst`` (the lowest held-out accuracy) and ``white_box_acc`` (white-box PGD on
#: the test split, with ``held_out_attacks``; :mod:`nas.evaluation.heldout`).
OPTIONAL_FIELDS = ("rungs", "reject_below", "inherited", "held_out", "kept_search_weights",
                   "replicates", "protocol", "held_out_worst", "white_box_acc")


@dataclass
class Workspace:
    """Prepared artefacts: data, reference, adversarial sets, reference gradients."""

    settings: FitnessSettings
    splits: Splits
    reference: nn.Module
    reference_key: str
    reference_meta: dict[str, Any]
    attack: AttackSettings
    adversarial: dict[str, torch.Tensor]  # split -> float (N, C, H, W) in [0, 1]
    reference_pred: dict[str, torch.Tensor]  # split -> (N,) clean predictions of the reference
    reference_grads: torch.Tensor  # (N_train, C, H, W) reference input gradients
    reference_acc: dict[str, float] = field(default_factory=dict)
    held_out_adv: dict[str, torch.Tensor] = field(default_factory=dict)  # source -> test set
    held_out_acc: dict[str, float] = field(default_factory=dict)  # source -> test clean accuracy

    def trained_with(self, settings: FitnessSettings) -> Workspace:
        """The same prepared artefacts for networks trained under other training settings
        (the defense and its arguments, recipe, rate: a baseline); the data, reference and
        attack stay this workspace's."""
        return dataclasses.replace(self, settings=settings)


def attack_settings(settings: FitnessSettings) -> AttackSettings:
    """The resolved attack of ``settings`` (per-dataset defaults filled in)."""
    return resolve_attack(settings.attack, settings.dataset, eps=settings.eps,
                          step_size=settings.step_size, steps=settings.steps)


def check_defense(settings: FitnessSettings) -> None:
    """Build the defense once so an unknown name or a bad ``--defense-arg`` is one clear error
    before anything is trained or written (``Defense.check``)."""
    from nas.errors import UserError

    try:
        create_defense(settings.defense, **dict(settings.defense_args)).check()
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad value for {settings.defense}: {exc}",
                        setting="defense_args") from None


def check_names(fitness: FitnessSettings) -> None:
    """Fail fast (before any file is written) on an unknown dataset, reference, attack,
    defense or recipe, or a defense argument the defense does not take."""
    from nas.errors import UserError
    from nas.plugins import load_plugins

    load_plugins(fitness.plugins)
    DATASETS.get(fitness.dataset)
    members = check_reference(fitness.reference, fitness.reference_weights)
    ATTACKS.get(fitness.attack)
    for entry in fitness.held_out:
        name, weights = held_out_source(entry)
        check_reference(name, weights)
        if name in members or name == fitness.reference:
            raise UserError(f"must not contain the reference {name!r} (a held-out source is one "
                            f"the search never sees)", setting="held_out")
    from nas.evaluation.refsources import check_sources

    check_sources([fitness.reference, *(held_out_source(e)[0] for e in fitness.held_out)],
                  fitness.dataset)
    for name in fitness.held_out_attacks:
        ATTACKS.get(name)
    DEFENSES.get(fitness.defense)
    check_defense(fitness)
    fitness.training_recipe()  # an unknown recipe
    if fitness.fitness_split not in ("val", "test"):
        raise UserError(f"must be val or test, not {fitness.fitness_split!r}",
                        setting="fitness_split")


def prepare(settings: FitnessSettings, *, progress: bool = True,
            log: Callable[[str], None] = print) -> Workspace:
    """Build (or load from the cache) everything the fitness needs; idempotent.

    Each stage (data, reference, transferred sets, reference gradients) logs one line with its
    measured time (:class:`nasbase.progress.Stages`); ``progress`` adds tqdm bars. The ``--plugin``
    modules are imported first (a worker process evaluates children through this)."""
    from nas.plugins import load_plugins

    load_plugins(settings.plugins)
    cache = cache_root(settings.cache_dir)
    stages = Stages(log)
    with stages(f"data {settings.dataset}"):
        splits = load_splits(settings.dataset, train_size=settings.train_size,
                             val_size=settings.val_size, test_size=settings.test_size,
                             seed=settings.seed, data_root=settings.data_root,
                             cache_dir=settings.cache_dir, log=log, full_test=settings.full_test)
    device = resolve_device(settings.device)
    with stages(f"reference {settings.reference}"):
        reference, ref_key, meta = get_reference(
            settings.reference, splits, cache, config=settings.reference_config(progress=progress),
            seed=settings.seed, weights=settings.reference_weights, log=log)
    reference = reference.to(device).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    attack = attack_settings(settings)
    adversarial, preds, accs = {}, {}, {}
    for split in dict.fromkeys((settings.fitness_split, "test")):
        x, y = splits.split(split)
        with stages(f"transferred {attack.name} set of split {split}"):
            adversarial[split] = transferred_set(reference, ref_key, split, x, y, attack, cache,
                                                 device=device, progress=progress, log=log)
        preds[split] = predict(reference, x, device=device)
        accs[split] = float((preds[split] == y).float().mean()) if len(y) else 0.0
    with stages("reference gradients"):
        grads = _cached_reference_grads(reference, ref_key, splits, cache, device, progress, log)
    ws = Workspace(settings, splits, reference, ref_key, meta, attack, adversarial, preds,
                   grads, accs)
    if settings.held_out:
        from nas.evaluation.heldout import held_out_pairs, held_out_sets

        with stages(f"held-out sources {', '.join(settings.held_out)}"):
            ws.held_out_adv, ws.held_out_acc = held_out_sets(
                held_out_pairs(settings), splits, cache, device=device, progress=progress,
                config=settings.reference_config(progress=progress), seed=settings.seed, log=log)
    return ws


def _cached_reference_grads(reference: nn.Module, ref_key: str, splits: Splits, cache: Path,
                            device: torch.device, progress: bool,
                            log: Callable[[str], None]) -> torch.Tensor:
    """Reference input gradients of the training set (no augmentation), cached on disk.

    Keyed by the reference's key and the digest of the exact training images and labels; a
    loaded entry of the wrong shape or with non-finite values is recomputed (one log line).
    """
    content = {"reference": ref_key, "images": tensor_digest(splits.x_train, splits.y_train),
               "n": len(splits.y_train), "batch_size": _GRAD_BATCH}
    path = cache / "refgrad" / f"{ref_key}-{digest(content)}.pt"
    entry = load_entry(path, content, log=log)
    if entry is not None:
        grads = entry[0].get("grads", torch.empty(0))
        if grads.shape == splits.x_train.shape and bool(torch.isfinite(grads).all()):
            return grads
        discard(path, f"holds {tuple(grads.shape)} or non-finite gradients, expected finite "
                      f"{tuple(splits.x_train.shape)}", log)
    log(f"computing reference input gradients of {len(splits.y_train)} training images")
    grads = reference_gradients(reference, splits.x_train, splits.y_train, device=device,
                                batch_size=_GRAD_BATCH, progress=progress)
    save_entry(path, content, {"grads": grads})
    return grads


_GRAD_BATCH = 500


@lru_cache(maxsize=2)
def workspace(settings: FitnessSettings) -> Workspace:
    """Per-process memo of :func:`prepare` (loads from the cache in worker processes)."""
    return prepare(settings, progress=False, log=lambda _msg: None)


class Scores(NamedTuple):
    """A network's clean and transferred-adversarial accuracy and fooling rate on one split."""

    clean: float
    adv: float
    fooling: float

    @property
    def fitness(self) -> float:
        """Eq. 4: ``min(A_CL, A_AD)``."""
        return min(self.clean, self.adv)


def score(model: nn.Module, ws: Workspace, split: str) -> Scores:
    """Clean accuracy, transferred-adversarial accuracy and fooling rate on ``split``.

    The fooling rate is :func:`nas.evaluation.transfer.fooling_rate` of the images both the
    reference and ``model`` classify correctly (``nan`` when there is none). ``"protocol"``:
    the protocol's ``test_size`` subset of a whole test split (``full_test``), scored on the
    whole split's transferred examples.
    """
    if split == "protocol":
        idx = ws.splits.protocol
        if idx is None:
            raise ValueError("no protocol subset: the test split is not the whole test set")
        x, y = (t[idx] for t in ws.splits.split("test"))
        x_adv, ref_pred = (t[idx] for t in _transferred(ws, "test"))
    else:
        x, y = ws.splits.split(split)
        x_adv, ref_pred = _transferred(ws, split)
    clean_ok, adv_ok = predict(model, x) == y, predict(model, x_adv) == y
    both = clean_ok & (ref_pred == y)
    fooling = fooling_rate(int((~adv_ok[both]).sum()), int(both.sum()))
    return Scores(float(clean_ok.float().mean()), float(adv_ok.float().mean()), fooling)


def _transferred(ws: Workspace, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's transferred examples of ``split`` and its predictions of the clean
    images, made (or loaded from the cache) the first time a split is scored."""
    if split not in ws.adversarial:
        x, y = ws.splits.split(split)
        ws.adversarial[split] = transferred_set(
            ws.reference, ws.reference_key, split, x, y, ws.attack,
            cache_root(ws.settings.cache_dir), log=lambda _m: None)
        ws.reference_pred[split] = predict(ws.reference, x)
    return ws.adversarial[split], ws.reference_pred[split]


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulate operations of one forward pass on a single image.

    Measured with torch's ``FlopCounterMode``, which counts 2 FLOPs per multiply-accumulate of
    the convolutions and matrix products, halved: the quantity ``genome.count_macs`` computes
    statically for a genome (equal for a compiled genome; tested).
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops()) // 2


@dataclass(frozen=True)
class Budget:
    """How one network is trained: ``epochs`` (a cap when ``patience`` > 0), the evaluation's
    ``seed`` (each training draw derives its own, :func:`draw_seed`), ``patience`` (early
    stopping on the validation split, keeping the best-on-validation weights) and
    ``reject_below`` (early rejection: the child's threshold minus the margin)."""

    epochs: int
    seed: int
    patience: int = 0
    reject_below: float | None = None


def train_data(ws: Workspace) -> TrainData:
    """The workspace's training set with the cached reference gradients and the adversary."""
    device = resolve_device(ws.settings.device)
    return TrainData(ws.splits.x_train, ws.splits.y_train, ws.splits.info.num_classes,
                     reference_grad=CachedReferenceGrad(ws.reference_grads, device),
                     adversary=_adversary(ws), cache_dir=str(cache_root(ws.settings.cache_dir)))


def train_network(factory: Callable[[], nn.Module], ws: Workspace, budget: Budget, *,
                  split: str, draw: int = 0, progress: bool = False,
                  log: Callable[[str], None] = print) -> tuple[TrainOutcome, list[list[float]]]:
    """Train one network with the settings' defense for ``budget``; returns the outcome and
    the early-rejection rungs (``[epoch, fitness]`` on ``split``).

    With ``budget.patience`` the validation score is the weights' fitness (eq. 4) on the
    validation split, the weights the fitness would pick; a plain copy (defense ``none``) is
    stopped on its own objective, clean accuracy.
    """
    settings = ws.settings
    config = settings.child_config(budget.epochs, patience=budget.patience, progress=progress)
    callbacks: list[Callback] = []
    if budget.patience and len(ws.splits.y_val):
        steps = steps_per_epoch(len(ws.splits.y_train), config.batch_size)
        if settings.defense == "none":
            callbacks.append(EarlyStopping.for_config(
                config, steps, accuracy_on(ws.splits.x_val, ws.splits.y_val,
                                           resolve_device(settings.device))))
        else:
            callbacks.append(EarlyStopping.for_config(
                config, steps, lambda m: score(m, ws, "val").fitness, label="validation fitness"))
    race = None
    if budget.reject_below is not None:
        race = StopBelow(lambda m: score(m, ws, split).fitness, rung_epochs(budget.epochs),
                         budget.reject_below)
        callbacks.append(race)
    defense = create_defense(settings.defense, **dict(settings.defense_args))
    outcome = train(factory, defense, train_data(ws), config=config,
                    seed=draw_seed(budget.seed, draw), callbacks=callbacks, log=log)
    return outcome, race.rungs if race is not None else []


def kept_epochs(outcome: TrainOutcome, budget: Budget, ws: Workspace) -> int:
    """The epochs a result reports: the kept epoch under early stopping, the epochs trained
    when rejected, else the budget's."""
    if outcome.status == "rejected":
        return outcome.epochs
    if budget.patience and len(ws.splits.y_val):
        return outcome.best_epoch or outcome.epochs
    return budget.epochs


def result_of(model: nn.Module, outcome: TrainOutcome, ws: Workspace, *, split: str,
              epochs: int, seconds: float, val_scores: Scores | None = None,
              **extra: Any) -> ChildResult:
    """Score trained weights (eq. 4 on ``split``; the validation scores finalists are ranked
    by; the held-out sources on the test split) into a :class:`ChildResult`.

    ``val_scores``: the validation scores already measured for these weights (not measured
    again). ``extra``: the optional fields (:data:`OPTIONAL_FIELDS`) of the features used.
    """
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, ws.splits.info.input_shape)
    if outcome.status not in ("ok", "rejected"):
        return dataclasses.replace(ChildResult.failed(
            outcome.status, outcome.reason, epochs, seconds, params, macs), **extra)
    clean, adv, fooling = score(model, ws, split)
    val: tuple[float | None, ...] = (None, None, None)
    if ws.settings.fitness_split == "val" and split != "val":  # what finalists are ranked by
        v = val_scores or score(model, ws, "val")
        val = (v.fitness, v.clean, v.adv)
    if split == "test":
        extra.update(held_out_of(model, ws), **protocol_of(model, ws))
    return ChildResult(min(clean, adv), clean, adv, fooling, outcome.status, outcome.reason,
                       epochs, round(seconds, 3), params, macs, *val, **extra)


def held_out_of(model: nn.Module, ws: Workspace) -> dict[str, Any]:
    """The held-out columns of trained weights on the test split (the sources the search
    never sees): ``held_out`` (accuracy per source x attack), ``held_out_worst`` and, with
    ``held_out_attacks``, ``white_box_acc`` (:func:`nas.evaluation.heldout.finalist_held_out`);
    empty without held-out sources."""
    if not ws.held_out_adv:
        return {}
    from nas.evaluation.heldout import finalist_held_out

    return finalist_held_out(model, ws)


def protocol_of(model: nn.Module, ws: Workspace) -> dict[str, Any]:
    """``{"protocol": {fitness, clean_acc, adv_acc}}`` on the protocol's subset when the test
    split is the whole test set (``full_test``), for comparison with the paper; else empty."""
    if ws.splits.protocol is None:
        return {}
    p = score(model, ws, "protocol")
    return {"protocol": {"fitness": p.fitness, "clean_acc": p.clean, "adv_acc": p.adv}}


def evaluate_module(
    factory: Callable[[], nn.Module], ws: Workspace, budget: Budget, *, split: str | None = None,
    out_dir: str | None = None, progress: bool = False, log: Callable[[str], None] = print,
    inherited: int | None = None,
) -> tuple[ChildResult, nn.Module | None]:
    """Train any architecture once with the settings' defense and score it (eq. 4).

    With ``budget.patience`` > 0, ``epochs`` is a cap: training stops at the validation
    plateau and keeps the best-on-validation weights; the result's ``epochs`` is the epoch
    whose weights were kept. With ``budget.reject_below`` (early rejection), the fitness on
    the scored split is measured at the rungs (:func:`rung_epochs`) and training stops at the
    first rung where it is below: status ``"rejected"``, the fitness of that rung, ``epochs``
    the epochs trained. ``inherited`` (the number of tensors the factory took from the parent)
    is only recorded. Several draws and the refinement's choice between trainings belong to
    the search (:mod:`nas.search.refinement`).

    Returns the result and the trained module (``None`` when training diverged). Raises on
    programming errors; :func:`nas.search.worker.evaluate_genome` turns every exception into a
    ``failed`` result.
    """
    split = split or ws.settings.fitness_split
    start = time.perf_counter()
    outcome, rungs = train_network(factory, ws, budget, split=split, progress=progress, log=log)
    extra = {"rungs": rungs if budget.reject_below is not None else None,
             "reject_below": budget.reject_below, "inherited": inherited}
    result = result_of(outcome.model, outcome, ws, split=split,
                       epochs=kept_epochs(outcome, budget, ws),
                       seconds=time.perf_counter() - start, **extra)
    model = outcome.model if outcome.status in ("ok", "rejected") else None
    write_outputs(out_dir, result, model, ws.settings, split)
    return result, model


def draw_seed(seed: int, draw: int) -> int:
    """The training seed of draw ``draw`` of a network evaluated with ``seed``; draw 0 is the
    seed of a single training (``draws=1``)."""
    return derive_seed("child", seed) if draw == 0 else derive_seed("child", seed, "draw", draw)


def rung_epochs(epochs: int) -> tuple[int, ...]:
    """The epochs after which early rejection scores a child of ``epochs`` epochs: 1/3 and
    2/3 of its training (rounded, at least 1, before the last epoch; none for 1 epoch)."""
    return tuple(sorted({max(1, round(epochs * k / 3)) for k in (1, 2)} - {epochs}))


def _adversary(ws: Workspace) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """White-box PGD on the model being trained (for defenses that declare ``adversary``),
    naming the dataset's L-inf eps (the adversarial-training defenses' default radius)."""
    from defenses.base import Adversary
    from nas.evaluation.attacks import run_attack

    attack = resolve_attack("pgd-linf", ws.settings.dataset)
    generator = torch.Generator().manual_seed(derive_seed("adversary", ws.settings.seed))
    return Adversary(lambda model, x, y: run_attack(model, x, y, attack, generator), attack.eps)


def write_outputs(out_dir: str | None, result: ChildResult, model: nn.Module | None,
                   settings: FitnessSettings, split: str) -> None:
    """``out_dir/weights.pt`` (when trained) and ``out_dir/metrics.json`` of a result."""
    if not out_dir:
        return
    out = Path(out_dir)
    if model is not None:
        save_torch_atomically({k: v.detach().cpu() for k, v in model.state_dict().items()},
                          out / "weights.pt")
    metrics = dict(result.to_dict(), split=split, settings=settings.to_dict())
    write_text_atomically(out / "metrics.json", json.dumps(metrics, indent=2))
