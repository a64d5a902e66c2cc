"""Test-time input transformations (defenses/transforms.py): the outputs are the libraries'
on a fixed image, they do what the defense is for, and the wrapper scores the defended model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from defenses import Transformed, create_transform, list_transforms
from nasbase.registry import UnknownName


def fixed_image(channels: int) -> torch.Tensor:
    """A deterministic (1, C, 28, 28) image in [0, 1]: a ramp, a bright square, a checkerboard."""
    ramp = torch.linspace(0, 1, 28).expand(28, 28)
    img = 0.5 * ramp.clone()
    img[6:16, 6:16] = 0.9
    img[18:26, 18:26] = (torch.arange(8).view(-1, 1) + torch.arange(8)).remainder(2).float()
    planes = [img, img.flip(1), img.t()][:channels]
    return torch.stack(planes).unsqueeze(0)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
@pytest.mark.parametrize("quality", [20, 75])
def test_jpeg_equals_pillows_encode_decode(channels, mode, quality):
    x = fixed_image(channels)
    pixels = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode).save(
        buf, format="JPEG", quality=quality)
    expected = np.array(Image.open(io.BytesIO(buf.getvalue())).convert(mode))
    expected = torch.from_numpy(expected.reshape(28, 28, channels)).permute(2, 0, 1).float() / 255
    out = create_transform("jpeg", quality=quality).apply(x)
    assert out.shape == x.shape
    assert torch.equal(out[0], expected)
    assert float((out - x).abs().max()) > 0.01  # lossy: it changed the image


def test_lower_jpeg_quality_moves_the_image_further_and_the_backward_is_the_identity():
    x = fixed_image(1).requires_grad_(True)
    errors = [float((create_transform("jpeg", quality=q).apply(x) - x).detach().abs().mean())
              for q in (10, 50, 90)]
    assert errors[0] > errors[1] > errors[2]
    out = create_transform("jpeg").apply(x)
    (grad,) = torch.autograd.grad((out * 3.0).sum(), x)
    assert torch.equal(grad, torch.full_like(x, 3.0))


def test_bilateral_equals_kornia_and_keeps_edges_a_gaussian_blurs():
    from kornia.filters import bilateral_blur, gaussian_blur2d

    x = fixed_image(3)
    out = create_transform("bilateral", kernel=5, sigma_color=0.1, sigma_space=1.5).apply(x)
    assert torch.equal(out, bilateral_blur(x, (5, 5), 0.1, (1.5, 1.5)))
    step = torch.zeros(1, 1, 28, 28)
    step[..., 14:] = 1.0
    noisy = (step + 0.03 * torch.randn(step.shape, generator=torch.Generator().manual_seed(0)))
    bil = create_transform("bilateral", kernel=5, sigma_color=0.1, sigma_space=1.5).apply(noisy)
    gauss = gaussian_blur2d(noisy, (5, 5), (1.5, 1.5))
    edge = lambda im: float((im[..., 14] - im[..., 13]).mean())  # noqa: E731
    assert edge(bil) > 0.9 > edge(gauss)  # the bilateral filter keeps the step
    flat = lambda im: float(im[..., 2:10, 2:10].std())  # noqa: E731
    assert flat(bil) < 0.6 * flat(noisy)  # and smooths the noise off the edge


@pytest.mark.parametrize("name", ["jpeg", "bilateral"])
def test_the_wrapper_is_the_model_after_the_transform(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
    transform = create_transform(name)
    wrapped = Transformed(transform, model).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(wrapped(x), model(transform.apply(x)))
        assert not torch.equal(wrapped(x), model(x))
    assert set(dict(wrapped.named_parameters())) == {f"model.{n}" for n, _ in
                                                     model.named_parameters()}


@pytest.mark.parametrize("name, bad", [("jpeg", {"quality": 0}), ("jpeg", {"quality": 100}),
                                       ("jpeg", {"quality": "high"}), ("bilateral", {"kernel": 4}),
                                       ("bilateral", {"sigma_color": 0}),
                                       ("bilateral", {"sigma_space": -1.0})])
def test_bad_arguments_are_refused_by_check(name, bad):
    with pytest.raises(ValueError):
        create_transform(name, **bad).check()


def test_the_registry_lists_the_transforms_and_names_the_valid_ones():
    assert {"jpeg", "bilateral"} <= set(list_transforms())
    with pytest.raises(UnknownName, match="valid: bilateral, jpeg"):
        create_transform("median")
    hp = create_transform("bilateral", kernel=7).hparams()
    assert create_transform("bilateral", **hp).hparams() == hp
