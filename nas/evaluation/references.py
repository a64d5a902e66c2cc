"""Reference networks: a registry of builders, CE training once, an on-disk cache.

Every builder returns a module with the model contract of docs/architecture.md: pixels in
[0, 1] -> logits, normalisation as its first layer, ``forward_features``, ``forward_head``,
``num_classes``, ``num_features`` and ``tap_names``. torchvision models are wrapped
(:class:`TorchvisionNet`) and adapted to small images (28x28 and 32x32, 1 or 3 channels):

- ``resnet18`` / ``resnet34``: ``conv1`` takes ``C`` input channels; at 32x32 it becomes the
  CIFAR stem (3x3, stride 1, padding 1) and the stem max-pool is removed; at 28x28 the 7x7
  stride-2 ``conv1`` is kept (only its input channels change) and the max-pool is removed,
  so ``layer1`` runs at 14x14 (about 4x cheaper than a stride-1 stem, see docs/fitness.md).
  ``fc`` has ``num_classes`` outputs. Apart from ``conv1`` the parameter count is exactly
  torchvision's ``resnetXX(num_classes=K)``.
- ``vgg16_bn``: first conv takes ``C`` channels; the 7x7 adaptive pool and the 3-layer
  classifier are replaced by global average pooling + ``Linear(512, K)`` (CIFAR VGG); below
  32x32 the last max-pool is dropped (28 -> 14 -> 7 -> 3 -> 1).
- ``densenet121``: ``conv0`` becomes 3x3 stride 1 with ``C`` channels, ``pool0`` is removed.
- ``squeezenet1_1``: first conv takes ``C`` channels with stride 1; torchvision's head
  (dropout, 1x1 conv to K, ReLU, global average pool) is ``forward_head``.
- ``lenet5``: LeCun et al. (1998) LeNet-5 with ReLU and max-pooling: conv 5x5 (6) - pool -
  conv 5x5 (16) - pool - 120 - 84 - K; the first conv pads by 2 at 28x28 (the paper's 32x32
  input), so both sizes reach 16x5x5 features. The cheap reference of another family (0.4
  MMACs per 28x28 image), e.g. the second member of an ensemble reference on a CPU.
- ``mobilenet_v3_small``: first conv takes ``C`` channels with stride 1 (28x28 -> 2x2 after
  the four stride-2 stages); ``forward_head`` is global average pool + torchvision's classifier.
- ``vit_mini``: a small torchvision ``VisionTransformer`` for small images, the reference of
  a family that is not convolutional (a held-out attack source, issue 30): 4x4 patches (49
  tokens at 28x28, 64 at 32x32) embedded by ``conv_proj`` taking ``C`` channels, a class
  token, 4 encoder layers of 4 heads, hidden size 96, MLP 192. ``forward_features`` is the
  class token after the encoder's final LayerNorm as a ``(N, 96, 1, 1)`` map and
  ``forward_head`` torchvision's ``heads``; apart from ``conv_proj`` the parameters are
  exactly torchvision's ``VisionTransformer`` of that configuration.
- ``he-ref`` / ``he-baseline``: the paper's hand-engineered genomes (Appendix A) compiled by
  ``genome.compile_genome``.

``a+b`` (two or more distinct registered names joined by ``+``) is an **ensemble reference**
(:class:`ReferenceEnsemble`): its logits are the log of the mean of the members' softmax, so
everything computed from "the reference" (the transferred PGD sets, the input gradients of
eq. 1, the fooling rate) is computed from the ensemble, as Liu et al. (2017, "Delving into
transferable adversarial examples") craft examples on an ensemble to make them transfer to
networks none of its members is. Each member is trained and cached as a single reference.

A reference is trained once with CE (:func:`get_reference`) and cached as one all-or-nothing
entry (its ``state_dict`` and metadata in one file, :mod:`nas.evaluation.cache`), keyed by
everything that determines it: architecture, the digest of the exact training images and labels, and
the whole training configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from defenses import create_defense
from defenses.ensemble import Ensemble
from genome.blocks import Normalize
from nas.errors import UserError
from nas.evaluation.cache import (
    derive_seed,
    digest,
    discard,
    first_line,
    load_entry,
    save_entry,
    tensor_digest,
)
from nas.evaluation.callbacks import (
    Callback,
    EarlyStopping,
    EpochLog,
    accuracy_on,
    steps_per_epoch,
)
from nas.evaluation.data import DatasetInfo, Splits
from nas.evaluation.training import TrainConfig, TrainData, predict, resolve_device, train
from nasbase.registry import Registry

Builder = Callable[[DatasetInfo], nn.Module]
REFERENCES: Registry[Builder] = Registry("reference", group="nas.references")


def register_reference(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(info) -> nn.Module`` under ``name``."""
    return REFERENCES.register(name)


def list_references(pattern: str = "*") -> list[str]:
    """Sorted names of the registered references."""
    return REFERENCES.names(pattern)


#: Joins the member names of an ensemble reference (``he-ref+lenet5``).
ENSEMBLE_SEP = "+"


def reference_members(name: str) -> list[str]:
    """The registered names an ensemble reference ``a+b`` is made of (``[name]`` for one).

    Raises:
        UnknownName: a member is not registered.
        UserError: a member is named twice or is empty (``a+``).
    """
    members = name.split(ENSEMBLE_SEP)
    if len(members) > 1 and (len(set(members)) < len(members) or not all(members)):
        raise UserError(f"ensemble reference {name!r} must join distinct reference names with "
                        f"{ENSEMBLE_SEP!r} (e.g. he-ref+lenet5)", setting="reference")
    for member in members:
        REFERENCES.get(member)
    return members


#: Joins a held-out source and its weights file (``--held-out torchvision:resnet50=r50.pt``).
WEIGHTS_SEP = "="


def held_out_source(entry: str) -> tuple[str, str | None]:
    """``(reference name, weights file or None)`` of a ``--held-out`` entry ``NAME[=FILE]``.

    Raises:
        UserError: ``NAME=`` without a file.
    """
    name, sep, weights = entry.partition(WEIGHTS_SEP)
    if sep and not weights.strip():
        raise UserError(f"{entry!r}: expected NAME or NAME=WEIGHTS_FILE", setting="held_out")
    return name, weights.strip() or None


def check_reference(name: str, weights: str | None = None) -> list[str]:
    """:func:`reference_members` of ``name``, refusing a weights file for an ensemble (a
    state_dict file holds one network).

    Raises:
        UnknownName, UserError: as :func:`reference_members`; or ``weights`` with an ensemble.
    """
    members = reference_members(name)
    if len(members) > 1 and weights:
        raise UserError(f"holds one network; {name!r} is an ensemble of {len(members)}",
                        setting="reference_weights")
    return members


class ReferenceEnsemble(Ensemble):
    """An ensemble reference: log mean member softmax (:class:`defenses.ensemble.Ensemble`).

    Follows the model contract except the feature methods (an ensemble has no single feature
    map; ``tap_names`` is empty), which no use of a reference needs.
    """

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("an ensemble reference has no single feature map")


def build_reference(name: str, info: DatasetInfo) -> nn.Module:
    """A freshly initialised reference ``name`` for the dataset described by ``info``
    (a :class:`ReferenceEnsemble` of fresh members for ``a+b``)."""
    members = reference_members(name)
    if len(members) == 1:
        return REFERENCES.get(name)(info)
    return ReferenceEnsemble([REFERENCES.get(m)(info) for m in members],
                             num_classes=info.num_classes)


class TorchvisionNet(nn.Module):
    """A torchvision body split into ``features`` (to the last feature map) and ``head``."""

    def __init__(self, info: DatasetInfo, features: nn.Module, head: nn.Module,
                 num_features: int, tap_names: tuple[str, ...]) -> None:
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        self.features = features
        self.head = head
        self.num_classes, self.num_features = info.num_classes, num_features
        self.tap_names = tap_names

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (N, C, H, W) in [0, 1] -> feature map (N, num_features, h, w)."""
        return self.features(self.normalize(x))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits (N, num_classes)."""
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _PoolLinear(nn.Sequential):
    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(num_features, num_classes))


def adapt_resnet(net: tvm.ResNet, info: DatasetInfo) -> tvm.ResNet:
    """The documented small-image change of a torchvision ResNet (in place; see module doc)."""
    c, h, _ = info.input_shape
    if h >= 32:
        net.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        net.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.maxpool = nn.Identity()
    return net


def _resnet(builder: Callable[..., tvm.ResNet], info: DatasetInfo) -> TorchvisionNet:
    net = adapt_resnet(builder(num_classes=info.num_classes), info)
    feats = nn.Sequential()
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        feats.add_module(name, getattr(net, name))
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    taps = tuple(f"features.layer{i}" for i in range(1, 5))
    return TorchvisionNet(info, feats, head, net.fc.in_features, taps)


@register_reference("resnet18")
def resnet18(info: DatasetInfo) -> TorchvisionNet:
    """torchvision ResNet-18 adapted to small images (module doc)."""
    return _resnet(tvm.resnet18, info)


@register_reference("resnet34")
def resnet34(info: DatasetInfo) -> TorchvisionNet:
    """torchvision ResNet-34 adapted to small images (module doc); the paper's reference."""
    return _resnet(tvm.resnet34, info)


@register_reference("vgg16_bn")
def vgg16_bn(info: DatasetInfo) -> TorchvisionNet:
    """torchvision VGG-16-BN with a CIFAR head (module doc)."""
    feats = tvm.vgg16_bn().features
    feats[0] = nn.Conv2d(info.input_shape[0], 64, kernel_size=3, padding=1)
    if info.input_shape[1] < 32:
        feats = feats[:-1]
    taps = tuple(f"features.{i}" for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d))
    return TorchvisionNet(info, feats, _PoolLinear(512, info.num_classes), 512, taps)


@register_reference("densenet121")
def densenet121(info: DatasetInfo) -> TorchvisionNet:
    """torchvision DenseNet-121 with a 3x3 stride-1 stem and no stem max-pool."""
    net = tvm.densenet121(num_classes=info.num_classes)
    net.features.conv0 = nn.Conv2d(info.input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    net.features.pool0 = nn.Identity()
    feats = nn.Sequential(net.features, nn.ReLU())  # torchvision applies this ReLU in forward
    taps = tuple(f"features.0.denseblock{i}" for i in range(1, 5))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.classifier)
    return TorchvisionNet(info, feats, head, net.classifier.in_features, taps)


@register_reference("lenet5")
def lenet5(info: DatasetInfo) -> TorchvisionNet:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling (module doc)."""
    c, h, _ = info.input_shape
    features = nn.Sequential(
        nn.Conv2d(c, 6, kernel_size=5, padding=2 if h < 32 else 0), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(inplace=True),
        nn.MaxPool2d(2))
    head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
                         nn.Linear(120, 84), nn.ReLU(inplace=True),
                         nn.Linear(84, info.num_classes))
    return TorchvisionNet(info, features, head, 16, ("features.2", "features.5"))


@register_reference("mobilenet_v3_small")
def mobilenet_v3_small(info: DatasetInfo) -> TorchvisionNet:
    """torchvision MobileNetV3-Small with a stride-1 first conv taking ``C`` channels."""
    net = tvm.mobilenet_v3_small(num_classes=info.num_classes)
    net.features[0][0] = nn.Conv2d(info.input_shape[0], 16, kernel_size=3, stride=1, padding=1,
                                   bias=False)
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.classifier)
    return TorchvisionNet(info, net.features, head, net.classifier[0].in_features,
                          ("features.3", "features.8", "features.12"))


@register_reference("squeezenet1_1")
def squeezenet1_1(info: DatasetInfo) -> TorchvisionNet:
    """torchvision SqueezeNet 1.1 with a stride-1 first conv taking ``C`` channels."""
    net = tvm.squeezenet1_1(num_classes=info.num_classes)
    net.features[0] = nn.Conv2d(info.input_shape[0], 64, kernel_size=3, stride=1)
    taps = tuple(f"features.{i}" for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d))
    return TorchvisionNet(info, net.features, nn.Sequential(net.classifier, nn.Flatten()), 512,
                          taps)


#: ``vit_mini``'s configuration (module doc): patch, layers, heads, hidden size, MLP size.
VIT_MINI = {"patch_size": 4, "num_layers": 4, "num_heads": 4, "hidden_dim": 96, "mlp_dim": 192}


class _ViTFeatures(nn.Module):
    """torchvision ``VisionTransformer``'s body: patch embedding, class token, encoder."""

    def __init__(self, vit: tvm.VisionTransformer, channels: int) -> None:
        super().__init__()
        p, d = vit.patch_size, vit.hidden_dim
        self.conv_proj = nn.Conv2d(channels, d, kernel_size=p, stride=p)
        self.class_token = vit.class_token
        self.encoder = vit.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (N, C, H, W) -> class token (N, D, 1, 1)."""
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, H/p * W/p, D)
        cls = self.class_token.expand(tokens.shape[0], -1, -1)  # (N, 1, D)
        out = self.encoder(torch.cat([cls, tokens], dim=1))  # (N, 1 + H/p * W/p, D)
        return out[:, 0, :, None, None]


@register_reference("vit_mini")
def vit_mini(info: DatasetInfo) -> TorchvisionNet:
    """A small torchvision VisionTransformer on 4x4 patches (module doc)."""
    _, h, w = info.input_shape
    if h != w or h % VIT_MINI["patch_size"]:
        raise UserError(f"vit_mini needs square images whose side is a multiple of "
                        f"{VIT_MINI['patch_size']}, not {h}x{w}", setting="reference")
    vit = tvm.VisionTransformer(image_size=h, num_classes=info.num_classes, **VIT_MINI)
    head = nn.Sequential(nn.Flatten(), vit.heads)
    return TorchvisionNet(info, _ViTFeatures(vit, info.input_shape[0]), head,
                          VIT_MINI["hidden_dim"], ("features.conv_proj",))


def _named_genome_net(name: str, info: DatasetInfo) -> nn.Module:
    from genome import compile_genome
    from search_spaces import named_genome

    return compile_genome(named_genome(name), **info.network_args())


@register_reference("he-ref")
def he_ref(info: DatasetInfo) -> nn.Module:
    """The paper's hand-engineered reference network (Appendix A, Fig. 4a)."""
    return _named_genome_net("he-ref", info)


@register_reference("he-baseline")
def he_baseline(info: DatasetInfo) -> nn.Module:
    """The paper's additional hand-engineered baseline network (Appendix A, Fig. 4b)."""
    return _named_genome_net("he-baseline", info)


# --------------------------------------------------------------------------- train + cache

#: Fields of a training configuration that only say where / how visibly training runs; the
#: resolved device *type* is keyed instead (CPU and CUDA kernels round differently).
EXECUTION_ONLY = frozenset({"device", "progress"})


def training_fields(config: Any) -> dict[str, Any]:
    """The JSON-able fields of a training configuration (a dataclass or a mapping) that change
    what training produces: every field except :data:`EXECUTION_ONLY`, nested ones included.

    The reference key takes the configuration as a whole, so a field added to it later is
    part of the key without touching this module.
    """
    fields_ = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    out = {k: v for k, v in fields_.items() if k not in EXECUTION_ONLY}
    if "device" in fields_:
        out["device_type"] = resolve_device(str(fields_["device"])).type
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def reference_key(name: str, splits: Splits, training: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines a trained reference (the cache key's content).

    ``architecture`` fingerprints the parameter names and shapes, so a changed definition
    (e.g. an edited named genome) trains a new reference instead of loading a stale one;
    ``train`` is the digest of the exact training images and labels; ``training`` the whole
    training configuration (:func:`training_fields`, with the training seed). A network
    with dropout also keys ``dropout: "seeded"``: its masks come from the training seed since
    :func:`nas.evaluation.training.train` seeds the global generator (entries trained before
    then drew them from whatever state the process was in and are not reproducible).
    """
    model = build_reference(name, splits.info)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
    from nas.evaluation.refsources import source_identity

    return {"reference": name, "architecture": digest(shapes), "dataset": splits.info.name,
            **source_identity(name),
            **({"dropout": "seeded"} if dropout else {}),
            "input_shape": list(splits.info.input_shape),
            "train": tensor_digest(splits.x_train, splits.y_train),
            "train_size": len(splits.y_train), "training": training, "torch": torch.__version__,
            # early stopping picks the weights on the validation split: it determines them too
            **({"val": tensor_digest(splits.x_val, splits.y_val)}
               if training.get("patience") and len(splits.y_val) else {})}


def file_slug(name: str) -> str:
    """``name`` as part of a file name: a path or module spec (``genome:runs/a/g.json``) with
    every character but letters, digits, ``.``, ``_``, ``+`` and ``-`` made ``_``, at most 60
    characters (the key's digest keeps entries apart)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_")[-60:] or "reference"


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``state_dict`` file into ``model``; a mismatch is one short :class:`UserError`.

    Accepts a plain ``state_dict``, a ``{"state_dict": ...}`` checkpoint and a reference's
    cache entry (``<cache>/references/*.pt``, :func:`nas.evaluation.cache.save_entry`). Only
    tensors are ever read (``weights_only=True``); a file holding other pickled objects is
    refused without suggesting to load it some other way.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise UserError(f"cannot read weights {path}: {first_line(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("tensors"), dict) and "key" in state:
        state = state["tensors"]  # a cache entry of a reference
    if not isinstance(state, dict):
        raise UserError(f"weights {path}: not a state_dict (a {type(state).__name__})")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{len(names)} {what} (e.g. {names[0]})"
                 for what, names in (("missing tensors", missing),
                                     ("unexpected tensors", unexpected)) if names]
        raise UserError(f"weights {path} do not fit the architecture: {'; '.join(parts)}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        shapes = [k for k, v in state.items()
                  if not isinstance(v, torch.Tensor) or v.shape != expected[k].shape]
        detail = (f"{len(shapes)} tensors of another shape (e.g. {shapes[0]})" if shapes
                  else first_line(exc))
        raise UserError(f"weights {path} do not fit the architecture: {detail}") from None
    return model


def _eval_accuracies(model: nn.Module, splits: Splits) -> dict[str, Any]:
    """Clean accuracy of ``model`` on the validation and test splits, with their digest."""
    out: dict[str, Any] = {"eval": tensor_digest(splits.x_val, splits.y_val, splits.x_test,
                                                 splits.y_test)}
    for split in ("val", "test"):
        x, y = splits.split(split)
        if len(y):
            out[f"{split}_acc"] = float((predict(model, x) == y).float().mean())
    return out


def _load_cached(name: str, splits: Splits, path: Path, content: dict[str, Any],
                 log: Callable[[str], None]) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cached reference of ``content`` (a fresh build + the stored tensors), or ``None``."""
    entry = load_entry(path, content, log=log)
    if entry is None:
        return None
    state, meta = entry
    model = build_reference(name, splits.info)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        discard(path, f"does not fit {name} ({first_line(exc)})", log)
        return None
    model.eval()
    if meta.get("eval") != tensor_digest(splits.x_val, splits.y_val, splits.x_test, splits.y_test):
        meta = {**meta, **_eval_accuracies(model, splits)}  # stored ones: other splits
    return model, meta


def get_reference(
    name: str, splits: Splits, cache: Path, *, config: TrainConfig, seed: int = 0,
    weights: str | None = None, log: Callable[[str], None] = print,
) -> tuple[nn.Module, str, dict[str, Any]]:
    """The trained reference (eval mode), its cache key and its metadata.

    Loads ``weights`` when given; else loads the cached training result; else trains with CE
    as ``config`` says (recipe, epochs; with ``config.patience`` to the validation plateau,
    keeping the best-on-validation weights; seed derived from ``("reference", seed)`` so it
    differs from any child's stream) and caches ``references/<name>-<dataset>-<key>.pt`` (one
    file: weights + metadata, :func:`nas.evaluation.cache.save_entry`). The whole ``config`` (but
    device and progress) enters the key. A freshly trained reference is returned exactly as a later
    run loads it (a fresh build holding the stored tensors), so everything computed from it
    (adversarial sets, input gradients) is the same on both paths.
    """
    members = check_reference(name, weights)
    if len(members) > 1:
        return _get_ensemble(name, members, splits, cache, config=config, seed=seed, log=log)
    model = build_reference(name, splits.info)
    if weights:
        load_weights(model, weights)
        weights_sha = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
        key = f"{file_slug(name)}-file-{weights_sha}"
        meta: dict[str, Any] = {"reference": name, "weights": str(weights)}
        return model.eval(), key, meta
    train_seed = derive_seed("reference", seed)
    content = reference_key(name, splits, {**training_fields(config), "seed": train_seed})
    key = f"{file_slug(name)}-{splits.info.name}-{digest(content)}"
    path = cache / "references" / f"{key}.pt"
    cached = _load_cached(name, splits, path, content, log)
    if cached is not None:
        return cached[0], key, cached[1]
    use_val = bool(config.patience and len(splits.y_val))
    plateau = (f" to its validation plateau (at most {config.epochs} epochs, patience "
               f"{config.patience})" if use_val else f" for {config.epochs} epochs")
    log(f"training reference {name} on {splits.info.name}{plateau}, recipe "
        f"{config.recipe.name} (cached once)")
    callbacks: list[Callback] = []
    if use_val:
        callbacks.append(EarlyStopping.for_config(
            config, steps_per_epoch(len(splits.y_train), config.batch_size),
            accuracy_on(splits.x_val, splits.y_val, resolve_device(config.device))))
    callbacks.append(EpochLog(lambda line: log(f"reference {name}: {line}")))
    outcome = train(lambda: build_reference(name, splits.info), create_defense("none"),
                    TrainData(splits.x_train, splits.y_train, splits.info.num_classes),
                    config=config, seed=train_seed, callbacks=callbacks, log=log)
    if outcome.status != "ok":
        raise UserError(f"reference {name} diverged while training ({outcome.reason})")
    state = {k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}
    model.load_state_dict(state)  # the layout every later run loads (module doc)
    meta = dict(content, seconds=round(outcome.seconds, 2), epochs_run=outcome.epochs,
                best_epoch=outcome.best_epoch or outcome.epochs,
                **_eval_accuracies(model.eval(), splits))
    save_entry(path, content, state, meta)
    return model.eval(), key, meta


def _get_ensemble(name: str, members: list[str], splits: Splits, cache: Path, *,
                  config: TrainConfig, seed: int,
                  log: Callable[[str], None]) -> tuple[nn.Module, str, dict[str, Any]]:
    """An ensemble reference whose members are :func:`get_reference`'s single references
    (each trained with CE and cached on its own, so a member is shared with any run that uses
    it alone); its key is derived from the members' keys."""
    trained = [get_reference(m, splits, cache, config=config, seed=seed, log=log)
               for m in members]
    model = ReferenceEnsemble([net for net, _, _ in trained],
                              num_classes=splits.info.num_classes).eval()
    keys = [key for _, key, _ in trained]
    metas = {m: meta for m, (_, _, meta) in zip(members, trained, strict=True)}
    key = f"{file_slug(name)}-{splits.info.name}-{digest({'members': keys})}"
    meta = {"reference": name, "members": metas, **_eval_accuracies(model, splits)}
    return model, key, meta


# The resolvers of references from anywhere (``torchvision:NAME``, ``genome:FILE``,
# ``module:pkg.mod:factory``) import this module's registry, so they come last.
from nas.evaluation import refsources as _refsources  # noqa: E402, F401 - registers resolvers
