"""Input transformations as test-time defenses (gm-neuroevolution Table 6: "JPEG Comp.",
"Bilateral Filt."), wrapping any trained model.

A transform maps a batch of pixels in [0, 1] to pixels in [0, 1], ``(N, C, H, W)``; it is not
trained. :class:`Transformed` puts one in front of a model (``model(transform(x))``), so
everything that scores a model (accuracies, fooling rates, attacks) scores the defended
model unchanged. Registry as for the training objectives (STYLE.md §1):
``create_transform("jpeg", quality=75)``, ``list_transforms()``; a transform's constructor
stores keyword-only arguments, ``check()`` validates them.

- ``jpeg`` (Das et al. 2017, Guo et al. 2018): each image encoded as a baseline JPEG of
  ``quality`` (1-95) with Pillow and decoded again. The codec is not differentiable: its
  backward is the identity (BPDA, Athalye et al. 2018), so a white-box attack through it is
  the usual adaptive attack on it, and a transferred example is unaffected by the choice.
- ``bilateral`` (the bilateral filter as a defense, [53] of the paper): edge-preserving
  smoothing, ``kornia.filters.bilateral_blur`` with a ``kernel`` x ``kernel`` window, range
  sigma ``sigma_color`` (in [0, 1] pixel units) and spatial sigma ``sigma_space`` (pixels),
  reflected borders. Differentiable, so a white-box attack goes through it exactly.

Defaults: JPEG quality 75 (the setting of the JPEG-defense papers); bilateral 5 x 5 window,
``sigma_color`` 0.1, ``sigma_space`` 1.0, sized for 28 x 28 and 32 x 32 images.
"""

from __future__ import annotations

import io
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from nasbase.registry import Registry


class InputTransform:
    """Base class: ``apply(x) -> x'`` on float pixels in [0, 1], (N, C, H, W)."""

    name: str = ""

    def hparams(self) -> dict[str, Any]:
        """The constructor's keyword arguments as stored (JSON-able)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def check(self) -> None:
        """Raise ``ValueError`` when the stored arguments cannot work."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


TRANSFORMS: Registry[type[InputTransform]] = Registry("input transform")


def register_transform(name: str):
    """Class decorator registering an :class:`InputTransform` subclass under ``name``."""
    return TRANSFORMS.register_named(name)


def list_transforms(pattern: str = "*") -> list[str]:
    """Sorted names of the registered input transforms matching ``pattern``."""
    return TRANSFORMS.names(pattern)


def create_transform(name: str, **hparams: Any) -> InputTransform:
    """Instantiate a registered input transform; unknown names raise ``UnknownName``."""
    return TRANSFORMS.create(name, **hparams)


def _check_number(name: str, value: object, low: float, high: float | None = None,
                  integer: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not value >= low \
            or (high is not None and value > high):
        span = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {span}, "
                         f"not {value!r}")


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """One uint8 image (H, W) or (H, W, 3) through Pillow's JPEG encoder and decoder."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L" if image.ndim == 2 else "RGB"))


class _StraightThrough(torch.autograd.Function):
    """Forward: the given output; backward: the identity (BPDA)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


@register_transform("jpeg")
class JPEGCompression(InputTransform):
    """Pillow JPEG encode + decode at ``quality`` per image; identity backward (BPDA)."""

    def __init__(self, *, quality: int = 75) -> None:
        self.quality = quality

    def check(self) -> None:
        _check_number("quality", self.quality, 1, 95, integer=True)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # (N, C, H, W)
        images = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        if images.shape[-1] == 1:
            images = images[..., 0]  # (N, H, W): Pillow's grey-scale mode
        out = np.stack([jpeg_roundtrip(np.ascontiguousarray(im), int(self.quality))
                        for im in images])
        out_t = torch.from_numpy(out.reshape(images.shape)).to(x.device)
        out_t = (out_t.unsqueeze(1) if out_t.dim() == 3 else out_t.permute(0, 3, 1, 2))
        return _StraightThrough.apply(x, out_t.to(x.dtype) / 255.0)  # (N, C, H, W)


@register_transform("bilateral")
class BilateralFilter(InputTransform):
    """``kornia.filters.bilateral_blur`` with a square window and isotropic spatial sigma."""

    def __init__(self, *, kernel: int = 5, sigma_color: float = 0.1,
                 sigma_space: float = 1.0) -> None:
        self.kernel = kernel
        self.sigma_color = sigma_color
        self.sigma_space = sigma_space

    def check(self) -> None:
        _check_number("kernel", self.kernel, 3, integer=True)
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, not {self.kernel}")
        _check_number("sigma_color", self.sigma_color, 1e-6)
        _check_number("sigma_space", self.sigma_space, 1e-6)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.filters import bilateral_blur

        k, s = int(self.kernel), float(self.sigma_space)
        return bilateral_blur(x, (k, k), float(self.sigma_color), (s, s))  # (N, C, H, W)


class Transformed(nn.Module):
    """``model(transform(x))``: a trained model behind a test-time input transformation.

    Follows the model contract where the model does (``num_classes``); ``forward`` takes
    pixels in [0, 1] like every model of the project."""

    def __init__(self, transform: InputTransform, model: nn.Module) -> None:
        super().__init__()
        self.transform = transform
        self.model = model
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform.apply(x))  # (N, K)
