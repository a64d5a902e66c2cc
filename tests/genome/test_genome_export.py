"""Export: standalone source whose module, loaded in a fresh process, gives the same logits."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest
import torch
from genome_factories import chain, conv, pool

import genome as gn
from search_spaces import named_genome, sample_genome


def _randomise_bn(net: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def test_export_round_trip_in_a_fresh_process(tmp_path):
    g = named_genome("he-ref")
    kw = {"num_classes": 10, "input_shape": (3, 32, 32), "mean": [0.4, 0.5, 0.6], "std": 0.25}
    torch.manual_seed(0)
    net = gn.compile_genome(g, **kw)
    _randomise_bn(net, 0)
    net.eval()
    src, weights = gn.export_module(g, tmp_path / "out" / "net.py", state_dict=net.state_dict(),
                                    **kw)
    assert weights == tmp_path / "out" / "net.pt"
    x = torch.rand(5, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    expected = net(x).detach()
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import net; m = net.load_model();"
        " x = torch.load(sys.argv[2]); torch.save({'logits': m(x).detach(),"
        " 'keys': sorted(m.state_dict()), 'mods': sorted(sys.modules)}, sys.argv[3])"
    )
    subprocess.run([sys.executable, "-c", code, str(src.parent), str(tmp_path / "x.pt"),
                    str(tmp_path / "y.pt")], check=True, cwd=tmp_path, capture_output=True)
    out = torch.load(tmp_path / "y.pt")
    assert torch.allclose(out["logits"], expected, atol=1e-6)
    assert out["keys"] == sorted(net.state_dict())
    assert not {"genome", "search_spaces", "nas", "networkx"} & set(out["mods"])


@pytest.mark.parametrize("seed", range(3))
def test_exported_module_matches_compiled_in_process(tmp_path, seed):
    g = sample_genome(np.random.default_rng(seed))
    net = gn.compile_genome(g).eval()
    _randomise_bn(net, seed)
    src = gn.export_source(g, class_name="Exported")
    namespace: dict = {"__file__": str(tmp_path / "m.py")}
    exec(compile(src, "exported", "exec"), namespace)
    exported = namespace["Exported"]()
    exported.load_state_dict(net.state_dict())  # strict: same keys and shapes
    exported.eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(exported(x), net(x), atol=1e-6)
    assert exported.tap_names == net.tap_names and exported.num_features == net.num_features


def test_source_imports_torch_only_and_reads_layer_by_layer():
    g = chain(conv(8), pool(), conv(16), hidden=32)
    src = gn.export_source(g)
    doc = ast.get_docstring(ast.parse(src))
    assert gn.canonical_hash(gn.from_json(doc[doc.index("{"):])) == gn.canonical_hash(g)
    imports = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module.split(".")[0])
    assert imports == {"torch", "pathlib"}
    assert "h_n1 = self.conv_n1(h_n0)  # conv: (N, 8, 28, 28)" in src
    assert "h_n2 = self.pool_n2(h_n1)  # pool: (N, 8, 14, 14)" in src
    assert "self.head = Head(in_features=16, hidden=32, num_classes=10)" in src


def test_export_of_an_invalid_genome_writes_nothing(tmp_path):
    with pytest.raises(gn.InvalidGenome):
        gn.export_module(chain(*[pool()] * 6), tmp_path / "net.py")
    assert list(tmp_path.iterdir()) == []
