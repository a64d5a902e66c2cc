"""Closed-form second derivatives of Conv2d / train-mode BatchNorm2d, and the training layout."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses import create_defense
from defenses.base import Batch
from genome import blocks, compile_genome
from nas.evaluation import allocator, double_backward
from nas.evaluation.double_backward import (
    BatchNorm2d,
    Conv2d,
    _BatchNormTrain,
    _BatchNormTrainBackward,
    _Conv2d,
    _MaxPool2d,
    _ReLU,
    use_fast_double_backward,
)
from nas.evaluation.training import (
    CachedReferenceGrad,
    build_context,
    build_training_model,
    input_gradients,
    to_training_layout,
    train_step,
)
from search_spaces import resolve_genome

D = torch.float64


@pytest.mark.parametrize(("c_in", "kernel", "stride", "padding", "dilation", "groups", "bias"), [
    (4, 3, 1, 1, 1, 1, False),  # conv block
    (4, 3, 2, 1, 1, 1, True),  # strided conv block, with bias
    (4, 3, 1, 0, 2, 2, False),  # dilated, grouped
    (1, 5, 2, 2, 1, 1, False),  # first layer: input gradient by matmul + fold
    (3, 3, 2, 0, 1, 1, True),  # 3 channels, fold path, no padding (floor drops a row)
    (2, 3, 1, 1, 1, 1, False),  # first layer, stride 1: shifted adds
    (1, 2, 1, 0, 1, 1, True),  # stride 1, even kernel, no padding
])
def test_conv_first_and_second_derivatives_match_finite_differences(
        c_in, kernel, stride, padding, dilation, groups, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 9, 8, dtype=D, generator=g, requires_grad=True)
    w = torch.randn(6, c_in // groups, kernel, kernel, dtype=D, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=D, generator=g, requires_grad=True) if bias else None
    conf = ([stride] * 2, [padding] * 2, [dilation] * 2, groups)
    args = (x, w, b) if bias else (x, w)

    def f(*a):
        return _Conv2d.apply(a[0], a[1], a[2] if bias else None, conf)

    assert torch.allclose(f(*args), F.conv2d(x, w, b, stride, padding, dilation, groups))
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (2, 3, 1, 1)])
def test_batchnorm_first_and_second_derivatives_match_finite_differences(shape, layout):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, dtype=D, generator=g).contiguous(memory_format=layout)
    x.requires_grad_(True)
    w = (torch.rand(3, dtype=D, generator=g) + 0.5).requires_grad_(True)
    b = torch.randn(3, dtype=D, generator=g, requires_grad=True)

    def f(x, w, b):
        return _BatchNormTrain.apply(x, w, b, None, None, 0.1, 1e-5)

    assert torch.allclose(f(x, w, b), F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5))
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("spec", [("window", [2, 2], [2, 2]), ("adaptive", [3, 2])])
def test_max_pool_first_and_second_derivatives_match_finite_differences(spec, layout):
    """Fixed 2x2 windows and adaptive pooling 7x5 -> 3x2 (overlapping windows), both layouts;
    the second derivative equals PyTorch's and keeps the upstream gradient's layout."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 7, 5, dtype=D, generator=g).contiguous(memory_format=layout)
    x.requires_grad_(True)

    def fast(x):
        return _MaxPool2d.apply(x, spec)

    def native(x):
        if spec[0] == "window":
            return F.max_pool2d(x, 2, 2)
        return F.adaptive_max_pool2d(x, tuple(spec[1]))

    assert torch.equal(fast(x), native(x))
    assert torch.autograd.gradcheck(fast, (x,))
    assert torch.autograd.gradgradcheck(fast, (x,))
    gy = torch.randn(native(x).shape, dtype=D, generator=g).contiguous(memory_format=layout)
    v = torch.randn(x.shape, dtype=D, generator=g).contiguous(memory_format=layout)
    d_gy = []
    for pool in (fast, native):
        gy_ = gy.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(pool(x), x, gy_, create_graph=True)
        d_gy.append(torch.autograd.grad(gx, gy_, v)[0])  # v gathered at the arg-max positions
    assert torch.equal(d_gy[0], d_gy[1])
    assert d_gy[0].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_global_mean_derivatives_match_finite_differences_and_keep_the_layout(layout):
    g = torch.Generator().manual_seed(4)
    f = torch.randn(2, 3, 4, 5, dtype=D, generator=g).contiguous(memory_format=layout)
    f.requires_grad_(True)
    assert torch.equal(double_backward._GlobalMean.apply(f), f.mean(dim=(2, 3)))
    assert torch.autograd.gradcheck(double_backward._GlobalMean.apply, (f,))
    assert torch.autograd.gradgradcheck(double_backward._GlobalMean.apply, (f,))
    (gf,) = torch.autograd.grad(double_backward._GlobalMean.apply(f).sum(), f)
    assert gf.is_contiguous(memory_format=layout) and gf.stride()[-1] == (
        3 if layout == torch.channels_last else 1)  # materialised, not a stride-0 expansion
    assert torch.allclose(gf, torch.full_like(gf, 1 / 20))


def test_relu_first_and_second_derivatives_match_finite_differences():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, 5, dtype=D, generator=g)
    x = (x + 0.1 * x.sign()).requires_grad_(True)  # away from the kink
    assert torch.equal(_ReLU.apply(x), torch.relu(x))
    assert torch.autograd.gradcheck(_ReLU.apply, (x,))
    assert torch.autograd.gradgradcheck(_ReLU.apply, (x,))
    gy = torch.randn(x.shape, dtype=D, generator=g, requires_grad=True)
    (gx,) = torch.autograd.grad(_ReLU.apply(x), x, gy, create_graph=True)
    d_gy, d_x = torch.autograd.grad(gx.sum(), (gy, x), allow_unused=True)
    assert torch.equal(d_gy, (x > 0).to(D))
    assert d_x is None or not d_x.any()


def test_batchnorm_second_derivative_skips_parameter_terms_nobody_used(monkeypatch):
    """In gm's input-gradient pass g_gamma / g_beta are unused: their upstream gradients must
    arrive as None (not zero maps that would cost full-size operations)."""
    seen = []
    backward = _BatchNormTrainBackward.backward

    def spy(ctx, v, u_gamma, u_beta):
        seen.append((v is None, u_gamma, u_beta))
        return backward(ctx, v, u_gamma, u_beta)

    monkeypatch.setattr(_BatchNormTrainBackward, "backward", staticmethod(spy))
    bn = use_fast_double_backward(nn.BatchNorm2d(3)).train()
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    (gx,) = torch.autograd.grad(bn(x).square().sum(), x, create_graph=True)
    gx.square().sum().backward()
    assert seen == [(False, None, None)]
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0


def _gm_like_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor):
    """Parameter gradients of CE + <grad_x CE, v> (gm's structure) and of CE alone."""
    x = x.clone().requires_grad_(True)
    ce = F.cross_entropy(model(x), y, reduction="sum")
    (gx,) = torch.autograd.grad(ce, x, create_graph=True)
    params = list(model.parameters())
    second = torch.autograd.grad(ce + (gx * v).sum(), params)
    plain = torch.autograd.grad(F.cross_entropy(model(x.detach()), y, reduction="sum"), params)
    return second, plain


def test_a_switched_genome_network_computes_what_pytorch_computes():
    """Forward, running statistics, first and second derivatives of a compiled he-baseline
    (conv, sconv, pool, sum and concat blocks) equal PyTorch's own layers in float64."""
    torch.manual_seed(0)
    native = compile_genome(resolve_genome("he-baseline"), input_shape=(1, 12, 12),
                            num_classes=5).to(D).train()
    fast = use_fast_double_backward(copy.deepcopy(native))
    swapped = {nn.Conv2d: Conv2d, nn.BatchNorm2d: BatchNorm2d,
               blocks.ConvBNReLU: double_backward.ConvBNReLU, blocks.Pool: double_backward.Pool,
               blocks.Sum: double_backward.Sum, blocks.Concat: double_backward.Concat,
               blocks.Head: double_backward.Head}
    assert {type(m) for m in fast.modules()} >= set(swapped.values())
    assert not any(type(m) in swapped for m in fast.modules())
    assert any(isinstance(m, blocks.Pool) and m.kind == "max" for m in fast.modules())
    assert list(fast.state_dict()) == list(native.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 12, 12, dtype=D, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    v = torch.randn(6, 1, 12, 12, dtype=D, generator=g)
    (sn, pn), (sf, pf) = _gm_like_grads(native, x, y, v), _gm_like_grads(fast, x, y, v)
    for a, b in zip(sn + pn, sf + pf, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)
    assert any(a.abs().sum() > 0 for a in sn)
    for (k, a), b in zip(native.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # running statistics and batch counts updated alike
    native.eval(), fast.eval()
    assert torch.equal(native(x), fast(x))


def test_weight_gradients_of_an_input_gradient_pass_are_left_out(monkeypatch):
    """autograd.grad w.r.t. the input only: the engine reports the weights as not needed."""
    conv = use_fast_double_backward(nn.Conv2d(8, 3, 3, padding=1))  # 8 channels: no fold
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    calls = []

    class Spy:  # records the output mask of every convolution_backward call
        convolution_backward = None

        def __getattr__(self, name):
            return getattr(torch.ops.aten, name)

    def spy(*args):
        calls.append(list(args[-1]))
        return torch.ops.aten.convolution_backward(*args)

    Spy.convolution_backward = staticmethod(spy)
    monkeypatch.setattr(double_backward, "_aten", Spy())
    torch.autograd.grad(conv(x).sum(), x)
    conv(x).sum().backward()
    assert calls == [[True, False, False], [True, True, True]]
    calls.clear()  # a first layer (1 channel): the input gradient comes from fold alone
    first = use_fast_double_backward(nn.Conv2d(1, 3, 3, padding=1))
    x1 = torch.randn(2, 1, 5, 5, requires_grad=True)
    (gx,) = torch.autograd.grad(first(x1).sum(), x1)
    assert calls == [] and torch.allclose(gx, torch.autograd.grad(
        F.conv2d(x1, first.weight, first.bias, padding=1).sum(), x1)[0], atol=1e-6)


def test_fallbacks_are_pytorch_s_own_paths():
    bn = use_fast_double_backward(nn.BatchNorm2d(3))
    x = torch.randn(4, 3, 2, 2)
    ref = nn.BatchNorm2d(3)
    with torch.no_grad():  # no grad mode: the parent's forward, running stats updated alike
        assert torch.equal(bn(x), ref(x))
    assert torch.equal(bn.running_mean, ref.running_mean)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3, 1, 1))
    bn.eval(), ref.eval()
    assert torch.equal(bn(x), ref(x))


def test_training_layout_is_channels_last_and_trains_as_pytorch_does():
    """One gm step through build_training_model equals one step of the straightforward model
    (PyTorch's layers, default layout) up to float32 rounding."""
    genome = resolve_genome("he-ref")
    factory = lambda: compile_genome(genome, input_shape=(1, 16, 16), num_classes=4)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 16, 16, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    ref = factory().eval()
    cached = CachedReferenceGrad(input_gradients(ref, x, y), torch.device("cpu"))
    gm = create_defense("gm")
    torch.manual_seed(3)
    fast = build_training_model(gm, factory, num_classes=4, input_shape=(1, 16, 16),
                                device=torch.device("cpu")).train()
    torch.manual_seed(3)
    plain = factory().train()
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is Conv2d for m in convs)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    xb = to_training_layout(x)
    assert xb.is_contiguous(memory_format=torch.channels_last) and torch.equal(xb, x)
    for model, batch in ((fast, Batch(xb, y, torch.arange(8))),
                         (plain, Batch(x, y, torch.arange(8)))):
        ctx = build_context(gm, device=torch.device("cpu"), generator=torch.Generator(),
                            reference_grad=cached, log=lambda _m: None)
        train_step(model, gm, torch.optim.SGD(model.parameters(), lr=0.1), batch, ctx)
        assert batch.x.grad is None  # only the optimised parameters get gradients
    for a, b in zip(fast.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_allocator_settings_apply_once_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("NAS_MALLOC_TUNING", "0")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.delenv("NAS_MALLOC_TUNING")
    expected = _is_glibc()
    assert allocator.keep_freed_memory() is expected
    assert allocator.keep_freed_memory() is expected  # cached


def _is_glibc() -> bool:
    import platform
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_a_switched_genome_network_takes_a_gm_step_under_bf16_autocast():
    """``--amp bf16`` path: conv in bf16, BatchNorm on the parent's path, the hand-written
    pooling / ReLU / head functions on bf16 maps; every parameter gets a finite gradient."""
    genome = resolve_genome("he-baseline")
    factory = lambda: compile_genome(genome, input_shape=(1, 12, 12), num_classes=5)  # noqa: E731
    gm = create_defense("gm")
    torch.manual_seed(0)
    model = build_training_model(gm, factory, num_classes=5, input_shape=(1, 12, 12),
                                 device=torch.device("cpu")).train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 12, 12, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    ref = CachedReferenceGrad(torch.randn(6, 1, 12, 12, generator=g), torch.device("cpu"))
    ctx = build_context(gm, device=torch.device("cpu"), generator=g, reference_grad=ref,
                        log=lambda _m: None)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss, logs = train_step(model, gm, opt, Batch(to_training_layout(x), y, torch.arange(6)),
                            ctx, torch.autocast("cpu", dtype=torch.bfloat16))
    assert torch.isfinite(loss) and -1.0 <= logs["gm_cos"] <= 1.0
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == p.dtype, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_the_environment_switch_falls_back_to_pytorch_layers_with_equal_gradients(
        monkeypatch, value):
    """``NAS_FAST_DOUBLE_BACKWARD=0`` trains with PyTorch's own layers; a gm-like step gives the
    gradients the switched layers give (float64)."""
    torch.manual_seed(0)
    native = compile_genome(resolve_genome("he-baseline"), input_shape=(1, 12, 12),
                            num_classes=5).to(D).train()
    monkeypatch.setenv(double_backward.ENV_SWITCH, value)
    off = use_fast_double_backward(copy.deepcopy(native))
    assert not any(type(m).__module__ == double_backward.__name__ for m in off.modules())
    monkeypatch.delenv(double_backward.ENV_SWITCH)
    on = use_fast_double_backward(copy.deepcopy(native))
    assert any(type(m).__module__ == double_backward.__name__ for m in on.modules())
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, 12, 12, dtype=D, generator=g)
    y = torch.randint(0, 5, (4,), generator=g)
    v = torch.randn(4, 1, 12, 12, dtype=D, generator=g)
    (s_off, p_off), (s_on, p_on) = _gm_like_grads(off, x, y, v), _gm_like_grads(on, x, y, v)
    for a, b in zip(s_off + p_off, s_on + p_on, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)
