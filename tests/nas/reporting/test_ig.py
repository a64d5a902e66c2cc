"""Integrated gradients against models with a known answer, and the pixel distance."""

from __future__ import annotations

import torch
from torch import nn

from nas.reporting.ig import compare_maps, integrated_gradients, pixel_distance, scale_maps


def _linear(seed: int, shape: tuple[int, int, int] = (1, 6, 6), k: int = 3) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], k))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=gen))
        model[1].bias.copy_(torch.randn(k, generator=gen))
    return model


def _negated(model: nn.Module) -> nn.Module:
    neg = _linear(0)
    neg.load_state_dict(model.state_dict())
    with torch.no_grad():
        neg[1].weight.neg_()
    return neg


def _images(n: int = 4,
            shape: tuple[int, int, int] = (1, 6, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.rand((n, *shape), generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_linear_model_ig_equals_x_times_w() -> None:
    model = _linear(1)
    x, y = _images()
    res = integrated_gradients(model, x, y, n_steps=8)
    w = model[1].weight.detach()[y].reshape(x.shape)  # (N, C, H, W) weight row of each target
    torch.testing.assert_close(res.attributions, x * w, rtol=1e-5, atol=1e-6)
    assert res.delta.shape == (4,)
    assert res.delta.abs().max() < 1e-4  # completeness holds exactly for a linear model
    assert res.maps.shape == (4, 6, 6)
    assert torch.allclose(res.maps.abs().flatten(1).amax(1), torch.ones(4))


def test_ig_of_nonlinear_model_satisfies_completeness() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(144, 3))
    x, y = _images()
    res = integrated_gradients(model, x, y, n_steps=64)
    with torch.no_grad():
        gain = (model(x).gather(1, y[:, None]).squeeze(1)
                - model(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1))
    torch.testing.assert_close(res.attributions.flatten(1).sum(1), gain, rtol=1e-3, atol=1e-3)


def test_ig_restores_training_mode() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 3))
    model.train()
    x, y = _images()
    integrated_gradients(model, x, y, n_steps=4)
    assert model.training


def test_scale_maps_sums_channels_and_keeps_sign() -> None:
    attr = torch.zeros(2, 3, 2, 2)
    attr[0, :, 0, 0] = torch.tensor([1.0, 1.0, 2.0])  # channel sum 4 -> +1
    attr[0, 0, 1, 1] = -2.0  # -> -0.5
    maps = scale_maps(attr)
    assert maps.shape == (2, 2, 2)
    assert maps[0, 0, 0] == 1.0 and maps[0, 1, 1] == -0.5
    assert torch.equal(maps[1], torch.zeros(2, 2))  # all-zero map stays zero


def test_pixel_distance_zero_for_identical_and_max_for_negated_models() -> None:
    ref = _linear(1)
    x, y = _images()
    models = {"ref": ref, "same": _linear(1), "negated": _negated(ref), "other": _linear(2)}
    out = compare_maps(models, x, y, reference="ref", n_steps=8)
    assert torch.allclose(out["ref"]["distance"], torch.zeros(4))
    assert torch.allclose(out["same"]["distance"], torch.zeros(4), atol=1e-6)
    torch.testing.assert_close(out["negated"]["distance"], torch.ones(4))
    other = out["other"]["distance"]
    assert (other > 0.05).all() and (other < out["negated"]["distance"]).all()


def test_pixel_distance_bounds_and_shape_check() -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(5, 4, 4, generator=gen) * 2 - 1
    b = torch.rand(5, 4, 4, generator=gen) * 2 - 1
    d = pixel_distance(a, b)
    assert ((d >= 0) & (d <= 1)).all()
    torch.testing.assert_close(d, pixel_distance(b, a))  # symmetric
    assert torch.equal(pixel_distance(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)), torch.zeros(1))
    try:
        pixel_distance(a, b[:, :3])
    except ValueError as exc:
        assert "shapes differ" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected ValueError")
