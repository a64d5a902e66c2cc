"""References from anywhere: ``torchvision:NAME``, ``genome:FILE.json``, ``module:pkg.mod:factory``.

Each is a *resolver* of the reference registry (:meth:`nasbase.registry.Registry.add_resolver`),
so the name works wherever a registered one does: ``--reference``, ``--held-out``, an ensemble
``a+b``, ``nas.train ARCH``; trained once with CE and cached like the built-in references, or
loaded with ``--reference-weights``.

- ``torchvision:NAME``: any classification builder of ``torchvision.models`` (random
  initialisation, ``num_classes`` = the dataset's). ResNet-family models (``resnet50``,
  ``resnext50_32x4d``, ``wide_resnet50_2``, ...) get the small-image change of the built-in
  ResNets (:func:`nas.evaluation.references.adapt_resnet`) and the whole model contract; other
  models get their first convolution rebuilt for the dataset's channels, with stride 1 below
  64 pixels, and are wrapped in :class:`PixelNet` (normalisation first, logits out). A model
  that cannot run on the dataset's images (e.g. ``vit_b_16`` wants 224x224) is one line.
- ``genome:FILE.json``: a genome file (``nas.export`` / ``nas.genome`` write them) compiled
  with ``genome.compile_genome``.
- ``module:pkg.mod:factory``: ``factory(info: DatasetInfo) -> nn.Module`` from an importable
  module; the module takes pixels in [0, 1] and returns logits (wrap a body with
  :class:`PixelNet` to put the dataset's normalisation first).

What determines the network enters the reference's cache key (:func:`source_identity`): the
torchvision version, the genome file's bytes, the factory module's source file.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genome.blocks import Normalize
from nas.errors import UserError
from nas.evaluation.data import DatasetInfo
from nas.evaluation.references import REFERENCES, Builder, _resnet


class PixelNet(nn.Module):
    """``body`` behind the dataset's normalisation: pixels (N, C, H, W) in [0, 1] -> logits.

    Follows the model contract except the feature methods (``tap_names`` empty), which no use
    of a reference needs (as :class:`nas.evaluation.references.ReferenceEnsemble`).
    """

    tap_names: tuple[str, ...] = ()

    def __init__(self, info: DatasetInfo, body: nn.Module) -> None:
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        self.body = body
        self.num_classes, self.num_features = info.num_classes, 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("this reference has no separate feature map")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.normalize(x))
        if not isinstance(out, torch.Tensor):  # GoogLeNet / Inception: (logits, aux...)
            out = getattr(out, "logits", None) if hasattr(out, "logits") else out[0]
        return out


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# -------------------------------------------------------------------------- torchvision:NAME


def _replace_first_conv(net: nn.Module, info: DatasetInfo) -> None:
    """Rebuild the first ``Conv2d`` for ``C`` input channels, stride 1 below 64 pixels."""
    c, h, _ = info.input_shape
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            stride = 1 if h < 64 else module.stride
            conv = nn.Conv2d(c, module.out_channels, module.kernel_size, stride=stride,
                             padding=module.padding, dilation=module.dilation,
                             bias=module.bias is not None)
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], conv)
            return


def _dry_run(net: nn.Module, label: str, info: DatasetInfo) -> nn.Module:
    """``net`` after one forward of two blank images (eval mode), or one line saying why not."""
    was = net.training
    try:
        with torch.no_grad():
            out = net.eval()(torch.zeros(2, *info.input_shape))
        if tuple(out.shape) != (2, info.num_classes):
            raise ValueError(f"logits of shape {tuple(out.shape)}")
    except Exception as exc:  # noqa: BLE001 - a model that cannot run here is one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{label} does not run on {'x'.join(map(str, info.input_shape))} "
                        f"images: {detail}", setting="reference") from None
    return net.train(was)


def torchvision_reference(name: str) -> Builder:
    """The builder of ``torchvision:name`` (module doc)."""
    import torchvision.models as tvm

    valid = tvm.list_models(module=tvm)
    if name not in valid:
        raise UserError(f"torchvision:{name}: not a torchvision classification model (e.g. "
                        f"{', '.join(v for v in valid if v.startswith('res'))[:80]}...)",
                        setting="reference")
    builder = tvm.get_model_builder(name)

    def build(info: DatasetInfo) -> nn.Module:
        kwargs: dict[str, Any] = {"num_classes": info.num_classes}
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=True)
        net = builder(**kwargs)
        if isinstance(net, tvm.ResNet):
            return _dry_run(_resnet(lambda **_: net, info), f"torchvision:{name}", info)
        _replace_first_conv(net, info)
        return _dry_run(PixelNet(info, net), f"torchvision:{name}", info)

    return build


# -------------------------------------------------------------------------- genome:FILE.json


def genome_reference(path: str) -> Builder:
    """The builder of ``genome:path``: the genome file compiled for the dataset."""
    from genome import compile_genome
    from search_spaces import resolve_genome

    if not Path(path).is_file():
        raise UserError(f"{path}: genome file does not exist", setting="reference")
    graph = resolve_genome(path)

    def build(info: DatasetInfo) -> nn.Module:
        return compile_genome(graph, **info.network_args())

    return build


# -------------------------------------------------------------------------- module:pkg.mod:fn


def _import_factory(spec: str) -> Any:
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"module:{spec}: expected module:pkg.mod:factory", setting="reference")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"module:{spec}: cannot import {module_name} ({type(exc).__name__}: "
                        f"{detail})", setting="reference") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"module:{spec}: {module_name} has no callable {attr!r}",
                        setting="reference")
    return module, factory


def module_reference(spec: str) -> Builder:
    """The builder of ``module:pkg.mod:factory``: ``factory(info)``, checked to be a module."""
    _, factory = _import_factory(spec)

    def build(info: DatasetInfo) -> nn.Module:
        net = factory(info)
        if not isinstance(net, nn.Module):
            raise UserError(f"module:{spec}: the factory returned a {type(net).__name__}, not "
                            "an nn.Module", setting="reference")
        return net

    return build


def check_sources(names: list[str], dataset: str) -> None:
    """Build every resolved reference form among ``names`` (members of ``a+b`` included) once
    for ``dataset``, so one that cannot run on its images fails before any work."""
    from nas.evaluation.data import dataset_info
    from nas.evaluation.references import reference_members

    forms = [m for name in names for m in reference_members(name) if ":" in m]
    if forms:
        info = dataset_info(dataset)
        for member in forms:
            REFERENCES.get(member)(info)


def source_identity(name: str) -> dict[str, Any]:
    """What determines a resolved reference beyond its name and parameter shapes (cache key)."""
    import torchvision

    prefix, _, rest = name.partition(":")
    if prefix == "torchvision":
        return {"torchvision": torchvision.__version__}
    if prefix == "genome":
        return {"genome_sha256": _sha256(rest)}
    if prefix == "module":
        module, _ = _import_factory(rest)
        source = inspect.getsourcefile(module)
        return {"module_sha256": _sha256(source) if source else None}
    return {}


REFERENCES.add_resolver("torchvision", torchvision_reference, "torchvision:NAME")
REFERENCES.add_resolver("genome", genome_reference, "genome:FILE.json")
REFERENCES.add_resolver("module", module_reference, "module:pkg.mod:factory")
