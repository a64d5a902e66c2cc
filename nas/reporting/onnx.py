"""ONNX export of any network of the project (pixels in [0, 1] -> logits), batch size free.

```python
from nas.reporting.onnx import export_onnx
export_onnx(model, "net.onnx", input_shape=(1, 28, 28))   # opset OPSET, dynamic batch
```
The model is captured with ``torch.export`` (only the batch dimension symbolic: every spatial
size of a genome is fixed by its input shape) and converted by PyTorch's ONNX exporter
(``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``). ``onnx`` /
``onnxruntime`` / ``onnxscript`` are the optional extra ``[onnx]``: ``pip install -e '.[onnx]'``.

One decision the exporter cannot make for us: the ``sum`` / ``concat`` skip blocks max-pool
the larger input *adaptively* to the smaller size (DESIGN.md §4). ONNX has no adaptive max
pooling, and PyTorch decomposes it only when the sizes divide. Here it is decomposed for any
sizes into the bins PyTorch uses (bin ``i`` of ``n`` over a length ``L`` covers
``[floor(i L / n), ceil((i + 1) L / n))``), separably: the maximum over a rectangle is the
maximum over its rows of the maxima over its columns. The result equals PyTorch's bit for bit.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from nasbase.files import write_atomically

#: The ONNX opset of every exported file (ONNX Runtime >= 1.14 runs it).
OPSET = 18
#: The packages of the ``[onnx]`` extra.
REQUIRED = ("onnx", "onnxscript", "onnxruntime")


class OnnxUnavailable(RuntimeError):
    """The optional ``[onnx]`` extra is not installed."""


def check_available() -> None:
    """Raise :class:`OnnxUnavailable` (one line naming the missing packages) when the extra is
    absent."""
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxUnavailable(f"ONNX export needs the optional packages {', '.join(missing)}: "
                              f"pip install 'nas-transfer[onnx]' (or pip install -e '.[onnx]')")


def _bins(length: int, n: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling bins: ``[floor(i L / n), ceil((i + 1) L / n))``, i < n."""
    return [(i * length // n, -(-(i + 1) * length // n)) for i in range(n)]


def adaptive_max_pool2d_static(x: torch.Tensor,
                               output_size: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``aten.adaptive_max_pool2d`` for static spatial sizes, in slices, maxima and gathers.

    Args:
        x: ``(N, C, H, W)`` (or ``(C, H, W)``), ``H`` and ``W`` static.
        output_size: ``(h, w)``.

    Returns:
        ``(values, indices)``: ``(..., h, w)`` maxima and their flat indices ``r * W + c``
        (first maximum in row-major order, as PyTorch).
    """
    h_out, w_out = output_size
    height, width = x.shape[-2], x.shape[-1]
    col_vals, col_idx = [], []
    for start, end in _bins(width, w_out):
        v, i = x[..., start:end].max(dim=-1)  # (..., H)
        col_vals.append(v)
        col_idx.append(i + start)
    cv, ci = torch.stack(col_vals, -1), torch.stack(col_idx, -1)  # (..., H, w)
    vals, idx = [], []
    for start, end in _bins(height, h_out):
        v, r = cv[..., start:end, :].max(dim=-2)  # (..., w): best row of each column bin
        c = ci[..., start:end, :].gather(-2, r.unsqueeze(-2)).squeeze(-2)  # (..., w)
        vals.append(v)
        idx.append((r + start) * width + c)
    return torch.stack(vals, -2), torch.stack(idx, -2)  # (..., h, w) twice


def export_onnx(model: nn.Module, path: str | Path, *, input_shape: tuple[int, int, int],
                opset: int = OPSET, log: logging.Logger | None = None) -> Path:
    """Write ``model`` (in eval mode, on the CPU) as one ONNX file with a dynamic batch dimension.

    Args:
        model: pixels ``(N, C, H, W)`` in [0, 1] -> logits ``(N, classes)``.
        path: the ``.onnx`` file (weights inside it).
        input_shape: ``(C, H, W)``.
        opset: ONNX opset (default :data:`OPSET`).
        log: where the opset line goes (default: this module's logger).

    Input ``pixels``, output ``logits``; dimension 0 of both is named ``batch``.

    Raises:
        OnnxUnavailable: the ``[onnx]`` extra is missing.
    """
    check_available()
    path = Path(path)
    model = model.cpu().eval()
    x = torch.rand(2, *input_shape)  # (2, C, H, W): batch 2, so 'batch' is not specialised to 1
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=False)
        ep = ep.run_decompositions(
            {torch.ops.aten.adaptive_max_pool2d.default: adaptive_max_pool2d_static})
        program = torch.onnx.export(ep, (x,), dynamo=True, opset_version=opset,
                                    input_names=["pixels"],
                                    output_names=["logits"], verbose=False, external_data=False)
    proto = program.model_proto.SerializeToString()  # initializers inside (no external data)
    write_atomically(path, lambda fh: fh.write(proto))
    (log or logging.getLogger(__name__)).info("wrote %s (ONNX opset %d, dynamic batch)", path,
                                              opset)
    return path
