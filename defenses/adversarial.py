"""Adversarial training: ``pgd-at``, ``fast-at`` and ``free-at`` (gm-neuroevolution Table 6).

All three minimise the cross-entropy on L-inf adversarial examples of the model being
trained, Madry et al.'s saddle-point problem (2018, eq. 2.1)::

    min_theta E_(x,y) [ max_{||delta||_inf <= eps, x+delta in [0,1]} CE(f_theta(x + delta), y) ]

and differ in how they approximate the inner maximisation:

- ``pgd-at`` (Madry et al. 2018): ``steps`` signed-gradient ascent steps of ``alpha`` from a
  uniform random start in the eps-ball, projected onto the ball and the [0, 1] box after each.
  Defaults: the paper's CIFAR-10 training attack (7 steps of 2/255 at eps 8/255), i.e. 7
  steps of eps / 4 at the dataset's eps.
- ``fast-at`` (Wong, Rice and Kolter 2020, "Fast is better than free", Alg. 3): one FGSM step
  of ``alpha`` = 1.25 eps from a uniform random start in the eps-ball, projected back.
- ``free-at`` (Shafahi et al. 2019, "Adversarial training for free!", Alg. 1): every minibatch
  is replayed ``replays`` times (m; 8 is the paper's CIFAR-10 value). Each replay is one
  forward / backward on ``x + delta`` whose backward gives the weights' gradient (one
  optimizer step) and delta's gradient at once; delta then ascends ``alpha`` (= eps, the
  paper's step) along that gradient's sign, clipped to the eps-ball. delta starts at zero and
  is carried over from one minibatch to the next. The loop's part (``train_step``) is the
  replay count (the ``replays`` attribute) and filling ``delta.grad`` in the same backward
  (``DefenseOutput.grad_inputs``; defenses/base.py). One epoch of ``free-at`` is ``replays``
  passes of optimizer steps over the data: the paper trains ``epochs / m`` epochs to cost
  what natural training costs, so divide ``--epochs`` by ``replays`` for that comparison.

The radius: ``eps=None`` (the default) takes the L-inf eps of the dataset's threat model from
the loop's :class:`~defenses.base.Adversary` (``ctx.adversary.eps``: the project's
per-dataset default, 0.1 on the MNIST family, 8/255 on CIFAR-10, the radius of the
transferred PGD examples); ``eps=...`` sets it. ``alpha=None`` is the paper's step for that
eps. The attacks run in the model's current (training) mode, as the three papers' code does.

``DefenseOutput.logits`` are those of the adversarial batch trained on (no clean forward is
spent on logging).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import register_defense


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x_adv`` projected onto the L-inf eps-ball around ``x`` and the [0, 1] box."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def uniform_start(x: torch.Tensor, eps: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """A uniform random point of the eps-ball around ``x`` (in the box): (N, C, H, W)."""
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    return project(x + (2 * noise - 1) * eps, x, eps)


def _ascent_direction(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sign(grad_x CE(model(x_adv), y))``; parameters' ``.grad`` untouched."""
    x_adv = x_adv.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv).float(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad.sign()


def _check_number(name: str, value: object, *, optional: bool = True,
                  integer: bool = False, upper: float | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive number (an int when ``integer``),
    at most ``upper``, or ``None`` when ``optional``."""
    if value is None and optional:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 \
            or (upper is not None and value > upper):
        what = "a positive integer" if integer else "a positive number"
        bound = f" at most {upper:g}" if upper is not None else ""
        raise ValueError(f"{name} must be {what}{bound}, not {value!r}")


class _LinfAdversarialTraining(Defense):
    """Shared parts: the radius (argument or the dataset's), the checks, and the loss on the
    examples of :meth:`perturb` (CE on them alone)."""

    needs = frozenset({"adversary"})
    eps: float | None
    alpha: float | None

    def check(self) -> None:
        _check_number("eps", self.eps, upper=1.0)
        _check_number("alpha", self.alpha)

    def radius(self, ctx: TrainContext) -> float:
        """``eps`` when given, else the dataset's (``ctx.adversary.eps``)."""
        if self.eps is not None:
            return float(self.eps)
        eps = getattr(ctx.adversary, "eps", None)
        if eps is None:
            raise ValueError(f"{self.name} needs eps: pass eps=... or an Adversary naming the "
                             "dataset's eps in ctx.adversary")
        return float(eps)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The adversarial examples trained on: (N, C, H, W) in the eps-ball and the box."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        eps = self.radius(ctx)
        x_adv = self.perturb(model, batch.x, batch.y, eps, ctx.generator)
        return self._output(model, x_adv, batch, ctx, eps)

    def _output(self, model: nn.Module, x_adv: torch.Tensor, batch: Batch, ctx: TrainContext,
                eps: float) -> DefenseOutput:
        logits = model(x_adv)  # (N, K)
        ce = F.cross_entropy(logits.float(), batch.y, label_smoothing=ctx.label_smoothing)
        return DefenseOutput(loss=ce, logits=logits,
                             logs={"ce_adv": float(ce.detach()), "eps": eps})


@register_defense("pgd-at")
class PGDAdversarialTraining(_LinfAdversarialTraining):
    """CE on ``steps``-step L-inf PGD examples with random start (Madry et al. 2018)."""

    def __init__(self, *, eps: float | None = None, alpha: float | None = None,
                 steps: int = 7) -> None:
        self.eps = eps
        self.alpha = alpha
        self.steps = steps

    def check(self) -> None:
        super().check()
        _check_number("steps", self.steps, optional=False, integer=True)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The PGD examples trained on: (N, C, H, W) in the eps-ball and the box, detached."""
        alpha = eps / 4 if self.alpha is None else float(self.alpha)
        x = x.detach()
        x_adv = uniform_start(x, eps, generator)
        for _ in range(int(self.steps)):
            x_adv = project(x_adv + alpha * _ascent_direction(model, x_adv, y), x, eps)
        return x_adv.detach()


@register_defense("fast-at")
class FastAdversarialTraining(_LinfAdversarialTraining):
    """CE on FGSM examples from a uniform random start, step 1.25 eps (Wong et al. 2020)."""

    def __init__(self, *, eps: float | None = None, alpha: float | None = None) -> None:
        self.eps = eps
        self.alpha = alpha

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The FGSM-with-random-start examples trained on: (N, C, H, W), in the eps-ball."""
        alpha = 1.25 * eps if self.alpha is None else float(self.alpha)
        x = x.detach()
        x_adv = uniform_start(x, eps, generator)
        return project(x_adv + alpha * _ascent_direction(model, x_adv, y), x, eps).detach()


@register_defense("free-at")
class FreeAdversarialTraining(_LinfAdversarialTraining):
    """Minibatch replays with a persistent perturbation updated by the input gradient of the
    weights' own backward (Shafahi et al. 2019, Alg. 1; module docstring)."""

    def __init__(self, *, eps: float | None = None, alpha: float | None = None,
                 replays: int = 8) -> None:
        self.eps = eps
        self.alpha = alpha
        self.replays = replays

    def check(self) -> None:
        super().check()
        _check_number("replays", self.replays, optional=False, integer=True)

    def prepare(self, x_train: torch.Tensor, y_train: torch.Tensor, ctx: TrainContext) -> None:
        """Start every training with delta = 0 (a defense object may train several times)."""
        self._noise: torch.Tensor | None = None  # (B_max, C, H, W) the carried perturbation
        self._delta: torch.Tensor | None = None  # (N, C, H, W) delta of the last loss call
        self._leaf: torch.Tensor | None = None  # (N, C, H, W) x + delta, whose .grad is filled

    @property
    def perturbation(self) -> torch.Tensor | None:
        """delta of the last ``loss`` call (N, C, H, W); ``None`` before the first."""
        return getattr(self, "_delta", None)

    def _next_delta(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Apply the pending ascent step (the last backward's gradient at ``x + delta``) to
        the carried perturbation and return its first ``N`` rows: (N, C, H, W).

        The gradient is taken at the image, not through the clamp to the box, so a pixel
        at 0 or 1 still gets a direction (the clamp's gradient there is zero)."""
        alpha = eps if self.alpha is None else float(self.alpha)
        noise, leaf = getattr(self, "_noise", None), getattr(self, "_leaf", None)
        if noise is None or noise.shape[1:] != x.shape[1:] or noise.device != x.device:
            noise, leaf = torch.zeros_like(x, dtype=torch.float32), None
        if leaf is not None and leaf.grad is not None:
            n = len(leaf)
            noise[:n] = (noise[:n] + alpha * leaf.grad.sign()).clamp(-eps, eps)
        if len(noise) < len(x):  # a larger batch than any before: new rows start at zero
            noise = torch.cat([noise, torch.zeros_like(x[len(noise):], dtype=torch.float32)])
        self._noise = noise
        return noise[: len(x)].clone()

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        eps = self.radius(ctx)
        self._delta = self._next_delta(batch.x, eps)  # (N, C, H, W)
        x_adv = (batch.x.detach() + self._delta.to(batch.x.dtype)).clamp(0.0, 1.0)
        self._leaf = x_adv.requires_grad_(True)  # (N, C, H, W)
        out = self._output(model, self._leaf, batch, ctx, eps)
        out.grad_inputs = (self._leaf,)
        return out
