"""``python -m nas.study``: one resumable multi-seed comparison of the search with what a user
would get otherwise, as paired differences with 95 % intervals.

```
python -m nas.study --preset cpu --seeds 0,1,2,3,4 --out studies/fmnist-cpu
python -m nas.study --preset cpu --dataset mnist --seeds 0,1,2 --out studies/mnist-cpu
python -m nas.study --preset smoke --seeds 0,1 --out studies/smoke      # seconds
```
For every seed the study runs one *cell* per method, each in its own folder under ``--out``:

- ``search-<strategy>-s<seed>/``: a search run folder (``nas.evolve``), one per
  ``--strategies`` entry (default ``ga,random``: the search and random search over the same
  space with the same budget);
- ``<arch>+<defense>-s<seed>/``: a baseline (``metrics.json`` + ``weights.pt``), trained with
  the search's fitness settings (same data subsets, reference, attack, held-out sources) and
  the finalists' budget (``refine_epochs`` cap, ``refine_patience``, ``refine_draws``). The
  default ``--baselines he-ref,he-baseline,best:none`` are the paper's hand-engineered
  networks with the run's defense (he-ref+GM, he-baseline+GM) and the search's best
  architecture trained with CE (``best+ce``: what the search's architecture gives without
  GM).

A cell is reused when it is complete (``final.json``; ``metrics.json`` with the same
settings), a search cell killed midway resumes through ``nas.evolve --resume``'s machinery
(nothing finished is trained again), and any other folder in the way is refused. The
searches take ``--workers`` / ``--backend`` / ``--scheduler`` (loky or Dask). After every
seed, ``table.json``, ``table.md`` and ``differences.png`` are rewritten from the finished
cells (:mod:`nas.reporting.studytable`): first strategy minus each other method, paired by
seed, as mean and 95 % interval, and the verdict.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.cli import ArgumentParser, run
from nas.errors import UserError
from nasbase.values import nonneg_int, positive_int

__all__ = ["Baseline", "build_parser", "main", "run_study"]

STUDY, TABLE_JSON, TABLE_MD, PLOT = "study.json", "table.json", "table.md", "differences.png"


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A baseline cell: an architecture (a reference or named genome, or ``best``: the first
    strategy's best finalist of the same seed) and its training objective (``None``: the
    run's defense; ``"none"``: CE)."""

    arch: str
    defense: str | None = None

    def name(self, run_defense: str) -> str:
        """``he-ref+gm``, ``best+ce``: the method's name in the table and its folder."""
        defense = self.defense or run_defense
        return f"{self.arch}+{'ce' if defense == 'none' else defense}"


def parse_baselines(text: str) -> tuple[Baseline, ...]:
    """``he-ref,he-baseline,best:none`` -> baselines (``ARCH[:DEFENSE]``, comma-separated)."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        arch, _, defense = item.partition(":")
        if not arch:
            raise UserError(f"expected ARCH[:DEFENSE], got {item!r}", setting="baselines")
        out.append(Baseline(arch, defense or None))
    return tuple(out)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(nonneg_int(t) for t in text.split(",") if t.strip())
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not values or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated seeds, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m nas.study`` (every flag documented)."""
    p = ArgumentParser(prog="python -m nas.study",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=__doc__.split("\n\n")[0].replace("``", ""),
                       epilog="Each cell is a folder under --out; rerunning the same command "
                       "reuses finished cells and resumes a killed one. See docs/study.md.")
    p.add_argument("--out", required=True, help="study folder (created; holds every cell, "
                                                "study.json, table.md, table.json, "
                                                "differences.png)")
    p.add_argument("--seeds", type=_int_list, default=(0, 1, 2),
                   help="run seeds, comma-separated (default: 0,1,2); a seed fixes the data "
                        "subsets, the reference and the search, so cells of one seed pair up")
    p.add_argument("--strategies", type=_names, default=("ga", "random"),
                   help="search strategies, comma-separated; the first is the search every "
                        "difference starts from (default: ga,random)")
    p.add_argument("--baselines", default="he-ref,he-baseline,best:none",
                   help="baselines ARCH[:DEFENSE], comma-separated; ARCH a reference or named "
                        "genome, or best (the first strategy's best architecture); DEFENSE "
                        "the run's unless given, none = CE (default: "
                        "he-ref,he-baseline,best:none)")
    p.add_argument("--preset", help="preset of every search (as nas.evolve --preset)")
    p.add_argument("--config", metavar="FILE", help="JSON file of settings (as nas.evolve "
                                                    "--config)")
    p.add_argument("--dataset", help="dataset of every cell (as nas.evolve --dataset)")
    p.add_argument("--generations", type=nonneg_int, help="generations of every search")
    p.add_argument("--set", dest="keys", action="append", default=[], metavar="KEY=VALUE",
                   help="any other nas.evolve setting by its key, repeatable, e.g. "
                        "held_out_attacks=pgd-linf,mi-fgsm,di-mi-fgsm (the value is parsed as "
                        "JSON when it is JSON)")
    ex = p.add_argument_group("execution (may change between invocations)")
    ex.add_argument("--workers", type=positive_int, help="children evaluated at once by each "
                                                         "search")
    ex.add_argument("--backend", choices=["loky", "dask"], help="loky (default) or dask")
    ex.add_argument("--scheduler", help="Dask scheduler address (with --backend dask)")
    return p


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"expected KEY=VALUE, got {text!r}", setting="set")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def study_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every search of the study takes (besides seed and strategy)."""
    keys = dict(_key_value(t) for t in args.keys)
    for name in ("dataset", "generations"):
        if getattr(args, name) is not None:
            keys[name] = getattr(args, name)
    for name in ("seed", "strategy", "workers", "backend", "scheduler", "progress"):
        if name in keys:
            raise UserError(f"{name} is set by the study itself or its own flag",
                            setting="set")
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nas.study``."""
    from nas.reporting.studytable import markdown

    args = build_parser().parse_args(argv)
    execution = {k: getattr(args, k) for k in ("workers", "backend", "scheduler")
                 if getattr(args, k) is not None}
    table = run_study(Path(args.out), preset=args.preset, config_file=args.config,
                      keys=study_keys(args), seeds=args.seeds, strategies=args.strategies,
                      baselines=parse_baselines(args.baselines), execution=execution)
    print(markdown(table), end="")
    print(f"table written to {Path(args.out) / TABLE_MD} and {TABLE_JSON}; plot {PLOT}")
    return 0


def run_study(out: Path, *, preset: str | None, config_file: str | None,
              keys: dict[str, Any], seeds: Sequence[int], strategies: Sequence[str],
              baselines: Sequence[Baseline], execution: dict[str, Any] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) a study in ``out`` and return its table (module doc).

    Raises:
        UserError: no strategy, a study folder made with other settings, a cell folder
            in the way, a bad setting (as ``nas.evolve``).
    """
    from nas.study_cells import baseline_cell, search_cell, write_outputs

    if not strategies:
        raise UserError("needs at least one strategy (the search)", setting="strategies")
    from nas.evaluation.fitness import check_names
    from nas.search import config as cfgmod

    for strategy in strategies:  # every setting and name checked before anything is written
        cfg = cfgmod.resolve({**keys, "seed": seeds[0], "strategy": strategy, **(execution or {})},
                             preset=preset, config_file=config_file, run_dir="")
    check_names(cfg.fitness)
    spec = {"preset": preset, "config_file": config_file, "keys": keys}
    _check_study(out, spec)
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    others: list[str] = []
    table: dict[str, Any] = {}
    for seed in seeds:
        runs = {}  # strategy -> (its run folder, its fitness settings, its search settings)
        for strategy in strategies:
            path = out / f"search-{strategy}-s{seed}"
            cells.setdefault(strategy, {})[seed], fit, srch = search_cell(
                path, preset=preset, config_file=config_file, keys=keys, seed=seed,
                strategy=strategy, execution=execution or {}, log=log)
            runs[strategy] = (path, fit, srch)
        # the baselines take the search's settings: same data, reference, budget (pairing)
        first, fitness, search = runs[strategies[0]]
        for b in baselines:
            name = b.name(fitness.defense)
            arch = f"{first}:best" if b.arch == "best" else b.arch
            cells.setdefault(name, {})[seed] = baseline_cell(
                out / f"{name}-s{seed}", arch, b.defense or fitness.defense, fitness, search,
                seed=seed, log=log)
        others = [*strategies[1:], *(n for n in cells if n not in strategies)]
        table = write_outputs(out, cells, strategies[0], others)
        log(f"study: seed {seed} done, table rewritten ({out / TABLE_MD})")
    return table


def _check_study(out: Path, spec: dict[str, Any]) -> None:
    """Create ``out`` with ``study.json``, or check that it holds the same study settings
    (seeds, strategies and baselines may grow: they only add cells)."""
    from nas.search.rundir import config_diff

    path = out / STUDY
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        stored.pop("created", None)
        diff = config_diff(stored, json.loads(json.dumps(spec, default=str)))
        if diff:
            raise UserError(f"{out} holds a study with other settings (stored -> given): "
                            f"{'; '.join(diff)}")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; --out must be a folder", setting="out")
    out.mkdir(parents=True, exist_ok=True)
    from nasbase.files import write_text_atomically

    write_text_atomically(path, json.dumps({**spec, "created": time.strftime("%Y-%m-%d %H:%M:%S")},
                                       indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(run(main))
