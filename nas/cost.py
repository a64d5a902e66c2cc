"""``python -m nas.cost RUN [RUN ...]``: what each search's children cost.

Reads each run's ``events.jsonl`` (so it works on a run still in progress) and prints one line
per run: children (and how many were trained rather than reused), their summed training
seconds, children per hour of one worker, rejected children (``--early-reject``), child-epochs
trained / planned and the fraction saved, children that inherited weights (``--inherit``),
and the best search fitness so far. ``--json`` prints one JSON object per run instead.
``--check-rejected N`` also trains N of each run's rejected children to the end and says how
many would have replaced their member (the check of early rejection's cost in quality)::

    python -m nas.cost runs/cpu-fmnist-s0 runs/cpu-fmnist-reject-s0
    python -m nas.cost runs/cpu-fmnist-reject-s0 --check-rejected 6 --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.cli import ArgumentParser, run
from nas.errors import UserError
from nasbase.values import nonneg_int, positive_int


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented)."""
    p = ArgumentParser(prog="python -m nas.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (runs/<name>)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    p.add_argument("--check-rejected", type=nonneg_int, default=0, metavar="N",
                   help="train N rejected children of each run (a seeded sample) for their full "
                        "epochs, as the search would have without --early-reject, and count "
                        "those whose fitness beats their threshold (default 0: no training)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of that sample (default 0)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="children trained in parallel by --check-rejected (default 1)")
    return p


def run_cost(run_dir: Path) -> dict[str, Any]:
    """The cost summary of one run (see the module docstring)."""
    from nas.search.driver import search_cost
    from nas.search.rundir import read_events

    path = run_dir / "events.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir}: no events.jsonl; not a run directory of nas.evolve")
    events, _ = read_events(path)
    children = [e for e in events if e["type"] == "child_finished"]
    cost = search_cost(events)
    seconds = cost["train_seconds"]
    best = max((float(e["metrics"]["fitness"]) for e in children
                if e["metrics"].get("status") == "ok"), default=math.nan)
    return {"run": run_dir.name, "children": len(children),
            "children_per_hour_per_worker": (round(3600 * cost["children_trained"] / seconds, 2)
                                             if seconds else None),
            "best_search_fitness": None if math.isnan(best) else best, **cost}


def line(cost: dict[str, Any]) -> str:
    """One human-readable line of :func:`run_cost`'s summary."""
    rate = cost["children_per_hour_per_worker"]
    best = cost["best_search_fitness"]
    return (f"{cost['run']}: {cost['children']} children ({cost['children_trained']} trained) "
            f"in {cost['train_seconds']:.0f} s of training = "
            f"{'-' if rate is None else f'{rate:.1f}'} children/h per worker; "
            f"rejected {cost['rejected']}; child-epochs {cost['child_epochs_trained']}/"
            f"{cost['child_epochs_planned']} (saved {cost['child_epochs_saved_fraction']:.1%}); "
            f"inherited {cost['inherited']}; best search fitness "
            f"{'-' if best is None else f'{best:.4f}'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    costs = [run_cost(Path(r)) for r in args.runs]  # every run checked before printing
    for cost in costs:
        print(json.dumps(cost) if args.json else line(cost))
    if args.check_rejected:
        from nas.search.driver import check_rejected

        for r in args.runs:
            rows = check_rejected(r, args.check_rejected, seed=args.seed, workers=args.workers,
                                  log=(lambda _m: None) if args.json else print)
            summary = {"run": Path(r).name, "checked": len(rows),
                       "would_replace": sum(row["would_replace"] for row in rows),
                       "children": rows}
            print(json.dumps(summary) if args.json else
                  f"{summary['run']}: {summary['would_replace']} of {summary['checked']} checked "
                  "rejected children would have replaced their member")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
