"""References: torchvision as the oracle of the adaptation, the model contract, the cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from nas.errors import UserError
from nas.evaluation.data import dataset_info
from nas.evaluation.recipe import CPU_RECIPE
from nas.evaluation.references import (
    build_reference,
    get_reference,
    list_references,
    load_weights,
    reference_members,
)
from nas.evaluation.training import TrainConfig


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_resnet_parameter_count_equals_torchvision_with_the_documented_stem(name, dataset):
    info = dataset_info(dataset)
    c, h, _ = info.input_shape
    oracle = getattr(tvm, name)(num_classes=10)
    # documented change: conv1 takes C channels (3x3 stride 1 at 32x32, 7x7 stride 2 at 28x28)
    k = 3 if h >= 32 else 7
    oracle.conv1 = nn.Conv2d(c, 64, kernel_size=k, stride=1 if h >= 32 else 2, padding=k // 2,
                             bias=False)
    oracle.maxpool = nn.Identity()  # no parameters either way
    ours = build_reference(name, info)
    assert _count(ours) == _count(oracle)
    oracle.eval(), ours.eval()
    ours.load_state_dict({"normalize.mean": ours.normalize.mean,
                          "normalize.std": ours.normalize.std,
                          **{k2.replace("fc.", "head.2.", 1) if k2.startswith("fc.") else
                             f"features.{k2}": v for k2, v in oracle.state_dict().items()}})
    x = torch.rand(2, *info.input_shape)
    with torch.no_grad():  # same function as torchvision once normalisation is applied
        assert torch.allclose(ours(x), oracle(ours.normalize(x)), atol=1e-5)


@pytest.mark.parametrize("name", list_references())
def test_every_reference_follows_the_model_contract(name):
    info = dataset_info("fashion-mnist")
    model = build_reference(name, info).eval()
    x = torch.rand(2, *info.input_shape)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), logits, atol=1e-5)
    assert logits.shape == (2, 10) and model.num_classes == 10
    assert feats.dim() == 4 and feats.shape[1] == model.num_features
    seen = {}
    hooks = [model.get_submodule(t).register_forward_hook(
        lambda _m, _i, o, t=t: seen.__setitem__(t, o)) for t in model.tap_names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(model.tap_names) >= 1 and all(seen[t].dim() == 4 for t in model.tap_names)


def test_rgb_32px_references_build():
    info = dataset_info("cifar10")
    for name in ("vgg16_bn", "squeezenet1_1"):
        assert build_reference(name, info).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_reference_is_trained_once_and_cached(synthetic_splits, tmp_path):
    msgs: list[str] = []
    cfg = TrainConfig(epochs=1, batch_size=100, device="cpu")
    m1, key1, meta = get_reference("he-ref", synthetic_splits, tmp_path, config=cfg,
                                   log=msgs.append)
    assert "training reference" in msgs[0]
    assert msgs[1:] == [m for m in msgs if m.startswith("reference he-ref: epoch ")]  # 1 epoch
    assert len(msgs) == 2
    assert 0.0 <= meta["val_acc"] <= 1.0 and meta["training"]["epochs"] == 1
    assert (tmp_path / "references" / f"{key1}.pt").exists()  # one file: weights + metadata
    assert not (tmp_path / "references" / f"{key1}.json").exists()
    m2, key2, _ = get_reference("he-ref", synthetic_splits, tmp_path, config=cfg,
                                log=msgs.append)
    assert key1 == key2 and len(msgs) == 2  # loaded, not retrained
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    _, key3, _ = get_reference("he-ref", synthetic_splits, tmp_path,
                               config=dataclasses.replace(cfg, epochs=2), log=msgs.append)
    assert key3 != key1  # the epoch count is part of the key
    _, key4, _ = get_reference("he-ref", synthetic_splits, tmp_path,
                               config=dataclasses.replace(cfg, recipe=CPU_RECIPE),
                               log=msgs.append)
    assert key4 not in (key1, key3)  # and so is the recipe


def test_reference_trains_to_its_validation_plateau(synthetic_splits, tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=50, patience=1, recipe=CPU_RECIPE, device="cpu")
    msgs: list[str] = []
    model, _, meta = get_reference("he-ref", synthetic_splits, tmp_path, config=cfg,
                                   log=msgs.append)
    assert 1 <= meta["best_epoch"] <= meta["epochs_run"] <= 6
    assert any("validation plateau" in m for m in msgs)
    assert any("early stopping" in m for m in msgs)


def test_reference_weights_file_and_mismatch(synthetic_splits, tmp_path):
    info = synthetic_splits.info
    src = build_reference("he-ref", info)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    model, _, meta = get_reference("he-ref", synthetic_splits, tmp_path,
                                   config=TrainConfig(epochs=1),
                                   weights=str(tmp_path / "w.pt"), log=lambda m: None)
    assert meta["weights"].endswith("w.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 src.state_dict().values(), strict=True))
    with pytest.raises(UserError, match="do not fit the architecture"):
        load_weights(build_reference("he-baseline", info), tmp_path / "w.pt")
    (tmp_path / "bad.pt").write_text("not a state dict")
    with pytest.raises(UserError, match="cannot read weights"):
        load_weights(build_reference("he-ref", info), tmp_path / "bad.pt")


def test_a_cached_reference_file_loads_as_weights_and_a_mismatch_is_one_short_line(
        synthetic_splits, tmp_path):
    info = synthetic_splits.info
    model, _, _ = get_reference("he-ref", synthetic_splits, tmp_path,
                                config=TrainConfig(epochs=1), log=lambda m: None)
    (entry,) = (tmp_path / "references").glob("*.pt")
    loaded = load_weights(build_reference("he-ref", info), entry)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
    with pytest.raises(UserError) as err:  # every tensor is missing: a short summary, not a list
        load_weights(build_reference("resnet18", info), entry)
    message = str(err.value)
    assert "missing tensors" in message and "unexpected tensors" in message
    assert len(message) < 400 and "\n" not in message


def test_an_ensemble_reference_is_its_members_each_trained_and_cached_alone(synthetic_splits,
                                                                              tmp_path):
    """``a+b``: the members are the single references (a member trained before is loaded, not
    retrained), the logits are the log mean softmax of the members' and the key is new."""
    cfg = TrainConfig(epochs=1, batch_size=100, device="cpu")
    msgs: list[str] = []
    single, key_a, _ = get_reference("he-ref", synthetic_splits, tmp_path, config=cfg,
                                     log=msgs.append)
    msgs.clear()
    ens, key, meta = get_reference("he-ref+he-baseline", synthetic_splits, tmp_path, config=cfg,
                                   log=msgs.append)
    trained = [m for m in msgs if m.startswith("training reference")]
    assert len(trained) == 1 and "he-baseline" in trained[0]  # he-ref came from the cache
    other, key_b, _ = get_reference("he-baseline", synthetic_splits, tmp_path, config=cfg,
                                    log=msgs.append)
    assert key not in (key_a, key_b) and set(meta["members"]) == {"he-ref", "he-baseline"}
    x = synthetic_splits.x_test[:8].float() / 255
    with torch.no_grad():
        members = torch.stack([torch.softmax(single(x), 1), torch.softmax(other(x), 1)])
        assert torch.allclose(ens(x), members.mean(0).log(), atol=1e-5)
    assert 0.0 <= meta["test_acc"] <= 1.0
    again = get_reference("he-ref+he-baseline", synthetic_splits, tmp_path, config=cfg,
                          log=msgs.append)
    assert again[1] == key
    with pytest.raises(UserError):
        get_reference("he-ref+he-baseline", synthetic_splits, tmp_path, config=cfg,
                      weights=str(tmp_path / "w.pt"))


@pytest.mark.parametrize("name", ["he-ref+he-ref", "he-ref+", "+he-ref"])
def test_an_ensemble_reference_joins_distinct_names(name):
    with pytest.raises(UserError, match="distinct"):
        reference_members(name)


def test_an_ensemble_of_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="mobilenet_v3_small"):
        reference_members("he-ref+resnet9")


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_vit_mini_is_torchvisions_vision_transformer_on_small_images(dataset):
    import torchvision.models as tvm

    from nas.evaluation.references import VIT_MINI

    info = dataset_info(dataset)
    c, h, _ = info.input_shape
    model = build_reference("vit_mini", info)
    ours = {k.split("features.", 1)[-1].split("head.1.", 1)[-1]: v.shape
            for k, v in model.state_dict().items() if not k.startswith("normalize")}
    theirs = {k.replace("heads.", ""): v.shape
              for k, v in tvm.VisionTransformer(image_size=h, num_classes=10,
                                                **VIT_MINI).state_dict().items()}
    ours = {k.replace("heads.", ""): v for k, v in ours.items()}
    assert set(ours) == set(theirs)
    differ = {k for k in ours if ours[k] != theirs[k]}
    assert differ == ({"conv_proj.weight"} if c != 3 else set())  # only the input channels
    torch.nn.init.normal_(model.head[1].head.weight)  # torchvision starts the head at zero
    x = torch.rand(3, c, h, h, requires_grad=True)
    model.eval()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # attacks can differentiate it
