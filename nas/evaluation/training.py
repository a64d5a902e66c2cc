"""The one training loop for every defense, and the reference input-gradient cache.

:func:`train` calls the defense contract of ``defenses/base.py``: ``wrap`` (build the module
to train from a factory), ``prepare`` (once, with the uint8 training set), then ``loss`` every
step, followed by ``backward`` and an optimizer step of the :class:`nas.evaluation.recipe.Recipe` in
``TrainConfig.recipe`` (``paper``: Adam with PyTorch defaults, constant rate, batch 128, paper
§4). Batches are sliced from in-memory uint8 tensors with a seeded torch Generator; a
non-finite loss stops training with status ``"diverged"``. Everything on top of the loop
(early stopping, early rejection, epoch lines) is a callback the caller composes
(:mod:`nas.evaluation.callbacks`).

Reference gradients (``TrainContext.reference_grad``) are the input gradients of the
reference's *summed* CE loss in eval mode, detached. Without augmentation they are a pure
function of the training image, so they are computed once for the whole training set
(:func:`reference_gradients`) and looked up by ``batch.index`` (:class:`CachedReferenceGrad`);
:class:`LiveReferenceGrad` computes them per batch instead (for augmentation or benchmarks).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from defenses.base import Batch, Defense, TrainContext
from nas.devices import pinned_device
from nas.errors import UserError
from nas.evaluation.allocator import keep_freed_memory
from nas.evaluation.callbacks import Callback, Loop, ProgressBar, Stop, steps_per_epoch
from nas.evaluation.double_backward import use_fast_double_backward
from nas.evaluation.recipe import PAPER_RECIPE, Recipe, WeightAverage, random_shift
from nasbase.files import write_atomically


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs (the cap when ``patience`` > 0), batch size, recipe, early
    stopping, device, bf16 autocast, progress.

    ``patience`` > 0: the caller adds early stopping
    (:meth:`nas.evaluation.callbacks.EarlyStopping.for_config`): stop once the validation
    score has not improved for ``patience`` epochs and keep the best weights; the
    learning-rate schedule always spans ``epochs``.
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
    derivatives of :mod:`nas.evaluation.double_backward`: both make the plain and the GM step
    faster than PyTorch's own layers in the default layout (``nas.bench`` measures by how much;
    docs/fitness.md, "Speed").
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
    """One optimisation step; returns the (detached) loss and the defense's logs.

    A defense with ``replays`` > 1 (free adversarial training) gets the batch that many
    times: one loss + backward + optimizer step per replay, the last replay's loss returned.
    """
    for _ in range(getattr(defense, "replays", 1) - 1):
        loss, logs = _optimise_once(model, defense, optimizer, batch, ctx, amp)
        if not torch.isfinite(loss):
            return loss, logs
    return _optimise_once(model, defense, optimizer, batch, ctx, amp)


def _optimise_once(
    model: nn.Module, defense: Defense, optimizer: torch.optim.Optimizer, batch: Batch,
    ctx: TrainContext, amp: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One loss + backward + optimizer step; the backward also fills ``.grad`` of the
    defense's ``out.grad_inputs`` (defenses/base.py)."""
    optimizer.zero_grad(set_to_none=True)
    with amp or contextlib.nullcontext():
        out = defense.loss(model, batch, ctx)
    loss = out.loss.float()
    if not torch.isfinite(loss):
        return loss.detach(), out.logs
    # Gradients of the optimised parameters only: no wasted input gradient of the first layer
    # when a defense made the batch require grad (gm's input gradients).
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    loss.backward(inputs=(params + list(out.grad_inputs)) or None)
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


@dataclass(frozen=True)
class TrainData:
    """What a network trains on: the uint8 training set and what a defense may need.

    ``x``: uint8 ``(N, C, H, W)``; ``y``: long ``(N,)``, on CPU. ``reference_grad`` and
    ``adversary`` reach the defense through its :class:`TrainContext` when it declares them in
    ``needs``; ``cache_dir`` is where a defense caches precomputed data (stylized images).
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    reference_grad: Callable | None = None
    adversary: Callable | None = None
    cache_dir: str | None = None


@_seeds_global_generator
def train(
    factory: Callable[[], nn.Module], defense: Defense, data: TrainData, *,
    config: TrainConfig, seed: int, callbacks: Sequence[Callback] = (),
    log: Callable[[str], None] = print,
) -> TrainOutcome:
    """Build (``defense.wrap``) and train a module with ``defense`` for ``config.epochs``.

    Args:
        factory: returns a fresh network (the model contract of docs/architecture.md).
        defense: the training objective.
        data: the training set and what the defense needs.
        config: epochs, batch size, recipe, device, autocast, progress bar.
        seed: seeds parameter initialisation, the batch order and the augmentation (one
            torch Generator).
        callbacks: the features on top of the loop, in order (early stopping, early
            rejection, epoch lines: :mod:`nas.evaluation.callbacks`); a progress bar is added
            when ``config.progress``.

    Layers that draw from PyTorch's global generator while training (``nn.Dropout`` in
    squeezenet1_1, vgg16_bn, mobilenet_v3_small) draw from it seeded by ``seed`` too, inside a
    fork: the result depends on ``seed`` alone, not on what the process ran before, and the
    caller's generator state is left as it was.
    """
    device, recipe = resolve_device(config.device), config.recipe
    generator = torch.Generator().manual_seed(seed)
    model, ctx, shift = _prepared(factory, defense, data, config, seed, generator, log)
    n_batches = steps_per_epoch(len(data.x), config.batch_size) * config.epochs
    optimizer = recipe.optimizer_for(model.parameters())
    scheduler = recipe.scheduler_for(optimizer, n_batches)
    callbacks = [*callbacks, *([ProgressBar(n_batches)] if config.progress else [])]
    loop = Loop(model=model, outcome=TrainOutcome(model=model), epochs=config.epochs,
                average=WeightAverage(model, recipe.ema) if recipe.ema else None, log=log)
    amp, start = _autocast(device, config.amp), time.perf_counter()
    model.train()
    x_dev, y_dev = data.x.to(device), data.y.to(device)
    for epoch in range(config.epochs):
        ctx.epoch, total, steps = epoch, 0.0, 0
        for batch in _batches(x_dev, y_dev, generator, config.batch_size, shift):
            loss, logs = train_step(model, defense, optimizer, batch, ctx, amp)
            if not torch.isfinite(loss):
                return _diverged(loop, callbacks, f"non-finite loss at step {ctx.step}", start)
            if scheduler is not None:
                scheduler.step()
            if loop.average is not None:
                loop.average.update(model)
            ctx.step, total, steps = ctx.step + 1, total + float(loss), steps + 1
            loop.outcome.logs = logs
            for cb in callbacks:
                cb.on_step(loop, float(loss))
        loop.outcome.epochs = loop.epoch = epoch + 1
        loop.epoch_loss, loop.elapsed = total / max(1, steps), time.perf_counter() - start
        loop.metrics = {}
        stop = _end_epoch(loop, callbacks)
        if stop is not None:
            if stop.status != "ok":
                loop.outcome.status, loop.outcome.reason = stop.status, stop.reason
            break
    if loop.average is not None:
        model.load_state_dict(loop.average.averaged())
    for cb in callbacks:
        cb.on_train_end(loop)
    loop.outcome.steps, loop.outcome.seconds = ctx.step, time.perf_counter() - start
    model.eval()
    return loop.outcome


def _prepared(factory: Callable[[], nn.Module], defense: Defense, data: TrainData,
              config: TrainConfig, seed: int, generator: torch.Generator,
              log: Callable[[str], None]) -> tuple[nn.Module, TrainContext, int]:
    """The module to train (initialised from ``seed``), the defense's context (prepared
    with the training set) and the pixels of input shift the recipe may use with it."""
    device, recipe = resolve_device(config.device), config.recipe
    with torch.random.fork_rng(devices=[]):  # initialisers read the global generator:
        torch.manual_seed(seed)  # seed it inside a fork so the caller's state is untouched
        model = build_training_model(defense, factory, num_classes=data.num_classes,
                                     input_shape=tuple(data.x.shape[1:]), device=device)
    ctx = build_context(defense, device=device, generator=generator,
                        reference_grad=data.reference_grad, adversary=data.adversary,
                        cache_dir=data.cache_dir, log=log)
    ctx.label_smoothing = recipe.label_smoothing
    defense.prepare(data.x, data.y, ctx)
    shift = recipe.shift if augmentable(defense, ctx) else 0
    if recipe.shift and not shift:
        log(f"recipe {recipe.name}: no input shifts for {defense.name} (it looks up "
            "precomputed per-image data: cached reference gradients or stylized images)")
    return model, ctx, shift


def _batches(x_dev: torch.Tensor, y_dev: torch.Tensor, generator: torch.Generator,
             batch_size: int, shift: int) -> Iterator[Batch]:
    """One epoch of batches in the generator's order, pixels in [0, 1], shifted by up to
    ``shift`` pixels, in the training layout."""
    for idx in torch.randperm(len(x_dev), generator=generator).split(batch_size):
        idx_dev = idx.to(x_dev.device)
        x = x_dev[idx_dev].float().div_(255.0)  # (B, C, H, W)
        if shift:
            x = random_shift(x, shift, generator)
        yield Batch(x=to_training_layout(x), y=y_dev[idx_dev], index=idx_dev)


def _end_epoch(loop: Loop, callbacks: Sequence[Callback]) -> Stop | None:
    """Every callback's end of epoch, in order; after a stop, only the observers."""
    stop = None
    for cb in callbacks:
        if stop is None or cb.observer:
            asked = cb.on_epoch_end(loop)
            stop = stop or asked
    return stop


def _diverged(loop: Loop, callbacks: Sequence[Callback], reason: str,
              start: float) -> TrainOutcome:
    loop.outcome.status, loop.outcome.reason = "diverged", reason
    for cb in callbacks:
        cb.on_train_end(loop)
    loop.outcome.seconds = time.perf_counter() - start
    return loop.outcome


def augmentable(defense: Defense, ctx: TrainContext) -> bool:
    """Whether inputs may be augmented for ``defense``: not when it looks up precomputed
    per-image data by ``batch.index`` (cached reference gradients; ``indexed_inputs``)."""
    if getattr(defense, "indexed_inputs", False):
        return False
    return not ("reference_grad" in defense.needs
                and isinstance(ctx.reference_grad, CachedReferenceGrad))


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
