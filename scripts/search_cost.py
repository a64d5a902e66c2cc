"""Children per hour, rejected children and child-epochs saved of (possibly unfinished) runs.

``python scripts/search_cost.py runs/a runs/b``: reads each run's ``events.jsonl`` (so it works
on a run still in progress) and prints one line per run: children trained (not reused), their
summed training seconds, children per hour of one worker, rejected children, child-epochs
planned / trained and the fraction saved, children that inherited weights, and the best
search fitness so far.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.search.driver import search_cost  # noqa: E402
from nas.search.rundir import read_events  # noqa: E402


def summary(run: Path) -> str:
    events, _ = read_events(run / "events.jsonl")
    children = [e for e in events if e["type"] == "child_finished"]
    trained = [e for e in children if not e["reused"]]
    seconds = sum(float(e["metrics"].get("seconds", 0.0)) for e in trained)
    cost = search_cost(events)
    per_hour = 3600 * len(children) / seconds if seconds else float("nan")
    best = max((float(e["metrics"]["fitness"]) for e in children
                if e["metrics"].get("status") == "ok"), default=float("nan"))
    return (f"{run.name}: {len(children)} children ({len(trained)} trained) in {seconds:.0f} s "
            f"of training = {per_hour:.1f} children/h per worker; rejected {cost['rejected']}; "
            f"child-epochs {cost['child_epochs_trained']}/{cost['child_epochs_planned']} "
            f"(saved {cost['child_epochs_saved_fraction']:.1%}); inherited {cost['inherited']}; "
            f"best search fitness {best:.4f}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summary(Path(arg)))
