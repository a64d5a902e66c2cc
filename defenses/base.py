"""The contract every training objective (defense) follows.

A defense is a plugin with one verb (STYLE.md §2): ``loss(model, batch, ctx)`` returns a
:class:`DefenseOutput` holding the scalar loss to minimise, the logits of the clean batch
and a dict of numbers to log. Its constructor stores keyword-only hyper-parameters and
nothing else (STYLE.md §3), so ``defense.hparams()`` round-trips into the run config.

The one training loop (``nas.evaluation.training``) calls, in order:

1. ``model = defense.wrap(factory, num_classes=..., input_shape=...)``: the module that is
   trained and evaluated. The default is ``factory()``; ensemble defenses build ``k`` members
   (and e.g. CLDL's label-confusion model) inside one ``nn.Module`` whose ``forward`` gives the
   ensemble's logits (log of the mean member softmax).
2. ``defense.prepare(x_train, y_train, ctx)`` once before training (e.g. precompute a
   stylized copy of the training set); default does nothing.
3. ``defense.loss(model, batch, ctx)`` once per step; the loop does backward + optimizer step.

``needs`` declares what the loop must provide in the :class:`TrainContext`:
``"reference_grad"`` (input gradients of the reference's CE loss, eval mode, detached),
``"adversary"`` (an attack callable ``(model, x, y) -> x_adv`` in pixel space; the loop passes
an :class:`Adversary`, which also names the L-inf radius of the dataset's threat model).

Two optional extensions serve free adversarial training (``defenses/adversarial.py``):
a defense with an integer attribute ``replays`` (> 1) has each minibatch replayed that many
times by ``train_step`` (one ``loss`` + backward + optimizer step per replay), and
:attr:`DefenseOutput.grad_inputs` names tensors whose ``.grad`` the same backward fills
besides the parameters' (the input perturbation's gradient comes free with the weights').
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class Batch:
    """One training batch. ``x`` float pixels in [0, 1], (N, C, H, W); ``y`` long (N,);
    ``index`` long (N,) positions of the samples in the training set (for caches)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


@dataclass
class TrainContext:
    """What the training loop offers a defense besides the model and the batch.

    Attributes:
        epoch: current epoch (0-based).
        step: global optimisation step (0-based).
        device: the device tensors live on.
        generator: torch Generator for any randomness inside ``loss`` (never global RNG).
        reference_grad: ``(x, y, index) -> grad`` input gradient of the reference's summed CE
            loss, (N, C, H, W), detached; ``None`` when the defense does not declare it.
        adversary: ``(model, x, y) -> x_adv`` attack on the model being trained; ``None``
            unless declared.
        cache_dir: directory a defense may cache precomputed data in (or ``None``).
        write_file: ``(path, write)`` writing a file all or nothing, ``write(binary_file)``
            filling it (the loop passes ``nasbase.files.write_atomically``); ``None``: a
            defense does not write its cache.
        log: callable taking one message string (goes to the run log / stderr).
        label_smoothing: label smoothing of the training recipe for the CE training term
            (``none`` and ``gm`` apply it; input gradients stay those of the plain CE).
    """

    epoch: int = 0
    step: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator | None = None
    reference_grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    adversary: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    cache_dir: str | None = None
    write_file: Callable[[str, Callable[[Any], None]], None] | None = None
    log: Callable[[str], None] = print
    label_smoothing: float = 0.0


@dataclass
class DefenseOutput:
    """Result of one ``loss`` call: the scalar to minimise, clean logits (N, K), numbers to log.

    ``grad_inputs``: leaf tensors (requiring grad) whose ``.grad`` the loop's backward fills
    together with the parameters' (free adversarial training reads its perturbation's gradient
    from there); empty for every other defense.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)
    grad_inputs: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class Adversary:
    """An attack on the model being trained, ``(model, x, y) -> x_adv``, with ``eps``: the
    L-inf radius of the dataset's threat model (the per-dataset default of the project's
    attacks), the default radius of the adversarial-training defenses."""

    attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    eps: float

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.attack(model, x, y)


class Defense:
    """Base class. Subclasses set ``name``/``needs`` and implement :meth:`loss`."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    #: ``True`` when ``loss`` looks up precomputed per-image data by ``batch.index``: the loop
    #: then never augments the inputs (the looked-up data would no longer match them).
    indexed_inputs: ClassVar[bool] = False

    def hparams(self) -> dict[str, Any]:
        """The constructor's keyword arguments as stored (JSON-able)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def check(self) -> None:
        """Raise ``ValueError`` when the stored hyper-parameters cannot work (e.g. a weight file
        that does not exist); called by the commands before anything is trained. The
        constructor only stores (STYLE.md §3); default: nothing to check."""

    def wrap(
        self,
        factory: Callable[[], nn.Module],
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
    ) -> nn.Module:
        """Build the module to train from a factory of fresh child networks."""
        return factory()

    def prepare(self, x_train: torch.Tensor, y_train: torch.Tensor, ctx: TrainContext) -> None:
        """Hook called once before training with the uint8 training set; default: nothing."""

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"
