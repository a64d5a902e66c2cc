"""In-house, batched evasion attacks in [0, 1] pixel space, and cached transferred sets.

All attacks maximise the cross-entropy of ``model`` (untargeted) and share one signature
``attack(model, x, y, *, eps, step_size, steps, generator) -> x_adv`` with ``x`` float pixels
``(N, C, H, W)`` in [0, 1]. The result always lies in the eps-ball around ``x`` (L-inf or L2)
and in the [0, 1] box. :func:`run_attack` puts the model in eval mode and restores its mode
afterwards; gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so
parameters are never changed and their ``.grad`` is never touched.

- ``fgsm``: Goodfellow et al. 2015, ``x + eps * sign(grad)``.
- ``bim``: Kurakin et al. 2017, ``steps`` FGSM steps of ``step_size``, projected.
- ``pgd-linf``: Madry et al. 2018, BIM from a uniform random start in the eps-ball (the
  attack of the paper's tables, gm-neuroevolution §4).
- ``pgd-l2``: PGD with L2-normalised steps, projected onto the L2 ball.
- ``mim`` / ``mi-fgsm``: Dong et al. 2018, momentum (decay 1.0) on L1-normalised gradients,
  sign steps (``mi-fgsm`` is the name transfer-attack benchmarks use; the same function).
- ``di-mi-fgsm``: Xie et al. 2019, MI-FGSM whose gradient at each step is taken through a
  random input-diversity transform (:func:`input_diversity`: with probability 0.5 the batch is
  resized to a random size in ``[H, 1.1 H)``, zero-padded at a random place to ``1.1 H`` and
  resized back to ``H``), the transfer attack of TransferAttack's "input transformation" family.
  The adversarial image itself is never transformed, so it stays in the eps-ball.

An *ensemble of sources* needs no attack of its own: a source named ``a+b`` is the reference
ensemble of :mod:`nas.evaluation.references` (log of the mean member softmax), and any attack
crafted on it follows the averaged loss of its members (Liu et al. 2017).

The transferred adversarial examples of a split are generated once from the reference and
cached on disk (:func:`transferred_set`), keyed by the reference's cache key, the digest of
the exact images and labels attacked, the attack settings and the split; a loaded set is
checked against its own clean images (eps-ball, [0, 1] box, shape) before it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from nas.evaluation.cache import digest, discard, load_entry, save_entry, tensor_digest
from nas.evaluation.training import input_gradients
from nasbase.registry import Registry

AttackFn = Callable[..., torch.Tensor]
ATTACKS: Registry[AttackFn] = Registry("attack")


@dataclass(frozen=True)
class AttackSettings:
    """A fully resolved attack: name, radius, step size and number of steps."""

    name: str
    eps: float
    step_size: float
    steps: int


# Per-dataset defaults (justified in docs/fitness.md): (eps, step_size, steps) per norm.
_DEFAULTS: dict[str, dict[str, tuple[float, float, int]]] = {
    "mnist-like": {"linf": (0.1, 0.02, 10), "l2": (1.5, 0.3, 10)},
    "cifar10": {"linf": (8 / 255, 2 / 255, 10), "l2": (0.5, 0.125, 10)},
}


def list_attacks(pattern: str = "*") -> list[str]:
    """Sorted names of the registered attacks."""
    return ATTACKS.names(pattern)


def resolve_attack(
    name: str, dataset: str, *, eps: float | None = None, step_size: float | None = None,
    steps: int | None = None,
) -> AttackSettings:
    """Fill ``None`` fields with the per-dataset default of the attack's norm."""
    ATTACKS.get(name)  # raises UnknownName with the valid names
    family = ("cifar10" if dataset.startswith("cifar") or dataset == "synthetic-rgb"
              or _rgb_file_dataset(dataset) else "mnist-like")
    d_eps, d_step, d_steps = _DEFAULTS[family]["l2" if name == "pgd-l2" else "linf"]
    if name == "fgsm":
        d_steps = 1
    eps = d_eps if eps is None else float(eps)
    if step_size is None:
        step_size = eps if name == "fgsm" else d_step * eps / d_eps
    return AttackSettings(name, eps, float(step_size), d_steps if steps is None else int(steps))


def _rgb_file_dataset(dataset: str) -> bool:
    """A dataset of the user's files (``folder:``, ``npz:``, a plugin's ``prefix:``) with RGB
    images: it takes the CIFAR-10 budgets, gray ones the MNIST-like budgets."""
    if ":" not in dataset:
        return False
    from nas.evaluation.data import dataset_info

    return dataset_info(dataset).input_shape[0] == 3


def _project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def _l2_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped (N, 1, 1, 1) for broadcasting."""
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


@ATTACKS.register("fgsm")
def fgsm(model, x, y, *, eps, step_size=None, steps=1, generator=None):
    """One signed step of size ``eps``: ``clip(x + eps * sign(grad_x CE))``."""
    return _project_linf(x + eps * input_gradients(model, x, y).sign(), x, eps)


@ATTACKS.register("bim")
def bim(model, x, y, *, eps, step_size, steps, generator=None):
    """Iterated FGSM from ``x`` with projection onto the L-inf ball after every step."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv = _project_linf(x_adv + step_size * input_gradients(model, x_adv, y).sign(), x, eps)
    return x_adv


@ATTACKS.register("pgd-linf")
def pgd_linf(model, x, y, *, eps, step_size, steps, generator=None):
    """BIM from a uniform random start in the L-inf eps-ball (Madry et al.)."""
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
    x_adv = _project_linf(x + (2 * noise - 1) * eps, x, eps)
    for _ in range(steps):
        x_adv = _project_linf(x_adv + step_size * input_gradients(model, x_adv, y).sign(), x, eps)
    return x_adv


def _project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    delta = x_adv - x
    delta = delta * (eps / _l2_norm(delta)).clamp(max=1.0)
    # Clamping to the box moves every coordinate toward x, so the L2 radius only shrinks.
    return (x + delta).clamp_(0.0, 1.0)


@ATTACKS.register("pgd-l2")
def pgd_l2(model, x, y, *, eps, step_size, steps, generator=None):
    """PGD with steps ``step_size * g / ||g||_2`` and projection onto the L2 ball."""
    noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    r = torch.rand(x.shape[0], generator=generator).to(x.device).view(-1, *[1] * (x.dim() - 1))
    x_adv = _project_l2(x + noise / _l2_norm(noise) * eps * r, x, eps)
    for _ in range(steps):
        g = input_gradients(model, x_adv, y)
        x_adv = _project_l2(x_adv + step_size * g / _l2_norm(g), x, eps)
    return x_adv


@ATTACKS.register("mim")
def mim(model, x, y, *, eps, step_size, steps, generator=None, decay: float = 1.0):
    """Momentum iterative method: ``m = decay*m + g/||g||_1``, step ``step_size*sign(m)``."""
    x_adv, m = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        g = input_gradients(model, x_adv, y)
        m = decay * m + g / g.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = _project_linf(x_adv + step_size * m.sign(), x, eps)
    return x_adv


ATTACKS.register("mi-fgsm")(mim)

#: Input diversity of Xie et al. (2019): resize range and the probability of transforming.
DI_RESIZE, DI_PROB = 1.1, 0.5


def input_diversity(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One random input-diversity transform of a batch (Xie et al. 2019, eq. 5 and Fig. 2).

    With probability :data:`DI_PROB` the batch ``(N, C, H, W)`` is resized (bilinear) to a
    random ``r x r``, ``H <= r < round(1.1 H)``, zero-padded at a random offset to
    ``round(1.1 H)`` square and resized back to ``H x W`` (the networks here take one input
    size); otherwise it is returned unchanged. One transform per batch, drawn from
    ``generator`` (CPU), so the same generator state gives the same transform.
    """
    h, w = x.shape[-2:]
    big = max(int(round(h * DI_RESIZE)), h + 1)
    draws = torch.rand(1, generator=generator)
    r = int(torch.randint(h, big, (1,), generator=generator))
    top = int(torch.randint(0, big - r + 1, (1,), generator=generator))
    left = int(torch.randint(0, big - r + 1, (1,), generator=generator))
    if float(draws) >= DI_PROB:
        return x
    out = torch.nn.functional.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
    out = torch.nn.functional.pad(out, (left, big - r - left, top, big - r - top), value=0.0)
    return torch.nn.functional.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)


class _Diverse(nn.Module):
    """``model(input_diversity(x))``: the model an input-diversity step differentiates."""

    def __init__(self, model: nn.Module, generator: torch.Generator | None) -> None:
        super().__init__()
        self.model, self.generator = model, generator
        self.train(model.training)  # input_gradients restores this mode on the inner model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_diversity(x, self.generator))


@ATTACKS.register("di-mi-fgsm")
def di_mi_fgsm(model, x, y, *, eps, step_size, steps, generator=None, decay: float = 1.0):
    """MI-FGSM with each gradient taken through :func:`input_diversity` (Xie et al. 2019)."""
    return mim(_Diverse(model, generator), x, y, eps=eps, step_size=step_size, steps=steps,
               decay=decay)


def run_attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: AttackSettings,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Attack one batch in eval mode, restoring the model's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        fn = ATTACKS.get(settings.name)
        return fn(model, x, y, eps=settings.eps, step_size=settings.step_size,
                  steps=settings.steps, generator=generator).detach()
    finally:
        model.train(was_training)


def attack_dataset(
    model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, settings: AttackSettings, *,
    batch_size: int = 250, device: torch.device | None = None, seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Adversarial versions of a whole uint8 set, float32 ``(N, C, H, W)`` in [0, 1] on CPU."""
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(seed)
    out = []
    chunks = range(0, len(x_uint8), batch_size)
    for i in tqdm(chunks, desc=f"attack {settings.name}", disable=not progress, leave=False):
        xb = x_uint8[i : i + batch_size].to(device).float().div_(255.0)
        out.append(run_attack(model, xb, y[i : i + batch_size].to(device), settings, g).cpu())
    return torch.cat(out) if out else torch.empty(0)


def transferred_key(ref_key: str, split: str, x_uint8: torch.Tensor, y: torch.Tensor,
                    settings: AttackSettings, seed: int = 0) -> dict:
    """What a transferred set is computed from: the reference's key, the digest of the exact
    clean images and labels, the attack settings and its seed (the split names the file)."""
    return {"reference": ref_key, "images": tensor_digest(x_uint8, y), "n": len(x_uint8),
            "attack": asdict(settings), "seed": seed, "split": split}


def check_adversarial(x_adv: torch.Tensor, x_uint8: torch.Tensor,
                      settings: AttackSettings) -> str | None:
    """Why ``x_adv`` cannot be the attack's output on ``x_uint8`` (a phrase), or ``None``.

    Cheap checks: shape and dtype, finite, inside the [0, 1] box and inside the eps-ball
    (L-inf, or per-sample L2 for ``pgd-l2``) around its own clean images.
    """
    if not len(x_uint8):
        return None if not x_adv.numel() else f"holds {len(x_adv)} images, expected none"
    if x_adv.shape != x_uint8.shape or x_adv.dtype != torch.float32:
        return (f"holds {x_adv.dtype} {tuple(x_adv.shape)}, expected float32 "
                f"{tuple(x_uint8.shape)}")
    if not bool(torch.isfinite(x_adv).all()) or x_adv.min() < 0 or x_adv.max() > 1:
        return "lies outside the [0, 1] box"
    delta = x_adv - x_uint8.float().div(255.0)  # (N, C, H, W)
    if settings.name == "pgd-l2":
        dist = float(delta.flatten(1).norm(dim=1).max())
    else:
        dist = float(delta.abs().max())
    if dist > settings.eps * (1 + 1e-5) + 1e-6:
        return f"lies {dist:.4g} from its clean images, outside the eps-ball ({settings.eps:g})"
    return None


def transferred_set(
    reference: nn.Module, ref_key: str, split: str, x_uint8: torch.Tensor, y: torch.Tensor,
    settings: AttackSettings, cache: Path, *, device: torch.device | None = None,
    progress: bool = False, log: Callable[[str], None] = print,
) -> torch.Tensor:
    """The reference's adversarial examples of a split, generated once and cached on disk.

    Cache key (:func:`transferred_key`): the reference's key, the digest of the exact images
    and labels attacked, the attack settings and seed; one all-or-nothing file
    ``adversarial/<attack>-<split>-<key>.pt`` (tensor + description, :mod:`nas.evaluation.cache`). A
    loaded set is checked (:func:`check_adversarial`) and regenerated, with one log line,
    when the check fails.
    """
    content = transferred_key(ref_key, split, x_uint8, y, settings)
    path = cache / "adversarial" / f"{settings.name}-{split}-{digest(content)}.pt"
    entry = load_entry(path, content, log=log)
    if entry is not None:
        x_adv = entry[0].get("x_adv", torch.empty(0))
        problem = check_adversarial(x_adv, x_uint8, settings)
        if problem is None:
            return x_adv
        discard(path, problem, log)
    log(f"generating {settings.name} adversarial set of split {split!r} ({len(x_uint8)} images)")
    x_adv = attack_dataset(reference, x_uint8, y, settings, device=device, progress=progress,
                           seed=content["seed"])
    save_entry(path, content, {"x_adv": x_adv})
    return x_adv
