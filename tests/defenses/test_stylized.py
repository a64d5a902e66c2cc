"""AdaIN (eq. 2-4), weight-file checks, weight-free stylizers and the stylized pairing loss."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from defenses import create_defense
from defenses.adain import (
    AdaINStylizer,
    adain,
    build_decoder,
    build_vgg_encoder,
    calc_mean_std,
    fourier_stylize,
    load_adain,
    load_checked,
)
from defenses.base import Batch


def test_adain_output_has_the_style_statistics_per_channel():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 3, 8, 8, generator=g) * 2 + 1
    style = torch.randn(2, 3, 5, 5, generator=g) * torch.tensor([0.5, 3.0, 1.0])[:, None, None] - 4
    out = adain(content, style)
    (m_out, s_out), (m_sty, s_sty) = calc_mean_std(out), calc_mean_std(style)
    assert torch.allclose(m_out, m_sty, atol=1e-5)
    assert torch.allclose(s_out, s_sty, atol=1e-3)
    # the content's spatial pattern survives: per-channel correlation is 1
    a, b = out[0, 1].flatten(), content[0, 1].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.999


def _write_weights(tmp_path, *, bad_key=None):
    enc, dec = build_vgg_encoder().state_dict(), build_decoder().state_dict()
    enc["31.weight"] = torch.zeros(512, 512, 3, 3)[:1]  # deeper VGG layers are ignored
    if bad_key:
        target, key = bad_key
        sd = enc if target == "vgg" else dec
        sd[key] = torch.zeros(7, 7, 3, 3)
    torch.save(enc, tmp_path / "vgg_normalised.pth")
    torch.save(dec, tmp_path / "decoder.pth")
    return str(tmp_path)


def test_wrong_shaped_weights_name_file_layer_and_shapes(tmp_path):
    d = _write_weights(tmp_path, bad_key=("vgg", "2.weight"))
    with pytest.raises(ValueError) as err:
        load_adain(d)
    msg = str(err.value)
    assert "vgg_normalised.pth" in msg and "'2.weight'" in msg
    assert "(7, 7, 3, 3)" in msg and "(64, 3, 3, 3)" in msg


def test_wrong_decoder_and_missing_layer(tmp_path):
    d = _write_weights(tmp_path, bad_key=("dec", "1.weight"))
    with pytest.raises(ValueError, match=r"decoder\.pth.*'1\.weight'.*\(256, 512, 3, 3\)"):
        load_adain(d)
    small = tmp_path / "small.pth"
    torch.save({"0.weight": torch.zeros(3, 3, 1, 1)}, small)
    with pytest.raises(ValueError, match=r"small\.pth.*'0\.bias' missing"):
        load_checked(build_vgg_encoder(), str(small))
    with pytest.raises(FileNotFoundError):
        load_adain(str(tmp_path / "nowhere"))


def test_adain_stylizer_loads_weights_and_handles_one_channel(tmp_path):
    torch.manual_seed(0)
    model = load_adain(_write_weights(tmp_path))
    assert isinstance(model, AdaINStylizer)
    ref = build_vgg_encoder()
    load_checked(ref, os.path.join(tmp_path, "vgg_normalised.pth"))
    assert torch.equal(model.encoder[2].weight, ref[2].weight)
    style = torch.rand(1, 3, 16, 16)
    gray = model(torch.rand(4, 1, 12, 12), style)
    rgb = model(torch.rand(2, 3, 12, 12), style)
    assert gray.shape == (4, 1, 12, 12) and rgb.shape == (2, 3, 12, 12)
    assert model(torch.rand(1, 1, 12, 12), style, 0.5, 20).shape == (1, 1, 12, 12)
    assert gray.min() >= 0 and gray.max() <= 1


def test_fourier_stylizer_keeps_phase_and_takes_style_amplitude():
    g = torch.Generator().manual_seed(0)
    content = 0.25 + 0.5 * torch.rand(1, 1, 8, 8, generator=g)
    style = 0.4 + 0.2 * torch.rand(1, 1, 8, 8, generator=g)
    out = fourier_stylize(content, style, alpha=1.0)
    assert out.shape == content.shape
    assert torch.allclose(out.mean(), content.mean(), atol=1e-5)  # DC kept
    assert torch.allclose(fourier_stylize(content, style, alpha=0.0), content, atol=1e-5)


def _batch(x, y, idx):
    return Batch(x=x[idx].float() / 255, y=y[idx], index=idx)


def test_prepare_caches_and_loss_pairs_by_index(factory, data, make_ctx, tmp_path):
    x, y = data
    ctx = make_ctx()
    defense = create_defense("stylized", lam=0.5)
    defense.prepare(x, y, ctx)
    assert any("weight-free" in m for m in ctx.messages)
    files = os.listdir(ctx.cache_dir)
    assert len(files) == 1 and files[0].startswith("stylized-") and files[0].endswith(".npz")
    sty = defense._stylized
    assert sty.shape == x.shape and sty.dtype == torch.uint8 and not torch.equal(sty, x)

    again = create_defense("stylized", lam=2.0)  # lam does not change the stylized set
    ctx2 = make_ctx()
    again.prepare(x, y, ctx2)
    assert any("loaded cached" in m for m in ctx2.messages)
    assert torch.equal(again._stylized, sty)
    other = create_defense("stylized", weight_free="stats")
    other.prepare(x, y, make_ctx())
    assert len(os.listdir(ctx.cache_dir)) == 2

    torch.manual_seed(0)
    model = factory().eval()
    idx = torch.tensor([5, 0, 17, 3])
    out = defense.loss(model, _batch(x, y, idx), ctx)
    xs = sty[idx].float() / 255
    z, zs = model(x[idx].float() / 255), model(xs)
    expected = ((F.cross_entropy(z, y[idx]) + F.cross_entropy(zs, y[idx])) / 2
                + 0.5 * F.mse_loss(z, zs))
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert out.logs["weight_free"] == 1.0


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_corrupt_cached_stylized_set_is_logged_in_one_line_and_rebuilt(data, make_ctx, damage):
    """Issue 12.1 for the stylized sets: a damaged cache file broke every later training."""
    x, y = data
    ctx = make_ctx()
    create_defense("stylized").prepare(x, y, ctx)
    (name,) = os.listdir(ctx.cache_dir)
    path = os.path.join(ctx.cache_dir, name)
    raw = bytearray(open(path, "rb").read())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # one flipped byte in the middle of the stylized images
        raw[len(raw) // 2] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    again, ctx2 = create_defense("stylized"), make_ctx()
    again.prepare(x, y, ctx2)
    bad = [m for m in ctx2.messages if path in m and "cached stylized set at" not in m]
    assert len(bad) == 1 and "rebuilding" in bad[0] and "\n" not in bad[0]
    fresh = create_defense("stylized")
    fresh.prepare(x, y, make_ctx())
    assert torch.equal(again._stylized, fresh._stylized)


def test_prepare_with_bad_weights_or_options_fails_clearly(data, make_ctx, tmp_path):
    x, y = data
    bad = _write_weights(tmp_path, bad_key=("dec", "5.weight"))
    with pytest.raises(ValueError, match="decoder.pth"):
        create_defense("stylized", style_weights=bad).prepare(x, y, make_ctx(cache_dir=None))
    cartoon = create_defense("stylized", weight_free="cartoon")  # the constructor only stores
    with pytest.raises(ValueError, match="weight_free"):
        cartoon.check()
    missing = create_defense("stylized", style_weights=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="lacks vgg_normalised.pth, decoder.pth"):
        missing.check()
    create_defense("stylized").check()  # the weight-free default is fine
    with pytest.raises(RuntimeError, match="prepare"):
        create_defense("stylized").loss(None, _batch(x, y, torch.arange(2)), make_ctx())


def test_prepare_with_adain_weights_uses_the_network(data, make_ctx, tmp_path):
    x, y = data
    torch.manual_seed(0)
    weights = _write_weights(tmp_path)
    ctx = make_ctx(cache_dir=None)
    defense = create_defense("stylized", style_weights=weights)
    defense.prepare(x[:6], y[:6], ctx)
    assert not any("weight-free" in m for m in ctx.messages)
    assert defense._stylized.shape == (6, 1, 12, 12)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3))
    out = defense.loss(model, _batch(x, y, torch.arange(6)), ctx)
    assert out.logs["weight_free"] == 0.0 and torch.isfinite(out.loss)
