"""``python -m nas.genome``: inspect, sample, mutate, validate, export and draw one genome.

Wherever a genome is expected, a JSON file or a named genome (``he-ref``, ``he-baseline``) is
accepted. Bad input exits 2 with one line on stderr (``validate``: one line per problem).

Examples::

    python -m nas.genome sample --seed 0 --out g.json
    python -m nas.genome mutate g.json --seed 1 --count 4 --out c.json
    python -m nas.genome validate c.json
    python -m nas.genome describe he-ref --json
    python -m nas.genome export he-ref --out net.py --weights trained.pt
    python -m nas.genome draw he-baseline --out he-baseline.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np

import genome as gn
from genome.ops import ordered_inputs, topological_order
from nas.cli import ArgumentParser, run
from nas.errors import UserError
from nasbase.values import finite_float, nonneg_int, positive_float, positive_int
from search_spaces import (
    DEFAULT_SPACE,
    list_named_genomes,
    parse_input_shape,
    resolve_genome,
    sample_genome,
)

Shape = tuple[int, int, int]


def _shape(text: str) -> Shape:
    try:
        return parse_input_shape(text)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _add_genome_arg(p: argparse.ArgumentParser) -> None:
    names = ", ".join(list_named_genomes())
    p.add_argument("genome", help=f"genome JSON file or named genome ({names})")


def _add_shape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", default="1x28x28",
                   help="input shape CxHxW the genome is checked/compiled for (default 1x28x28)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m nas.genome`` (one sub-parser per verb)."""
    doc = __doc__ or ""
    parser = ArgumentParser(
        prog="python -m nas.genome",
        description="\n\n".join(doc.split("\n\n")[:2]).replace("``", ""),
        epilog=doc[doc.index("Examples::"):].replace("Examples::", "examples:").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("sample", help="draw a random genome from the default search space")
    p.add_argument("--seed", type=nonneg_int, required=True, help="seed of the random generator")
    _add_shape_arg(p)
    p.add_argument("--out", required=True, help="where to write the genome JSON")
    p = sub.add_parser("mutate", help="apply COUNT random mutations in a row (aggressive mutation)")
    _add_genome_arg(p)
    p.add_argument("--seed", type=nonneg_int, required=True, help="seed of the random generator")
    p.add_argument("--count", type=positive_int, default=4,
                   help="number of mutations in a row (default 4)")
    _add_shape_arg(p)
    p.add_argument("--out", required=True, help="where to write the child genome JSON")
    p = sub.add_parser("validate", help="check a genome; exit 0 when valid, 2 with the problems")
    _add_genome_arg(p)
    _add_shape_arg(p)
    p.add_argument("--max-channels", type=positive_int, default=DEFAULT_SPACE.max_channels,
                   help=f"channel cap (default {DEFAULT_SPACE.max_channels})")
    p.add_argument("--max-nodes", type=positive_int, default=DEFAULT_SPACE.max_nodes,
                   help=f"node cap (default {DEFAULT_SPACE.max_nodes})")
    p = sub.add_parser("describe", help="ops, shapes, spectrum, hash, parameters and MACs")
    _add_genome_arg(p)
    _add_shape_arg(p)
    p.add_argument("--num-classes", type=positive_int, default=10,
                   help="number of classes (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p = sub.add_parser("export", help="write standalone PyTorch source (+ weights) for a genome")
    _add_genome_arg(p)
    _add_shape_arg(p)
    p.add_argument("--num-classes", type=positive_int, default=10,
                   help="number of classes (default 10)")
    p.add_argument("--mean", type=finite_float, nargs="+", default=None,
                   help="normalisation mean (one value or one per channel; default 0)")
    p.add_argument("--std", type=positive_float, nargs="+", default=None,
                   help="normalisation std (one value or one per channel; default 1)")
    p.add_argument("--out", required=True, help="path of the .py file to write")
    p.add_argument("--weights", default=None,
                   help="trained state_dict (.pt) of the compiled genome to ship beside the source")
    p.add_argument("--class-name", default="Net", help="name of the generated class (default Net)")
    p = sub.add_parser("draw", help="draw the genome as a layered graph image (PNG, SVG, PDF)")
    _add_genome_arg(p)
    _add_shape_arg(p)
    p.add_argument("--out", required=True, help="image path; the suffix picks the format")
    p.add_argument("--title", default=None, help="title (default: the genome and its hash)")
    return parser


def _check_positive(value: int, flag: str) -> None:
    if value < 1:
        raise UserError(f"{flag} must be >= 1, got {value}")


def cmd_sample(args: argparse.Namespace) -> int:
    shape = _shape(args.input_shape)
    g = sample_genome(np.random.default_rng(args.seed), DEFAULT_SPACE, shape)
    gn.save(g, args.out)
    print(f"{args.out}: spectrum {gn.spectrum(g)} hash {gn.canonical_hash(g)}")
    return 0


def _space_limits(shape: Shape) -> gn.MutationLimits:
    space = dataclasses.replace(DEFAULT_SPACE, input_shapes=(shape,))
    return space.limits()


def cmd_mutate(args: argparse.Namespace) -> int:
    shape = _shape(args.input_shape)
    _check_positive(args.count, "--count")
    g = resolve_genome(args.genome)
    limits = _space_limits(shape)
    gn.assert_valid(g, input_shape=shape, max_channels=limits.max_channels,
                    max_nodes=limits.max_nodes)
    child, applied = gn.mutate(g, np.random.default_rng(args.seed), limits=limits, count=args.count)
    if not applied:
        raise UserError(f"no mutation applies to {args.genome} within the search space's caps")
    gn.save(child, args.out)
    print(f"{args.out}: applied {', '.join(applied)}; spectrum {gn.spectrum(child)} "
          f"hash {gn.canonical_hash(child)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    shape = _shape(args.input_shape)
    g = resolve_genome(args.genome)
    problems = gn.check_genome(g, input_shape=shape, max_channels=args.max_channels,
                               max_nodes=args.max_nodes)
    for problem in problems:
        print(f"{args.genome}: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"{args.genome}: valid for {args.input_shape}")
    return 0


def describe_genome(g: nx.DiGraph, input_shape: Shape, num_classes: int) -> dict[str, Any]:
    """A JSON-able summary: nodes with params and shapes, spectrum, hash, params, MACs."""
    shapes = gn.infer_shapes(g, input_shape)
    nodes = []
    for n in topological_order(g):
        attrs = dict(g.nodes[n])
        ins = ordered_inputs(g, n)
        nodes.append({"id": str(n), **attrs, "inputs": [str(i) for i in ins],
                      "shape": list(shapes[n])})
    spec = gn.spectrum(g)
    return {
        "hash": gn.canonical_hash(g),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "spectrum": dict(zip(gn.SPECTRUM_OPS, spec, strict=True)),
        "num_nodes": len(g),
        "params": gn.count_params(g, input_shape, num_classes),
        "macs": gn.count_macs(g, input_shape, num_classes),
        "nodes": nodes,
    }


def _describe_text(name: str, d: dict[str, Any]) -> str:
    lines = [f"genome {name}  hash {d['hash']}",
             f"input {'x'.join(map(str, d['input_shape']))}, {d['num_classes']} classes, "
             f"{d['num_nodes']} nodes",
             "spectrum " + ", ".join(f"{k} {v}" for k, v in d["spectrum"].items()),
             f"params {d['params']:,}  MACs (multiply-accumulates) {d['macs']:,}", ""]
    lines.append(f"{'node':<8}{'op':<8}{'params':<22}{'inputs':<16}shape")
    for node in d["nodes"]:
        params = " ".join(f"{k}={v}" for k, v in node.items()
                          if k not in ("id", "op", "inputs", "shape"))
        shape = ("x".join(map(str, node["shape"])) if node["op"] != "output"
                 else f"{d['num_classes']} logits")
        lines.append(f"{node['id']:<8}{node['op']:<8}{params:<22}{','.join(node['inputs']):<16}{shape}")
    return "\n".join(lines)


def cmd_describe(args: argparse.Namespace) -> int:
    shape = _shape(args.input_shape)
    _check_positive(args.num_classes, "--num-classes")
    g = gn.assert_valid(resolve_genome(args.genome), input_shape=shape)
    d = describe_genome(g, shape, args.num_classes)
    print(json.dumps(d, sort_keys=True) if args.json else _describe_text(args.genome, d))
    return 0


def _load_weights(path: str, g: nx.DiGraph, args: argparse.Namespace, shape: Shape) -> dict:
    """The state_dict of ``path`` checked against the compiled genome (one clear error)."""
    from nas.evaluation.references import load_weights

    net = gn.compile_genome(g, num_classes=args.num_classes, input_shape=shape, mean=args.mean,
                            std=args.std)
    return load_weights(net, path).state_dict()


def cmd_export(args: argparse.Namespace) -> int:
    shape = _shape(args.input_shape)
    _check_positive(args.num_classes, "--num-classes")
    if not args.class_name.isidentifier():
        raise UserError(f"--class-name must be a Python identifier, got {args.class_name!r}")
    g = gn.assert_valid(resolve_genome(args.genome), input_shape=shape)
    state = _load_weights(args.weights, g, args, shape) if args.weights else None
    try:
        src, weights = gn.export_module(g, args.out, num_classes=args.num_classes,
                                        input_shape=shape, mean=args.mean, std=args.std,
                                        state_dict=state, class_name=args.class_name)
    except ValueError as exc:  # e.g. wrong number of mean/std values
        raise UserError(str(exc)) from None
    print(f"wrote {src}" + (f" and {weights}" if weights else " (no weights: --weights not given)"))
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from genome.draw import draw_genome

    shape = _shape(args.input_shape)
    g = gn.assert_valid(resolve_genome(args.genome), input_shape=shape)
    title = (args.title if args.title is not None
             else f"{args.genome}  ({gn.canonical_hash(g)[:12]})")
    try:
        path = draw_genome(g, args.out, input_shape=shape, title=title)
    except ValueError as exc:  # unsupported image format
        raise UserError(str(exc)) from None
    print(f"wrote {path}")
    return 0


COMMANDS = {"sample": cmd_sample, "mutate": cmd_mutate, "validate": cmd_validate,
            "describe": cmd_describe, "export": cmd_export, "draw": cmd_draw}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run one verb; returns the exit code."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(run(main))
