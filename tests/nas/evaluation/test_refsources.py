"""References from anywhere: ``torchvision:NAME``, ``genome:FILE.json``, ``module:pkg.mod:factory``,
with ``--reference-weights``, in ``--held-out``; cache keys that follow what defines the network."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import genome as gn
from nas.cli import run
from nas.errors import UserError
from nas.evaluation.data import dataset_info
from nas.evaluation.fitness import check_names
from nas.evaluation.references import build_reference, get_reference
from nas.train import main as train_main
from search_spaces import named_genome

SYNTH = dataset_info("synthetic")
RGB = dataset_info("synthetic-rgb")


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_torchvision_resnets_are_the_builtin_adapted_resnets():
    assert _shapes(build_reference("torchvision:resnet18", SYNTH)) == \
        _shapes(build_reference("resnet18", SYNTH))
    net = build_reference("torchvision:resnet50", RGB)
    assert net.features.conv1.stride == (1, 1) and net.features.conv1.in_channels == 3
    assert net.forward_features(torch.rand(2, 3, 32, 32)).shape == (2, 2048, 4, 4)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x0_5"])
@pytest.mark.parametrize("info", [SYNTH, RGB], ids=["1x28x28", "3x32x32"])
def test_other_torchvision_classifiers_take_the_dataset_channels_and_give_its_logits(name, info):
    net = build_reference(f"torchvision:{name}", info)
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == info.input_shape[0] and first.stride == (1, 1)
    x = torch.rand(3, *info.input_shape, requires_grad=True)
    logits = net.train()(x)
    assert logits.shape == (3, info.num_classes)
    logits.sum().backward()  # attacks and GM need input gradients
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("reference", "words"), [
    ("torchvision:vit_b_16", "torchvision:vit_b_16 does not run on 1x28x28 images"),
    ("torchvision:nope", "torchvision:nope: not a torchvision classification model"),
    ("module:no_such_pkg.mod:f", "cannot import no_such_pkg.mod (ModuleNotFoundError"),
    ("module:math:nothing_here", "math has no callable 'nothing_here'"),
    ("genome:/no/such/genome.json", "genome file does not exist"),
])
def test_a_bad_reference_source_is_one_line_and_exit_2(tmp_path, capsys, reference, words):
    code = run(train_main, ["he-ref", "--dataset", "synthetic", "--train-size", "60",
                            "--val-size", "30", "--test-size", "30", "--reference", reference,
                            "--epochs", "1", "--no-progress", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err


@pytest.fixture
def tiny(small_settings, synthetic_splits, tmp_path):
    """Settings of one-epoch references, the 200/50/50 synthetic splits, a fresh cache."""
    return dataclasses.replace(small_settings, reference_epochs=1), synthetic_splits, tmp_path


def test_a_genome_file_reference_is_keyed_by_the_file_content(tiny):
    settings, splits, cache = tiny
    path = cache / "ref.json"
    gn.save(named_genome("he-baseline"), path)
    net = build_reference(f"genome:{path}", SYNTH)
    assert _shapes(net) == _shapes(build_reference("he-baseline", SYNTH))
    config = settings.reference_config()
    _, key1, meta = get_reference(f"genome:{path}", splits, cache, config=config,
                                  log=lambda _m: None)
    assert "/" not in key1 and (cache / "references" / f"{key1}.pt").is_file()
    _, again, _ = get_reference(f"genome:{path}", splits, cache, config=config)
    assert again == key1  # cached
    gn.save(named_genome("he-ref"), path)  # another network behind the same path
    _, key2, _ = get_reference(f"genome:{path}", splits, cache, config=config,
                               log=lambda _m: None)
    assert key2 != key1 and meta["genome_sha256"]


FACTORY = '''
from torch import nn
from nas.evaluation.refsources import PixelNet

def small_cnn(info):
    c = info.input_shape[0]
    return PixelNet(info, nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(8, info.num_classes)))
'''


def test_a_module_factory_reference_loads_a_checkpoint_with_reference_weights(
        tmp_path, monkeypatch, capsys):
    (tmp_path / "my_refs.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = build_reference("module:my_refs:small_cnn", SYNTH)
    torch.save(net.state_dict(), tmp_path / "ckpt.pt")
    out = tmp_path / "out"
    code = run(train_main, ["he-ref", "--dataset", "synthetic", "--train-size", "60",
                            "--val-size", "30", "--test-size", "30", "--reference",
                            "module:my_refs:small_cnn", "--reference-weights",
                            str(tmp_path / "ckpt.pt"), "--epochs", "1", "--steps", "1",
                            "--no-progress", "--cache-dir", str(tmp_path / "cache"),
                            "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "module_my_refs_small_cnn-file-" in (out / "metrics.json").read_text()


def test_held_out_sources_take_every_reference_form_and_never_the_reference(small_settings):
    ok = dataclasses.replace(small_settings, held_out=("torchvision:resnet18", "he-baseline"))
    check_names(ok)
    same = dataclasses.replace(small_settings, reference="torchvision:lenet5_missing")
    with pytest.raises(UserError, match="not a torchvision classification model"):
        check_names(same)
    twice = dataclasses.replace(small_settings, reference="torchvision:resnet18",
                                held_out=("torchvision:resnet18",))
    with pytest.raises(UserError, match="must not contain the reference"):
        check_names(twice)


def test_a_held_out_source_takes_a_weights_file(tiny, capsys):
    settings, splits, cache = tiny
    net = build_reference("torchvision:shufflenet_v2_x0_5", SYNTH)
    torch.save({"state_dict": net.state_dict()}, cache / "held.pt")
    code = run(train_main, ["he-baseline", "--dataset", "synthetic", "--train-size", "60",
                            "--val-size", "30", "--test-size", "30", "--reference", "he-ref",
                            "--reference-epochs", "1", "--held-out",
                            f"torchvision:shufflenet_v2_x0_5={cache / 'held.pt'}", "--epochs",
                            "1", "--steps", "1", "--no-progress", "--cache-dir", str(cache)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "held-out torchvision:shufflenet_v2_x0_5=" in out.out
    assert not list((cache / "references").glob("*shufflenet*"))  # loaded, not trained
    with pytest.raises(UserError, match="expected NAME or NAME=WEIGHTS_FILE"):
        check_names(dataclasses.replace(settings, held_out=("he-baseline=",)))
    wrong = build_reference("lenet5", SYNTH)
    torch.save(wrong.state_dict(), cache / "wrong.pt")
    code = run(train_main, ["he-baseline", "--dataset", "synthetic", "--train-size", "60",
                            "--val-size", "30", "--test-size", "30", "--reference", "he-ref",
                            "--reference-epochs", "1", "--held-out",
                            f"torchvision:shufflenet_v2_x0_5={cache / 'wrong.pt'}", "--epochs",
                            "1", "--no-progress", "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and "do not fit the architecture" in err.splitlines()[-1]
