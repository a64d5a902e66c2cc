"""``python -m nas.export runs/<name> --out DIR``: evolved networks as standalone PyTorch modules.

For every selected child (default: the final population; ``--all``: every trained child;
``--ids``: the ones named) DIR receives

```
net_<id>.py            readable layer-by-layer source, imports torch only (genome.export_module)
net_<id>.pt            its trained weights (refined weights when the child was refined)
net_<id>.genome.json   its genome
net_<id>.onnx          with --onnx: the network in ONNX (opset nas.reporting.onnx.OPSET,
                       dynamic batch)
README.md              how to load them, and their measured metrics
```
Everything is checked before the first file is written (unknown ids, missing weights, weights
that do not fit the architecture), and every file is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from nas.cli import ArgumentParser, run
from nas.reporting.exporting import export_run


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m nas.export``."""
    p = ArgumentParser(prog="python -m nas.export",
                       description="Export evolved networks of a run as standalone "
                       "PyTorch modules + weights + genome JSON.")
    p.add_argument("run", help="run directory (runs/<name>)")
    p.add_argument("--out", required=True, help="output directory (created; files are replaced)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true",
                       help="every trained child of the run, not only the final population")
    which.add_argument("--ids", nargs="+", metavar="ID", help="these child ids (e.g. g012-c003)")
    which.add_argument("--front", action="store_true",
                       help="the trade-off front: every evaluated child not dominated in (clean "
                            "accuracy, transferred accuracy, size) (nas.reporting.front)")
    p.add_argument("--front-size", choices=("params", "macs"), default="params",
                   help="size objective of --front (default params)")
    p.add_argument("--onnx", action="store_true",
                   help="also write net_<id>.onnx (dynamic batch; needs the [onnx] extra)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nas.export``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = export_run(args.run, args.out, all_=args.all, ids=args.ids, front=args.front,
                         front_size=args.front_size, onnx=args.onnx)
    for path in written:
        print(path)
    print(f"{len(written)} networks exported to {args.out} (see {Path(args.out) / 'README.md'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
