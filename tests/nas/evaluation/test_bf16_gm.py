"""GM under bf16 autocast stays within a stated tolerance of float32 (issue 31, docs/gpu.md).

Children train with bf16 autocast on CUDA devices that support it (``TrainConfig.amp``
``"auto"``), so the quantity GM optimises, the cosine between the child's and the reference's
input gradients (gm-neuroevolution eq. 1), is computed through bf16 convolutions, including the
double backward. The tolerances, on a CIFAR-shaped batch of 64 through the training layout
(``build_training_model``: channels-last, the hand-written second derivatives):

- the child's input gradient under bf16 points the way of the float32 one: per-sample cosine
  between the two >= ``GRAD_COS`` for the median sample;
- the batch's GM term (mean cosine of eq. 1, about 0.7 here: the reference gradient is made
  half of the child's own) differs by at most ``GM_DIFF`` (absolute);
- the parameter gradient of the whole loss (eq. 2) has cosine >= ``PARAM_COS`` with float32's.

The CUDA test runs only where CUDA exists (``-m cuda``: ``python -m nas.gpucheck`` runs it);
the CPU test only on a CPU that computes bf16 natively (AVX512-BF16 / AMX).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from defenses import create_defense
from defenses.gm import misalignment
from nas.evaluation.data import dataset_info
from nas.evaluation.references import build_reference
from nas.evaluation.training import build_training_model, cpu_has_native_bf16, input_gradients

GRAD_COS = 0.98
GM_DIFF = 0.02
PARAM_COS = 0.98


def gm_quantities(device: torch.device, bf16: bool, child: str) -> dict[str, torch.Tensor]:
    """Input gradient, per-sample GM cosine and parameter gradient of one GM step of ``child``
    against the he-baseline reference, on a fixed CIFAR-shaped batch."""
    info = dataset_info("synthetic-rgb")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, *info.input_shape, generator=g).to(device)  # (N, 3, 32, 32)
    y = torch.randint(0, info.num_classes, (64,), generator=g).to(device)
    torch.manual_seed(1)
    reference = build_reference("he-baseline", info).to(device).eval()
    g_ref = input_gradients(reference, x, y)  # (N, 3, 32, 32), float32
    torch.manual_seed(2)
    model = build_training_model(create_defense("gm"), lambda: build_reference(child, info),
                                 num_classes=info.num_classes, input_shape=info.input_shape,
                                 device=device).train()
    xr = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    # A reference gradient half-aligned with the child's own (float32) one, so the GM term is
    # far from 0 (two networks at initialisation have nearly orthogonal input gradients, and
    # any error would look small next to a cosine of 0).
    (own,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    g_ref = (F.normalize(own.flatten(1), dim=1)
             + F.normalize(g_ref.flatten(1), dim=1)).view_as(g_ref)  # (N, 3, 32, 32)
    amp = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16
           else contextlib.nullcontext())
    with amp:
        logits = model(xr).float()  # (N, K)
        ce_sum = F.cross_entropy(logits, y, reduction="sum")
        (g_child,) = torch.autograd.grad(ce_sum, xr, create_graph=True)  # (N, 3, 32, 32)
        cos = misalignment(g_child, g_ref.to(g_child.dtype))  # (N,)
        loss = ce_sum / len(y) + cos.mean()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    return {"g": g_child.detach().float().flatten(1), "cos": cos.detach().float(),
            "param": torch.cat([p.flatten() for p in grads]).float()}


def check_bf16_close_to_float32(device: torch.device, child: str) -> None:
    full, half = gm_quantities(device, False, child), gm_quantities(device, True, child)
    grad_cos = F.cosine_similarity(full["g"], half["g"], dim=1)  # (N,)
    assert float(grad_cos.median()) >= GRAD_COS
    assert abs(float(full["cos"].mean() - half["cos"].mean())) <= GM_DIFF
    assert float(F.cosine_similarity(full["param"], half["param"], dim=0)) >= PARAM_COS


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("child", ["he-ref", "he-baseline"])
def test_gm_under_bf16_autocast_on_cuda_is_within_tolerance_of_float32(child):
    check_bf16_close_to_float32(torch.device("cuda"), child)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="needs a CPU that computes bf16 natively")
@pytest.mark.parametrize("child", ["he-ref", "he-baseline"])
def test_gm_under_bf16_autocast_on_a_bf16_cpu_is_within_tolerance_of_float32(child):
    check_bf16_close_to_float32(torch.device("cpu"), child)
