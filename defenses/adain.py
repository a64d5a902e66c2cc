"""Style transfer for the ``stylized`` defense: AdaIN and two weight-free stylizers.

AdaIN (Huang & Belongie 2017; ``stylized-pairing.txt`` §2.1 eq. 2, §3.3 eq. 3-4):

* eq. (2): ``AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y)``, with ``mu``/``sigma``
  the per-channel mean and standard deviation over the spatial positions;
* eq. (3): ``t = AdaIN(f(c), f(s))`` with ``f`` the VGG-19 encoder up to ``relu4_1``;
* eq. (4): ``T(c, s) = g(t)`` with the trained decoder ``g``.

The encoder and decoder are the ones of the common pytorch-AdaIN release
(``vgg_normalised.pth``: the encoder as an ``nn.Sequential`` whose first 31 entries reach
``relu4_1``; ``decoder.pth``: the mirrored decoder). :func:`load_adain` checks every tensor
of those files against the expected shape and raises a ``ValueError`` naming the file, the
layer and both shapes when they differ.

Without weights two weight-free stylizers are offered:

* ``stats``: eq. (2) applied directly to pixels (per-channel statistics matching);
* ``fourier``: keep the content's Fourier phase and take (a mix of) the style's amplitude
  spectrum, which transfers texture while phase keeps the shapes.

All stylizers take float pixels in [0, 1], (N, C, H, W) with C = 1 or 3, and return the same
shape; 1-channel images are replicated to 3 for VGG and averaged back.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

# (out_channels or "M" for max-pool) of VGG-19 up to relu4_1, after the 1x1 input conv.
_VGG_TO_RELU4_1 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512]
# Decoder: (in, out) convs with "U" = nearest 2x upsampling, mirror of the encoder.
_DECODER = [(512, 256), "U", (256, 256), (256, 256), (256, 256), (256, 128), "U",
            (128, 128), (128, 64), "U", (64, 64), (64, 3)]  # fmt: skip


def calc_mean_std(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over space: (N, C, H, W) -> two (N, C, 1, 1) tensors."""
    flat = feat.flatten(2)  # (N, C, HW)
    mean = flat.mean(dim=2)[..., None, None]
    std = (flat.var(dim=2, unbiased=False) + eps).sqrt()[..., None, None]
    return mean, std


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Eq. (2): content normalised per channel, rescaled to the style's mean and std.

    Args:
        content: (N, C, H, W); style: (N or 1, C, H', W').

    Returns:
        (N, C, H, W) whose per-channel mean/std equal the style's.
    """
    c_mean, c_std = calc_mean_std(content)
    s_mean, s_std = calc_mean_std(style)
    return (content - c_mean) / c_std * s_std + s_mean


def build_vgg_encoder() -> nn.Sequential:
    """VGG-19 (normalised) up to relu4_1, same layer indices as ``vgg_normalised.pth``."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    channels = 3
    for item in _VGG_TO_RELU4_1:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, int(item), 3), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)  # 31 entries, the last one is relu4_1


def build_decoder() -> nn.Sequential:
    """The AdaIN decoder, same layer indices as ``decoder.pth``."""
    layers: list[nn.Module] = []
    for item in _DECODER:
        if item == "U":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        else:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(item[0], item[1], 3), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no ReLU after the last conv


def load_checked(module: nn.Module, path: str) -> None:
    """Load a state dict file into ``module`` after checking every expected tensor shape.

    Extra tensors in the file beyond the module's layers (e.g. VGG layers after relu4_1)
    are ignored. Raises ``ValueError`` naming the file, the layer and expected vs found
    shapes, or the missing layer; ``FileNotFoundError`` when the file does not exist.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"style weight file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict of tensors")
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(f"{path}: layer {key!r} missing "
                             f"(expected shape {tuple(tensor.shape)})")
        found = tuple(state[key].shape)
        if found != tuple(tensor.shape):
            raise ValueError(
                f"{path}: layer {key!r} has shape {found}, expected {tuple(tensor.shape)}"
            )
    module.load_state_dict({k: state[k] for k in expected})


class AdaINStylizer(nn.Module):
    """Encoder-AdaIN-decoder style transfer, eq. (3)-(4), with content/style trade-off.

    ``alpha`` blends the AdaIN target with the content features before decoding
    (``t = alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c)``, AdaIN paper §7.2).
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = build_vgg_encoder()
        self.decoder = build_decoder()

    @torch.no_grad()
    def forward(
        self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0, size: int = 0
    ) -> torch.Tensor:
        """Stylize (N, C, H, W) content with a (1, 3, H', W') style; returns (N, C, H, W).

        ``size``: working resolution of the network (square); 0 = the input size rounded up
        to a multiple of 8 (the encoder pools three times). The output is resized back.
        """
        n, c, h, w = content.shape
        rgb = content.expand(n, 3, h, w) if c == 1 else content  # (N, 3, H, W)
        if size > 0:
            size = -(-size // 8) * 8
        work = (size, size) if size > 0 else (max(8, -(-h // 8) * 8), max(8, -(-w // 8) * 8))
        rgb = F.interpolate(rgb, size=work, mode="bilinear", align_corners=False)
        f_c = self.encoder(rgb)  # (N, 512, H/8, W/8)
        f_s = self.encoder(style)  # (1, 512, ., .)
        t = alpha * adain(f_c, f_s) + (1 - alpha) * f_c
        out = self.decoder(t)  # (N, 3, H', W')
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        out = out.mean(dim=1, keepdim=True) if c == 1 else out
        return out.clamp(0, 1)


def load_adain(weights_dir: str) -> AdaINStylizer:
    """An :class:`AdaINStylizer` with ``vgg_normalised.pth`` and ``decoder.pth`` from a
    directory."""
    model = AdaINStylizer()
    load_checked(model.encoder, os.path.join(weights_dir, "vgg_normalised.pth"))
    load_checked(model.decoder, os.path.join(weights_dir, "decoder.pth"))
    return model.eval()


def stats_stylize(content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Weight-free: eq. (2) on pixels, blended with the content by ``alpha``. (N, C, H, W)."""
    style = _match_channels(style, content.shape[1])
    out = alpha * adain(content, style) + (1 - alpha) * content
    return out.clamp(0, 1)


def fourier_stylize(content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Weight-free: content phase with ``(1-alpha)*|F(c)| + alpha*|F(s)|`` amplitude.

    The style is resized to the content's size; the content's mean (DC term) is kept so
    brightness is preserved. Returns (N, C, H, W) in [0, 1].
    """
    n, c, h, w = content.shape
    style = _match_channels(style, c)
    style = F.interpolate(style, size=(h, w), mode="bilinear", align_corners=False)
    fc = torch.fft.fft2(content)  # (N, C, H, W) complex
    fs = torch.fft.fft2(style)  # (1, C, H, W)
    amp = (1 - alpha) * fc.abs() + alpha * fs.abs()
    amp[..., 0, 0] = fc.abs()[..., 0, 0]
    mixed = torch.polar(amp, torch.angle(fc))
    return torch.fft.ifft2(mixed).real.clamp(0, 1)


def _match_channels(style: torch.Tensor, channels: int) -> torch.Tensor:
    """Style image (1, C_s, H, W) converted to ``channels`` channels (mean or replicate)."""
    if style.shape[1] == channels:
        return style
    gray = style.mean(dim=1, keepdim=True)
    return gray.expand(style.shape[0], channels, *style.shape[2:])


def procedural_style(size: int, generator: torch.Generator) -> torch.Tensor:
    """A seeded texture (1, 3, size, size) in [0, 1]: random oriented gratings + noise.

    Used as the single style image (the paper finds one style works better than random
    styles, §5) when no ``style_image`` is given.
    """
    coords = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
    img = torch.zeros(3, size, size)
    for ch in range(3):
        for _ in range(4):
            freq, theta, phase = torch.rand(3, generator=generator).tolist()
            freq, angle = 2 + 10 * freq, math.pi * theta  # cycles per image, orientation
            arg = 2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle))
            img[ch] += torch.sin(arg + 2 * math.pi * phase)
    img += 0.5 * torch.randn(3, size, size, generator=generator)
    img = (img - img.min()) / (img.max() - img.min())
    return img[None]
