"""The one training loop for every defense, and the reference input-gradient cache.

:func:`train` calls the defense contract of ``defenses/base.py``: ``wrap`` (build the module
to train from a factory), ``prepare`` (once, with the uint8 training set), then ``loss`` every
step, followed by ``backward`` and an optimizer step of the :class:`nas.evaluation.recipe.Recipe` in
``TrainConfig.recipe`` (``paper``: Adam with PyTorch defaults, constant rate, batch 128, paper
§4). Batches are sliced from in-memory uint8 tensors with a seeded torch Generator; a
non-finite loss stops training with status ``"diverged"``. Given a validation split and a
``patience``, training stops when validation accuracy has not improved for ``patience``
epochs (or at ``epochs``) and the best-on-validation weights are kept.

Reference gradients (``TrainContext.reference_grad``) are the input gradients of the
reference's *summed* CE loss in eval mode, detached. Without augmentation they are a pure
function of the training image, so they are computed once for the whole training set
(:func:`reference_gradients`) and looked up by ``batch.index`` (:class:`CachedReferenceGrad`);
:class:`LiveReferenceGrad` computes them per batch instead (for augmentation or benchmarks).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from defenses.base import Batch, Defense, TrainContext
from genome.fileio import write_atomically
from nas.devices import pinned_device
from nas.errors import UserError
from nas.evaluation.allocator import keep_freed_memory
from nas.evaluation.double_backward import use_fast_double_backward
from nas.evaluation.recipe import PAPER_RECIPE, Recipe, WeightAverage, random_shift


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs (the cap when ``patience`` > 0), batch size, recipe, early
    stopping, device, bf16 autocast, progress.

    ``patience`` > 0 with a validation split passed to :func:`train`: stop once the validation
    score (accuracy, or what the caller measures) has not improved for ``patience`` epochs
    and keep the best weights; the learning-rate schedule always spans ``epochs``.
    ``stop_when_annealed``: under a decaying schedule (one-cycle) patience may stop training
    only from the epoch where the rate has fallen below a tenth of its peak, so a run is never
    cut before the annealing that gives most of its accuracy (docs/fitness.md, "Early
    stopping"); no effect with a constant rate.
    """

    epochs: int
    batch_size: int = 128
    recipe: Recipe = PAPER_RECIPE
    patience: int = 0
    device: str = "auto"
    amp: str = "auto"  # "auto" (bf16 on CUDA with bf16 support) | "bf16" | "off"
    progress: bool = False
    stop_when_annealed: bool = True


def first_stop_epoch(recipe: Recipe, epochs: int, steps_per_epoch: int) -> int:
    """The first epoch after which early stopping may stop a run of ``epochs`` epochs: 0 for
    a constant rate, else the first epoch ending with the rate below a tenth of its peak
    (after the warm-up)."""
    if recipe.schedule == "constant":
        return 0
    total = epochs * steps_per_epoch
    warm = max(1, round(recipe.warmup * total))
    for epoch in range(1, epochs + 1):
        step = epoch * steps_per_epoch - 1
        if step >= warm and recipe.lr_factor(step, total) < 0.1:
            return epoch
    return epochs


@dataclass
class TrainOutcome:
    """The trained module plus how training went (``status`` ``"ok"`` or ``"diverged"``)."""

    model: nn.Module
    status: str = "ok"
    reason: str = ""
    steps: int = 0
    seconds: float = 0.0
    logs: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    best_epoch: int = 0  # 1-based epoch whose weights were kept (early stopping)
    val_acc: float | None = None  # validation accuracy of the kept weights


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` / ``cuda[:i]`` as given. In a worker
    pinned to a device (``--devices``, :func:`nas.devices.pinned_device`) ``auto`` and ``cuda``
    are that device."""
    pin = pinned_device()
    if pin is not None and name in ("auto", "cuda"):
        name = pin
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{name!r} requested but CUDA is not available; use cpu",
                        setting="device")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda") from None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    use = amp == "bf16" or (
        amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``grad_x CE(model(x), y, reduction="sum")`` in eval mode, detached. (N, C, H, W)."""
    was_training = model.training
    model.eval()
    try:
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    finally:
        model.train(was_training)
    return g.detach()


def reference_gradients(
    reference: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500,
    device: torch.device | None = None, progress: bool = False,
) -> torch.Tensor:
    """Reference input gradients of a whole uint8 set, float32 ``(N, C, H, W)`` on CPU."""
    device = device or torch.device("cpu")
    out = []
    chunks = range(0, len(x_uint8), batch_size)
    for i in tqdm(chunks, desc="reference gradients", disable=not progress, leave=False):
        xb = x_uint8[i : i + batch_size].to(device).float().div_(255.0)
        out.append(input_gradients(reference, xb, y[i : i + batch_size].to(device)).cpu())
    return torch.cat(out)


class CachedReferenceGrad:
    """``(x, y, index) -> grads[index]``: precomputed reference gradients looked up by index."""

    def __init__(self, grads: torch.Tensor, device: torch.device) -> None:
        self.grads = grads.to(device)  # (N_train, C, H, W)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.grads[index.to(self.grads.device)]


class LiveReferenceGrad:
    """``(x, y, index) -> grad``: reference input gradients computed on the batch itself."""

    def __init__(self, reference: nn.Module) -> None:
        self.reference = reference

    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return input_gradients(self.reference, x, y)


def build_context(
    defense: Defense, *, device: torch.device, generator: torch.Generator,
    reference_grad: Callable | None = None, adversary: Callable | None = None,
    cache_dir: str | None = None, log: Callable[[str], None] = print,
) -> TrainContext:
    """A :class:`TrainContext` offering what ``defense.needs``; raises if a need is missing."""
    missing = [n for n, v in (("reference_grad", reference_grad), ("adversary", adversary))
               if n in defense.needs and v is None]
    if missing:
        raise ValueError(f"defense {defense.name!r} needs {', '.join(missing)}")
    return TrainContext(device=device, generator=generator, reference_grad=reference_grad,
                        adversary=adversary, cache_dir=cache_dir, write_file=write_atomically,
                        log=log)


def build_training_model(defense: Defense, factory: Callable[[], nn.Module], *,
                         num_classes: int, input_shape: tuple[int, ...],
                         device: torch.device) -> nn.Module:
    """``defense.wrap(factory, ...)`` on ``device``, laid out for fast training.

    Channels-last memory format (oneDNN's native layout) and the hand-written second
    derivatives of :mod:`nas.evaluation.double_backward`; together, measured by ``nas.bench`` on the
    he-ref / he-baseline children, the plain CE step ran 1.3-1.7x and the GM step 1.34-1.88x
    faster than with PyTorch's own layers in the default layout (docs/fitness.md, "Speed").
    Neither changes what the network computes or its ``state_dict`` keys. Also applies
    :func:`keep_freed_memory`.
    """
    keep_freed_memory()
    model = defense.wrap(factory, num_classes=num_classes, input_shape=input_shape)
    model = model.to(device=device, memory_format=torch.channels_last)
    return use_fast_double_backward(model)


def to_training_layout(x: torch.Tensor) -> torch.Tensor:
    """A 4-d image batch in the channels-last layout of :func:`build_training_model`."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def train_step(
    model: nn.Module, defense: Defense, optimizer: torch.optim.Optimizer, batch: Batch,
    ctx: TrainContext, amp: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimisation step; returns the (detached) loss and the defense's logs."""
    optimizer.zero_grad(set_to_none=True)
    with amp or contextlib.nullcontext():
        out = defense.loss(model, batch, ctx)
    loss = out.loss.float()
    if not torch.isfinite(loss):
        return loss.detach(), out.logs
    # Gradients of the optimised parameters only: no wasted input gradient of the first layer
    # when a defense made the batch require grad (gm's input gradients).
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    loss.backward(inputs=params or None)
    optimizer.step()
    return loss.detach(), out.logs


def dropout_seed(seed: int) -> int:
    """The seed of the global generator during training (its own stream, apart from the
    initialisation's ``seed``)."""
    return (seed * 1_000_003 + 7_919) % (2**63 - 1)


def _seeds_global_generator(fn: Callable[..., TrainOutcome]) -> Callable[..., TrainOutcome]:
    """Run ``fn`` (:func:`train`) with PyTorch's global generator seeded by
    :func:`dropout_seed` of its ``seed``, inside a fork that restores the caller's state."""

    @functools.wraps(fn)
    def seeded(*args: Any, config: TrainConfig, seed: int, **kwargs: Any) -> TrainOutcome:
        device = resolve_device(config.device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(dropout_seed(seed))
            return fn(*args, config=config, seed=seed, **kwargs)

    return seeded


@_seeds_global_generator
def train(
    factory: Callable[[], nn.Module], defense: Defense, x_train: torch.Tensor,
    y_train: torch.Tensor, *, config: TrainConfig, seed: int, num_classes: int,
    reference_grad: Callable | None = None, adversary: Callable | None = None,
    cache_dir: str | None = None, log: Callable[[str], None] = print,
    val: tuple[torch.Tensor, torch.Tensor] | Callable[[nn.Module], float] | None = None,
    epoch_log: Callable[[str], None] | None = None,
    on_epoch: Callable[[nn.Module, int], str] | None = None,
    val_label: str = "validation accuracy",
) -> TrainOutcome:
    """Build (``defense.wrap``) and train a module with ``defense`` on a uint8 training set.

    Args:
        factory: returns a fresh child network (the model contract of docs/architecture.md).
        defense: the training objective; ``reference_grad`` / ``adversary`` are passed to it
            through the :class:`TrainContext` when it declares them in ``needs``.
        x_train: uint8 (N, C, H, W); y_train: long (N,), on CPU.
        config: epochs, batch size, recipe, early stopping, device, autocast, progress bar.
        seed: seeds parameter initialisation, the batch order and the augmentation (one
            torch Generator).
        val: for early stopping (``config.patience``): the validation split (uint8 images,
            labels; scored by accuracy) or a function scoring the model (higher is better).
        val_label: what ``val`` measures, for the log lines.
        epoch_log: receives one line after every epoch (mean loss, validation accuracy when
            ``val`` is given, elapsed time, the most time left under the epoch cap).
        on_epoch: ``(model, epoch) -> reason`` called after every epoch with the weights that
            would be kept (the weight average when the recipe has one); a non-empty reason
            stops training with status ``"rejected"`` (early rejection, nas.evaluation.fitness).
            It must not draw random numbers, so a run it does not stop trains exactly as without it.

    Layers that draw from PyTorch's global generator while training (``nn.Dropout`` in
    squeezenet1_1, vgg16_bn, mobilenet_v3_small) draw from it seeded by ``seed`` too, inside a
    fork: the result depends on ``seed`` alone, not on what the process ran before, and the
    caller's generator state is left as it was.
    """
    device = resolve_device(config.device)
    recipe = config.recipe
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # initialisers read the global generator:
        torch.manual_seed(seed)  # seed it inside a fork so the caller's state is untouched
        model = build_training_model(defense, factory, num_classes=num_classes,
                                     input_shape=tuple(x_train.shape[1:]), device=device)
    ctx = build_context(defense, device=device, generator=generator,
                        reference_grad=reference_grad, adversary=adversary,
                        cache_dir=cache_dir, log=log)
    ctx.label_smoothing = recipe.label_smoothing
    defense.prepare(x_train, y_train, ctx)
    shift = recipe.shift if augmentable(defense, ctx) else 0
    if recipe.shift and not shift:
        log(f"recipe {recipe.name}: no input shifts for {defense.name} (it looks up "
            "precomputed per-image data: cached reference gradients or stylized images)")
    n_batches = math.ceil(len(x_train) / config.batch_size) * config.epochs
    optimizer = recipe.optimizer_for(model.parameters())
    scheduler = recipe.scheduler_for(optimizer, n_batches)
    average = WeightAverage(model, recipe.ema) if recipe.ema else None
    stopper = None
    if config.patience and val is not None:
        per_epoch = math.ceil(len(x_train) / config.batch_size)
        first = (first_stop_epoch(recipe, config.epochs, per_epoch)
                 if config.stop_when_annealed else 0)
        stopper = _EarlyStopping(config.patience, val, device, val_label, first)
    amp = _autocast(device, config.amp)
    outcome, start = TrainOutcome(model=model), time.perf_counter()
    epoch_loss, epoch_steps = 0.0, 0
    model.train()
    bar = tqdm(total=n_batches, desc="train", disable=not config.progress, leave=False)
    x_dev, y_dev = x_train.to(device), y_train.to(device)
    for epoch in range(config.epochs):
        ctx.epoch = epoch
        for idx in torch.randperm(len(x_train), generator=generator).split(config.batch_size):
            idx_dev = idx.to(device)
            x = x_dev[idx_dev].float().div_(255.0)  # (B, C, H, W)
            if shift:
                x = random_shift(x, shift, generator)
            batch = Batch(x=to_training_layout(x), y=y_dev[idx_dev], index=idx_dev)
            loss, logs = train_step(model, defense, optimizer, batch, ctx, amp)
            if not torch.isfinite(loss):
                outcome.status, outcome.reason = "diverged", f"non-finite loss at step {ctx.step}"
                bar.close()
                outcome.seconds = time.perf_counter() - start
                return outcome
            if scheduler is not None:
                scheduler.step()
            if average is not None:
                average.update(model)
            ctx.step += 1
            epoch_loss, epoch_steps = epoch_loss + float(loss), epoch_steps + 1
            outcome.logs = logs
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        outcome.epochs = epoch + 1
        stop = stopper is not None and stopper.after_epoch(model, average, epoch + 1)
        if epoch_log is not None:
            epoch_log(_epoch_line(epoch + 1, config.epochs, epoch_loss / max(1, epoch_steps),
                                  stopper, time.perf_counter() - start))
        epoch_loss, epoch_steps = 0.0, 0
        if stop:
            break
        if on_epoch is not None and epoch + 1 < config.epochs:
            reason = _call_on_averaged(on_epoch, model, average, epoch + 1)
            if reason:
                outcome.status, outcome.reason = "rejected", reason
                break
    bar.close()
    if average is not None:
        model.load_state_dict(average.averaged())
    if stopper is not None:
        stopper.restore(model)
        outcome.best_epoch, outcome.val_acc = stopper.best_epoch, stopper.best
        log(f"early stopping: {outcome.epochs} epochs run, kept epoch {stopper.best_epoch} "
            f"({stopper.label} {stopper.best:.4f})")
    outcome.steps, outcome.seconds = ctx.step, time.perf_counter() - start
    model.eval()
    return outcome


def _epoch_line(epoch: int, cap: int, loss: float, stopper: _EarlyStopping | None,
                elapsed: float) -> str:
    """``epoch 3/8: loss 0.512, validation accuracy 0.8730, 41 s, at most 1:49 left``."""
    left = elapsed / epoch * (cap - epoch)
    val = f", {stopper.label} {stopper.last:.4f}" if stopper is not None else ""
    return (f"epoch {epoch}/{cap}: loss {loss:.3f}{val}, {elapsed:.0f} s, at most "
            f"{int(left // 60)}:{int(left % 60):02d} left")
def _call_on_averaged(fn: Callable[[nn.Module, int], str], model: nn.Module,
                      average: WeightAverage | None, epoch: int) -> str:
    """``fn(model, epoch)`` with the averaged weights loaded (the live ones restored after)."""
    if average is None:
        return fn(model, epoch)
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(average.averaged())
    try:
        return fn(model, epoch)
    finally:
        model.load_state_dict(live)


def augmentable(defense: Defense, ctx: TrainContext) -> bool:
    """Whether inputs may be augmented for ``defense``: not when it looks up precomputed
    per-image data by ``batch.index`` (cached reference gradients; ``indexed_inputs``)."""
    if getattr(defense, "indexed_inputs", False):
        return False
    return not ("reference_grad" in defense.needs
                and isinstance(ctx.reference_grad, CachedReferenceGrad))


class _EarlyStopping:
    """The validation score after every epoch; remembers the best weights (CPU copy).

    Patience may stop training only after epoch ``first`` (:func:`first_stop_epoch`)."""

    def __init__(self, patience: int,
                 val: tuple[torch.Tensor, torch.Tensor] | Callable[[nn.Module], float],
                 device: torch.device, label: str = "validation accuracy",
                 first: int = 0) -> None:
        if callable(val):
            self.measure = val
        else:
            x, y = val
            self.measure = lambda m: float((predict(m, x, device=device) == y).float().mean())
        self.patience, self.label, self.first = patience, label, first
        self.best, self.best_epoch, self.state, self.last = -1.0, 0, None, -1.0

    def after_epoch(self, model: nn.Module, average: WeightAverage | None, epoch: int) -> bool:
        """Record this epoch; ``True`` when training should stop."""
        if average is not None:
            live = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(average.averaged())
        acc = float(self.measure(model))
        self.last = acc
        if acc > self.best:
            self.best, self.best_epoch = acc, epoch
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if average is not None:
            model.load_state_dict(live)
        return epoch >= self.first and epoch - self.best_epoch >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 500,
            device: torch.device | None = None) -> torch.Tensor:
    """Predicted labels (N,) of uint8 or float [0, 1] images (N, C, H, W), in eval mode; the
    model's previous mode is restored afterwards, also on error."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        preds = []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()  # (B, C, H, W)
            preds.append(model(xb).argmax(dim=1).cpu())  # (B,)
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    finally:
        model.train(was_training)
