"""The layers of a child with a cheap exact second derivative (``gm``'s hot path).

``gm`` (and the gradient terms of ``cldl`` and ``ncen``) differentiate an input gradient, so
every layer of the child is differentiated twice. PyTorch's generic second derivatives are
slow on a CPU for the layers a genome is made of:

- train-mode BatchNorm (``NativeBatchNormBackwardBackward0``) runs some thirty full-size
  elementwise operations per layer;
- convolution (``ConvolutionBackwardBackward0``) computes the weight term as a convolution of
  the input with the *output gradient as a kernel* (a kernel as large as the feature map),
  several times slower than the weight-gradient kernel that computes the same numbers;
- max pooling copies a channels-last gradient to the default layout for its gather, and its
  first derivative slows down 2-3x on the default-layout gradients that come back;
- ReLU's second derivative w.r.t. its input is a zero-filled map, which the engine then adds;
- the global average pool's gradient is a stride-0 expansion, slow to read for every kernel
  of the backward passes after it.

The classes below keep PyTorch's own kernels for the forward and the first derivative (so a
network trains exactly as before) and differentiate the first derivative by hand.

Convolution, ``y = conv(x, W) + b``; first derivative ``gx = conv^T(gy, W)``,
``gW = wgrad(x, gy)``, ``gb = sum(gy)``. For upstream gradients ``v`` on ``gx``, ``U`` on ``gW``
and ``u`` on ``gb`` (both bilinear maps, so each term is one kernel call):

    d gy = conv(v, W) + conv(x, U) + u,    d W = wgrad(v, gy),    d x = conv^T(gy, U)

BatchNorm (per channel, ``M = N * H * W`` elements, means over them):

    x_hat = (x - mu) * r,   r = (var + eps)^(-1/2),   y = gamma * x_hat + beta
    gx = gamma * r * (gy - a - x_hat * b),   a = mean(gy),   b = mean(gy * x_hat)
    g_gamma = M * b,   g_beta = M * a

and with ``s_v = mean(v)``, ``s_vx = mean(v * x_hat)``, ``s_vg = mean(v * gy)`` for upstream
gradients ``v`` on ``gx`` and ``u_gamma``, ``u_beta`` on ``g_gamma``, ``g_beta``:

    d gy    = gamma * r * (v - s_v - x_hat * s_vx) + u_gamma * x_hat + u_beta
    d gamma = M * r * (s_vg - a * s_v - b * s_vx)
    d x     = -gamma * r^2 * (b * (v - s_v) + s_vx * (gy - a)
                              + x_hat * (s_vg - a * s_v - 3 * b * s_vx))
              + u_gamma * r * (gy - a - x_hat * b)

(from ``gx = gamma * r * (gy - a) - gamma * r^3 * (x - mu) * mean(gy * (x - mu))`` with
``dr/dx_i = -r^3 (x_i - mu) / M`` and ``d(x - mu)/dx = I - 11^T / M``). The first derivative
of either layer also skips the outputs the running backward pass does not need (the weight
gradient while ``gm`` takes the input gradient), as PyTorch's own nodes do.
``tests/nas/evaluation/test_double_backward.py`` checks both against PyTorch with ``gradgradcheck``.

Max pooling (2x2 windows or adaptive): the first derivative scatters ``gy`` to the arg-max
positions, so its derivative is the gather of the upstream gradient at the same positions,
done in the gradient's own layout. ReLU: ``gx = gy * (y > 0)`` has derivative ``v * (y > 0)``
w.r.t. ``gy`` and none w.r.t. ``y``. Global average pool: ``gf = gz / (H W)`` broadcast, made
contiguous in the input's layout; its derivative is the mean of the upstream gradient.

:func:`use_fast_double_backward` switches the ``nn.Conv2d`` / ``nn.BatchNorm2d`` layers and
the conv / pooling / skip / head blocks of :mod:`genome.blocks` inside a module to these
classes in place: the class changes; parameters, buffers, hooks and ``state_dict`` keys do
not, so saved weights load into plain modules and exported networks stay plain PyTorch.

The switch is on by default; ``NAS_FAST_DOUBLE_BACKWARD=0`` (or ``off``/``false``) in the
environment turns it off, and every network then trains with PyTorch's own layers (same
gradients up to floating-point rounding; ``tests/nas/evaluation/test_double_backward.py``
checks both).

Upgrading torch: this module calls private ATen operators (``torch.ops.aten.convolution_backward``,
``native_batch_norm(_backward)``, ``max_pool2d_with_indices(_backward)``,
``adaptive_max_pool2d(_backward)``, ``threshold_backward``) and
``torch._C._will_engine_execute_node``. Their signatures are not a public API: after an
upgrade, run ``tests/nas/evaluation/test_double_backward.py`` (it compares every class with
PyTorch's own layers by ``gradcheck`` / ``gradgradcheck``) and, if it fails, set
``NAS_FAST_DOUBLE_BACKWARD=0`` until this module is adapted. pyproject.toml states the tested
torch range.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from genome import blocks

_CHANNEL = (0, 2, 3)  # reduction dims of (N, C, H, W)
_aten = torch.ops.aten


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)  # (C,) -> (1, C, 1, 1)


def _will_run(ctx: FunctionCtx, i: int) -> bool:
    """Whether the running backward pass needs the gradient of forward input ``i``."""
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]  # type: ignore[attr-defined]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:  # a leaf inside autograd.grad(): the engine cannot tell; compute it
        return True


# --------------------------------------------------------------------------- convolution


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, conf: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf, ctx.has_bias = conf, bias is not None
        stride, padding, dilation, groups = conf
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)  # (N, Co, H', W')

    @staticmethod
    def backward(ctx: FunctionCtx, gy: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        mask = (_will_run(ctx, 0), _will_run(ctx, 1), ctx.has_bias and _will_run(ctx, 2))
        if not any(mask):
            return None, None, None, None
        grads = iter(_Conv2dBackward.apply(gy, x, weight, ctx.conf, mask))
        return (*(next(grads) if m else None for m in mask), None)


def _fold_input_grad(x: torch.Tensor, conf: tuple) -> bool:
    """Whether the input gradient is cheaper by :func:`_input_grad_by_fold` than by oneDNN's
    backward-data kernel: true for the few input channels of a first layer (3 to 15 times
    faster for 1 channel at 28x28 on a CPU), where that kernel has nothing to vectorise over."""
    _, _, dilation, groups = conf
    return x.device.type == "cpu" and x.shape[1] <= 4 and groups == 1 and list(dilation) == [1, 1]


def _input_grad_by_fold(gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                        conf: tuple) -> torch.Tensor:
    """conv^T(gy, W) as columns cols = W^T gy, then summed into place (col2im): (N, Ci, H, W).

    The columns are a 1x1 convolution of ``gy`` with ``W^T`` (oneDNN; a matmul with only
    Ci*kh*kw output columns runs 3-5x slower). With stride 1 they are summed into place as
    kh*kw shifted adds, otherwise by ``fold``."""
    (sh, sw), (ph, pw), _, _ = conf
    n, co, ho, wo = gy.shape
    ci, kh, kw = weight.shape[1:]
    h, w = x.shape[2:]
    w_cols = weight.reshape(co, -1).t().reshape(-1, co, 1, 1)  # (Ci*kh*kw, Co, 1, 1)
    cols = F.conv2d(gy, w_cols)  # (N, Ci*kh*kw, Ho, Wo): cols[:, (c, i, j)]
    if (sh, sw) == (1, 1):  # canvas[:, c, y + i, x + j] += cols[:, (c, i, j), y, x]
        canvas = gy.new_zeros(n, ci, h + 2 * ph, w + 2 * pw)  # ho + kh - 1 = h + 2 ph
        for t in range(ci * kh * kw):
            c, i, j = t // (kh * kw), t // kw % kh, t % kw
            canvas[:, c, i:i + ho, j:j + wo] += cols[:, t]
        gx = canvas[:, :, ph:ph + h, pw:pw + w]
    else:
        gx = F.fold(cols.flatten(2), (h, w), (kh, kw), padding=(ph, pw), stride=(sh, sw))
    layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return gx.contiguous(memory_format=layout)


def _is_channels_last(t: torch.Tensor) -> bool:
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


class _Conv2dBackward(torch.autograd.Function):
    """(gy, x, W) -> the gradients of ``mask`` among (gx, gW, gb); differentiable once more."""

    @staticmethod
    def forward(ctx: FunctionCtx, gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                conf: tuple, mask: tuple[bool, bool, bool]):
        stride, padding, dilation, groups = conf
        bias_sizes = [weight.shape[0]] if mask[2] else None
        fold = mask[0] and _fold_input_grad(x, conf)
        native = [mask[0] and not fold, mask[1], mask[2]]
        out: list[torch.Tensor | None] = [None, None, None]
        if any(native):
            out = list(_aten.convolution_backward(
                gy, x, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups,
                native))
        if fold:
            out[0] = _input_grad_by_fold(gy, x, weight, conf)
        ctx.save_for_backward(gy, x, weight)
        ctx.conf, ctx.mask = conf, mask
        ctx.set_materialize_grads(False)  # outputs nobody used arrive as None, not zeros
        return tuple(g for g, m in zip(out, mask, strict=True) if m)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, *upstream: torch.Tensor | None):  # type: ignore[override]
        gy, x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        ups = iter(upstream)
        v, u_w, u_b = (next(ups) if m else None for m in ctx.mask)
        d_gy = d_x = d_w = None
        if ctx.needs_input_grad[0]:
            if v is not None:
                d_gy = F.conv2d(v, weight, None, stride, padding, dilation, groups)
            if u_w is not None:
                extra = F.conv2d(x, u_w, None, stride, padding, dilation, groups)
                d_gy = extra if d_gy is None else d_gy.add_(extra)
            if u_b is not None:
                extra = _per_channel(u_b).expand_as(gy)
                d_gy = extra.clone() if d_gy is None else d_gy.add_(extra)
        if ctx.needs_input_grad[1] and u_w is not None:  # d/dx <U, wgrad(x, gy)>
            d_x = _aten.convolution_backward(
                gy, x, u_w, None, stride, padding, dilation, False, [0, 0], groups,
                [True, False, False])[0]
        if ctx.needs_input_grad[2] and v is not None:  # d/dW <v, conv^T(gy, W)>
            d_w = _aten.convolution_backward(
                gy, v, weight, None, stride, padding, dilation, False, [0, 0], groups,
                [False, True, False])[1]
        return d_gy, d_x, d_w, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose second derivative is the closed form above (zero padding, numeric
    ``padding``); other configurations, and autocast (whose casts the saved tensors would not
    carry into the backward passes), take the parent's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.padding_mode != "zeros" or isinstance(self.padding, str)
                or not torch.is_grad_enabled() or x.dim() != 4
                or torch.is_autocast_enabled(x.device.type)):
            return super().forward(x)
        conf = (list(self.stride), list(self.padding), list(self.dilation), self.groups)
        # Views, not the leaf parameters: the engine can then say whether the running pass
        # needs their gradients (a leaf's answer is unavailable inside autograd.grad()).
        weight = self.weight[...]
        bias = None if self.bias is None else self.bias[...]
        return _Conv2d.apply(x, weight, bias, conf)


# ----------------------------------------------------------------------------- batchnorm


class _BatchNormTrain(torch.autograd.Function):
    """y = BN(x) with batch statistics; updates the running statistics in place."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                momentum: float, eps: float) -> torch.Tensor:
        y, mean, invstd = _aten.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y  # (N, C, H, W)

    @staticmethod
    def backward(ctx: FunctionCtx, gy: torch.Tensor):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        gx, gw, gb = _BatchNormTrainBackward.apply(gy, x, weight, mean, invstd, ctx.eps)
        return gx, gw, gb, None, None, None, None


class _BatchNormTrainBackward(torch.autograd.Function):
    """(gy, x, gamma) -> (gx, g_gamma, g_beta), differentiable once more by the closed form."""

    @staticmethod
    def forward(ctx: FunctionCtx, gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                mean: torch.Tensor, invstd: torch.Tensor, eps: float):
        gx, gw, gb = _aten.native_batch_norm_backward(
            gy, x, weight, None, None, mean, invstd, True, eps, [True, True, True])
        ctx.save_for_backward(gy, x, weight, mean, invstd, gw, gb)
        ctx.eps = eps
        # gm's input-gradient pass leaves g_gamma / g_beta unused: their upstream gradients
        # then arrive as None and the u_gamma / u_beta terms are skipped, not computed on zeros.
        ctx.set_materialize_grads(False)
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, v: torch.Tensor | None, u_gamma: torch.Tensor | None,
                 u_beta: torch.Tensor | None):  # type: ignore[override]
        gy, x, weight, mean, invstd, gw, gb = ctx.saved_tensors
        need_gy, need_x, need_gamma = ctx.needs_input_grad[:3]
        m = x.numel() // x.shape[1]
        r, mu = _per_channel(invstd), _per_channel(mean)  # (1, C, 1, 1)
        a, b = _per_channel(gb / m), _per_channel(gw / m)  # mean(gy), mean(gy * x_hat)
        gamma = _per_channel(weight)
        d_gy = d_x = d_gamma = None
        if v is not None:
            # PyTorch's fused BN backward kernel applied to v is exactly the first d_gy term,
            # gamma r (v - s_v - x_hat s_vx), and its two reductions are M s_vx and M s_v.
            d_gy, sum_vx, sum_v = _aten.native_batch_norm_backward(
                v, x, weight, None, None, mean, invstd, True, ctx.eps, [need_gy, True, True])
            s_v, s_vx = _per_channel(sum_v / m), _per_channel(sum_vx / m)
            if need_x or need_gamma:  # s_vg = mean(v * gy): the same kernel's reduction
                one, zero = torch.ones_like(invstd), torch.zeros_like(mean)
                sum_vg = _aten.native_batch_norm_backward(
                    v, gy, None, None, None, zero, one, True, ctx.eps, [False, True, False])[1]
                s_vg = _per_channel(sum_vg / m)
                if need_x:  # -gamma r^2 (b (v - s_v) + s_vx (gy - a) + x_hat c), x_hat = r (x - mu)
                    k = -gamma * r * r
                    c_x = k * (s_vg - a * s_v - 3 * b * s_vx) * r
                    const = -k * (b * s_v + s_vx * a) - c_x * mu
                    d_x = torch.addcmul(const, v, k * b).addcmul_(gy, k * s_vx).addcmul_(x, c_x)
                if need_gamma:
                    d_gamma = (m * r * (s_vg - a * s_v - b * s_vx)).view(-1)  # (C,)
        if u_gamma is not None or u_beta is not None:
            ug = _per_channel(u_gamma) if u_gamma is not None else torch.zeros_like(r)
            ub = _per_channel(u_beta) if u_beta is not None else torch.zeros_like(r)
            if need_gy:  # u_gamma x_hat + u_beta
                extra = torch.addcmul(ub - ug * r * mu, x, ug * r)
                d_gy = extra if d_gy is None else d_gy.add_(extra)
            if need_x:  # u_gamma r (gy - a - x_hat b)
                extra = torch.addcmul(ug * r * (r * b * mu - a), gy, ug * r)
                extra.addcmul_(x, -ug * r * r * b)
                d_x = extra if d_x is None else d_x.add_(extra)
        return d_gy, d_x, d_gamma, None, None, None


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose train-mode second derivative is the closed form above.

    Identical to ``nn.BatchNorm2d`` in eval mode, without grad mode, under autocast, and for
    layers without affine parameters or running statistics (those take the parent's path).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.affine and self.track_running_stats
                and torch.is_grad_enabled() and x.dim() == 4 and x.is_floating_point()
                and x.numel() > x.shape[1]  # one value per channel: the parent raises
                and not torch.is_autocast_enabled(x.device.type)):
            return super().forward(x)
        assert self.num_batches_tracked is not None  # track_running_stats
        self.num_batches_tracked.add_(1)
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        return _BatchNormTrain.apply(x, self.weight, self.bias, self.running_mean,
                                     self.running_var, momentum, self.eps)


# ---------------------------------------------------------------------------------- relu


class _ReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, gy: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return _ReLUBackward.apply(gy, y)


class _ReLUBackward(torch.autograd.Function):
    """gx = gy * (y > 0): linear in gy; its derivative w.r.t. y is zero and is left out
    (PyTorch's own node returns a zero-filled map that the engine then adds)."""

    @staticmethod
    def forward(ctx: FunctionCtx, gy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y)
        return _aten.threshold_backward(gy, y, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, v: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return _aten.threshold_backward(v, y, 0), None


class ConvBNReLU(blocks.ConvBNReLU):
    """:class:`genome.blocks.ConvBNReLU` whose ReLU has no zero-filled second derivative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(self.conv(x))
        return _ReLU.apply(z) if torch.is_grad_enabled() else F.relu(z)


# --------------------------------------------------------------------------- max pooling


def _gather_windows(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``v[n, c].flatten()[idx[n, c, i, j]]``: (N, C, h, w) in ``v``'s layout.

    ``idx`` holds flat ``H * W`` indices, as PyTorch's max-pool kernels return them. A
    channels-last ``v`` is gathered along the spatial axis of its (N, H*W, C) memory, so it is
    not copied to the default layout first (PyTorch's own second derivative does that)."""
    n, c, h, w = idx.shape
    if _is_channels_last(v):
        flat_v = v.permute(0, 2, 3, 1).reshape(n, -1, c)  # (N, H*W, C), a view
        flat_i = idx.permute(0, 2, 3, 1).reshape(n, h * w, c)  # (N, h*w, C)
        return flat_v.gather(1, flat_i).view(n, h, w, c).permute(0, 3, 1, 2)
    return v.reshape(n, c, -1).gather(2, idx.reshape(n, c, h * w)).view(n, c, h, w)


def _pool_backward(gy: torch.Tensor, x: torch.Tensor, idx: torch.Tensor,
                   spec: tuple) -> torch.Tensor:
    if _is_channels_last(x) and not _is_channels_last(gy):
        # The kernels run 2-3x slower on a default-layout gradient (e.g. from the head's
        # mean) than on a channels-last copy of it.
        gy = gy.contiguous(memory_format=torch.channels_last)
    if spec[0] == "adaptive":
        return _aten.adaptive_max_pool2d_backward(gy, x, idx)
    _, kernel, stride = spec
    return _aten.max_pool2d_with_indices_backward(gy, x, kernel, stride, [0, 0], [1, 1], False,
                                                  idx)


class _MaxPool2d(torch.autograd.Function):
    """Max pooling, ``spec`` = ("adaptive", output size) or ("window", kernel, stride)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, spec: tuple) -> torch.Tensor:
        if spec[0] == "adaptive":
            y, idx = _aten.adaptive_max_pool2d(x, spec[1])
        else:
            y, idx = _aten.max_pool2d_with_indices(x, spec[1], spec[2], [0, 0], [1, 1], False)
        ctx.save_for_backward(x, idx)
        ctx.spec = spec
        return y  # (N, C, h, w)

    @staticmethod
    def backward(ctx: FunctionCtx, gy: torch.Tensor):  # type: ignore[override]
        x, idx = ctx.saved_tensors
        return _MaxPool2dBackward.apply(gy, x, idx, ctx.spec), None


class _MaxPool2dBackward(torch.autograd.Function):
    """gx = scatter of gy to the arg-max positions; linear in gy, so its derivative is the
    gather of the upstream gradient at the same positions (and zero w.r.t. x)."""

    @staticmethod
    def forward(ctx: FunctionCtx, gy: torch.Tensor, x: torch.Tensor, idx: torch.Tensor,
                spec: tuple) -> torch.Tensor:
        ctx.save_for_backward(idx)
        return _pool_backward(gy, x, idx, spec)  # (N, C, H, W)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, v: torch.Tensor):  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        return _gather_windows(v, idx), None, None, None


def _fast_pool_applies(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.dim() == 4 and x.is_floating_point()


def adaptive_max_pool2d(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_max_pool2d(x, size)`` with the layout-keeping second derivative."""
    if not _fast_pool_applies(x):
        return F.adaptive_max_pool2d(x, size)
    return _MaxPool2d.apply(x, ("adaptive", [int(size[0]), int(size[1])]))


class Pool(blocks.Pool):
    """:class:`genome.blocks.Pool` whose max pooling has the layout-keeping second derivative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "max" or not _fast_pool_applies(x):
            return super().forward(x)
        return _MaxPool2d.apply(x, ("window", [2, 2], [2, 2]))


class Sum(blocks.Sum):
    """:class:`genome.blocks.Sum`, matching spatial sizes with :func:`adaptive_max_pool2d`."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return super().forward(*blocks.match_spatial(a, b, adaptive_max_pool2d))


class Concat(blocks.Concat):
    """:class:`genome.blocks.Concat`, matching spatial sizes with :func:`adaptive_max_pool2d`."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return super().forward(*blocks.match_spatial(a, b, adaptive_max_pool2d))


# ------------------------------------------------------------------- global average pool


class _GlobalMean(torch.autograd.Function):
    """(N, C, H, W) -> (N, C) mean, whose gradient map comes back in the input's layout
    (PyTorch's is a stride-0 expansion that every later kernel reads slowly)."""

    @staticmethod
    def forward(ctx: FunctionCtx, f: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.channels_last = f.shape, _is_channels_last(f)
        return f.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx: FunctionCtx, gz: torch.Tensor):  # type: ignore[override]
        return _GlobalMeanBackward.apply(gz, ctx.shape, ctx.channels_last)


class _GlobalMeanBackward(torch.autograd.Function):
    """gf = gz / (H W) broadcast over (H, W): linear in gz, derivative mean over (H, W)."""

    @staticmethod
    def forward(ctx: FunctionCtx, gz: torch.Tensor, shape: torch.Size,
                channels_last: bool) -> torch.Tensor:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return (gz / (shape[2] * shape[3]))[:, :, None, None].expand(shape).contiguous(
            memory_format=layout)  # (N, C, H, W)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, v: torch.Tensor):  # type: ignore[override]
        return v.mean(dim=(2, 3)), None, None


class Head(blocks.Head):
    """:class:`genome.blocks.Head` with the layout-keeping global average pool."""

    @staticmethod
    def global_pool(f: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return f.mean(dim=(2, 3))
        return _GlobalMean.apply(f)


_FAST: dict[type, type] = {
    nn.Conv2d: Conv2d, nn.BatchNorm2d: BatchNorm2d, blocks.ConvBNReLU: ConvBNReLU,
    blocks.Pool: Pool, blocks.Sum: Sum, blocks.Concat: Concat, blocks.Head: Head,
}


ENV_SWITCH = "NAS_FAST_DOUBLE_BACKWARD"


def fast_double_backward_enabled() -> bool:
    """Whether :func:`use_fast_double_backward` switches layers (``$NAS_FAST_DOUBLE_BACKWARD``,
    read at every call; anything but ``0`` / ``off`` / ``false`` / ``no`` means on)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "off", "false", "no"}


def use_fast_double_backward(module: nn.Module) -> nn.Module:
    """Switch every module inside ``module`` whose exact class is a key of ``_FAST`` (PyTorch's
    Conv2d / BatchNorm2d; the conv, pool, sum, concat and head blocks) to the class above, in
    place; returns ``module``. Parameters, buffers, hooks and ``state_dict`` keys are unchanged.
    Does nothing when :func:`fast_double_backward_enabled` is false."""
    if not fast_double_backward_enabled():
        return module
    for m in module.modules():
        fast = _FAST.get(type(m))
        if fast is not None:
            m.__class__ = fast
    return module
