"""Table 6 of the paper: the evolved networks against the standard defenses, side by side.

Rows (gm-neuroevolution §4.2.3): the reference's architecture trained with CE ("Ref"), with
GM ("Ref+GM"), the hand-engineered network with GM ("HE+GM"), the search's best finalist
(when a run is given), the CE copy behind JPEG compression and behind bilateral filtering
(test-time, defenses/transforms.py), and the reference's architecture trained with free,
fast and PGD adversarial training (defenses/adversarial.py).

Protocol (the paper's, not Table 5's): the reference's L-inf PGD examples of the test images
*the reference classifies correctly*, one set for every network. The fooling rate is
"modified to compensate for image filtering methods, which cannot classify images": the
eligible images are chosen by the reference alone, so a row's rate is::

    FR6(f) = |{i : r(x_i) = y_i and f(x_i^adv) != y_i}| / |{i : r(x_i) = y_i}|

(a network's own clean errors among them count as fooled; Table 5's rate, which also asks
``f(x_i) = y_i``, is given beside it). The examples are the run's cached transferred test set
when its attack is ``pgd-linf`` (crafted on every test image; the eligible ones are used),
else crafted here once with the dataset's ``pgd-linf`` settings and cached. Each row also has
the project's usual columns: clean accuracy, transferred accuracy (on every test image),
the worst held-out source's transferred accuracy (when the settings have held-out sources),
and a white-box column: L-inf PGD (the same settings) on the row's own network, the attack
adversarial training is made for (expected to win there). JPEG has no gradient: the white-box
attack goes through it with the identity (BPDA); the bilateral filter is differentiable.

The fooling rate's interval is the 95 % Wilson score interval of the binomial proportion
(one training; the spread over training seeds is not in it). With replicates (every trained
row trained ``n`` times from independent seeds, :func:`build_models`' ``replicate``) the
table is :func:`summarize`'s: each column's mean over the replicates with its 95 % Student-t
interval (:mod:`nas.evaluation.stats`), and the differences the paper's pattern is about,
paired by replicate (same test images, same examples, replicate ``r`` of both rows):

- transferred fooling rate, ``FR6(other) - FR6(Ref+GM)``: above zero, GM is fooled less;
- white-box PGD accuracy, ``acc(AT row) - acc(Ref+GM)``: above zero, adversarial training
  holds more under the attack it is trained for.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from defenses import Transformed, create_transform
from nas.evaluation.attacks import AttackSettings, attack_dataset, resolve_attack, transferred_set
from nas.evaluation.data import cache_root
from nas.evaluation.fitness import FitnessSettings, Workspace
from nas.evaluation.stats import Interval, paired_difference, t_interval
from nas.evaluation.training import predict
from nas.reporting.models import Candidate, baseline

#: The paper's Table 6 (reduced CIFAR-10, L-inf PGD fooling rate, %), by row.
PAPER = {"Ref": 85.0, "Ref+GM": 22.8, "HE+GM": 24.2, "search best": 22.4, "Ref+JPEG": 84.4,
         "Ref+bilateral": 48.8, "Ref+free-AT": 51.0, "Ref+fast-AT": 43.8}
#: Every row, in the table's order; what each is (``network``, ``input transform``,
#: ``adversarial training``).
ROWS = {"Ref": "network", "Ref+GM": "network", "HE+GM": "network", "search best": "network",
        "Ref+JPEG": "input transform", "Ref+bilateral": "input transform",
        "Ref+free-AT": "adversarial training", "Ref+fast-AT": "adversarial training",
        "Ref+PGD-AT": "adversarial training"}
AT_DEFENSES = {"Ref+free-AT": "free-at", "Ref+fast-AT": "fast-at", "Ref+PGD-AT": "pgd-at"}
TRANSFORM_ROWS = {"Ref+JPEG": "jpeg", "Ref+bilateral": "bilateral"}
WHITE_BOX_NOTE = "white-box L-inf PGD on the row's own network (adversarial training is " \
                 "expected to win here)"


@dataclass(frozen=True)
class Row:
    """One network's numbers (accuracies and rates in [0, 1]; ``None``: not measured)."""

    name: str
    kind: str
    clean: float
    transferred: float
    fooling: float
    fooled: int
    eligible: int
    interval: tuple[float, float]
    fooling_both_correct: float
    held_out_worst: float | None
    white_box: float | None
    paper: float | None
    trained: str = ""


@dataclass
class Table6:
    """The rows and how they were obtained (``notes``: one sentence each)."""

    rows: list[Row]
    attack: dict[str, Any]
    white_box_images: int
    notes: list[str] = field(default_factory=list)
    defense: str = "gm"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``nan`` rates as ``None``)."""
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v

        rows = [{k: clean(v) for k, v in dataclasses.asdict(r).items()} for r in self.rows]
        return {"rows": rows, "attack": self.attack, "white_box_images": self.white_box_images,
                "white_box": WHITE_BOX_NOTE, "notes": self.notes, "defense": self.defense}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of ``k`` successes in ``n`` trials (``nan`` when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def protocol_set(ws: Workspace) -> tuple[torch.Tensor, AttackSettings]:
    """The reference's L-inf PGD examples of the test split (float (N, C, H, W)) and the
    attack: the run's cached set when its attack is ``pgd-linf``, else crafted once (cached)."""
    if ws.attack.name == "pgd-linf":
        return ws.adversarial["test"], ws.attack
    attack = resolve_attack("pgd-linf", ws.settings.dataset)
    x, y = ws.splits.x_test, ws.splits.y_test
    x_adv = transferred_set(ws.reference, ws.reference_key, "test", x, y, attack,
                            cache_root(ws.settings.cache_dir), log=lambda _m: None)
    return x_adv, attack


def score_row(name: str, model: nn.Module, ws: Workspace, x_adv: torch.Tensor,
              white_box: tuple[AttackSettings, torch.Tensor] | None, *,
              device: torch.device | None = None, seed: int = 0, trained: str = "") -> Row:
    """Every column of one row (module docstring); ``white_box``: the attack and the indices
    of the test images it runs on (``None``: no white-box column)."""
    x, y = ws.splits.x_test, ws.splits.y_test
    ref_ok = ws.reference_pred["test"] == y  # (N,) the protocol's eligible images
    clean_ok = predict(model, x, device=device) == y
    adv_ok = predict(model, x_adv, device=device) == y
    fooled, eligible = int((ref_ok & ~adv_ok).sum()), int(ref_ok.sum())
    both = ref_ok & clean_ok
    fooling_both = int((both & ~adv_ok).sum()) / int(both.sum()) if both.any() else float("nan")
    held = [float((predict(model, xa, device=device) == y).float().mean())
            for xa in ws.held_out_adv.values()]
    wb = None
    if white_box is not None:
        attack, idx = white_box
        x_wb = attack_dataset(model, x[idx], y[idx], attack, device=device, seed=seed)
        wb = float((predict(model, x_wb, device=device) == y[idx]).float().mean())
    rate = fooled / eligible if eligible else float("nan")
    paper = PAPER.get(name)
    return Row(name, ROWS.get(name, "network"), float(clean_ok.float().mean()),
               float(adv_ok.float().mean()), rate, fooled, eligible, wilson(fooled, eligible),
               fooling_both, min(held) if held else None, wb,
               None if paper is None else paper / 100, trained)


@dataclass(frozen=True)
class Budget:
    """How the trained rows are trained: ``epochs`` (a cap when ``patience`` > 0) and the
    arguments of each defense and transform (name -> dict; the settings' own defense keeps
    the settings' arguments unless given here)."""

    epochs: int
    patience: int = 0
    defense_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    transform_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def row_label(name: str, defense: str) -> str:
    """``Ref+GM`` / ``HE+GM`` under another defense than gm: ``Ref+ncen``."""
    return name.replace("+GM", f"+{defense}") if defense != "gm" else name


def build_models(ws: Workspace, settings: FitnessSettings, budget: Budget, *,
                 rows: tuple[str, ...] = tuple(ROWS), best: nn.Module | None = None,
                 log: Callable[[str], None] = print, progress: bool = False,
                 replicate: int = 0) -> dict[str, tuple[nn.Module, str]]:
    """The networks of ``rows`` with how each was trained: the trained ones through
    :func:`nas.reporting.models.baseline` (cached, shared with ``nas.report``); ``search
    best`` is ``best`` (left out when ``None``); the GM rows use ``settings.defense``.
    free-AT is trained ``epochs / replays`` epochs (at least 1), the paper's budget-matched
    schedule (Shafahi et al. 2019). ``replicate`` ``r``: every trained row from its ``r``-th
    independent seed (0: the single training's)."""
    out: dict[str, tuple[nn.Module, str]] = {}

    def trained(arch: str, defense: str, epochs: int) -> tuple[nn.Module, str]:
        args = dict(settings.defense_args) if defense == settings.defense else {}
        args.update(budget.defense_args.get(defense, {}))
        these = dataclasses.replace(settings, defense=defense,
                                    defense_args=tuple(sorted(args.items())))
        cand = Candidate(f"{arch}+{defense}", arch, defense)
        model = baseline(ws, these, cand, defense, epochs, log, progress,
                         patience=budget.patience, replicate=replicate)
        what = f"{arch}, {defense} {args or ''}".strip() + f", {epochs} epochs"
        return model, what + (f" (patience {budget.patience})" if budget.patience else "")

    ref = settings.reference
    for name in rows:
        if name == "Ref" or name in TRANSFORM_ROWS:
            if "Ref" not in out:
                out["Ref"] = trained(ref, "none", budget.epochs)
        if name == "Ref+GM":
            out[name] = trained(ref, settings.defense, budget.epochs)
        elif name == "HE+GM":
            out[name] = trained("he-baseline", settings.defense, budget.epochs)
        elif name == "search best" and best is not None:
            out[name] = best, "the search's best finalist (its refined weights)"
        elif name in AT_DEFENSES:
            defense = AT_DEFENSES[name]
            epochs = budget.epochs
            if defense == "free-at":
                replays = int(budget.defense_args.get("free-at", {}).get("replays", 8))
                epochs = max(1, round(budget.epochs / replays))
            out[name] = trained(ref, defense, epochs)
        elif name in TRANSFORM_ROWS:
            kind = TRANSFORM_ROWS[name]
            transform = create_transform(kind, **dict(budget.transform_args.get(kind, {})))
            out[name] = (Transformed(transform, out["Ref"][0]),
                         f"Ref behind {kind} {transform.hparams()}")
    return {n: out[n] for n in rows if n in out}


def table6(ws: Workspace, models: Mapping[str, tuple[nn.Module, str]], *,
           white_box_size: int = 500, device: torch.device | None = None, seed: int = 0,
           defense: str = "gm", log: Callable[[str], None] = print) -> Table6:
    """Score every network of ``models`` (name -> (module, how it was trained)) by the
    protocol of the module docstring; ``white_box_size`` test images (a seeded subset; 0 =
    all; ``None`` = no white-box column)."""
    x_adv, attack = protocol_set(ws)
    n = len(ws.splits.y_test)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    idx = idx[: white_box_size or n].sort().values
    rows = []
    for name, (model, how) in models.items():
        log(f"table 6: scoring {row_label(name, defense)}")
        model = model.to(device or "cpu").eval()
        row = score_row(name, model, ws, x_adv, None if white_box_size is None else
                        (attack, idx), device=device, seed=seed, trained=how)
        if row_label(name, defense) != name:  # the paper's value is GM's
            row = dataclasses.replace(row, paper=None)
        rows.append(dataclasses.replace(row, name=row_label(name, defense)))
    eligible = int((ws.reference_pred["test"] == ws.splits.y_test).sum())
    notes = [f"{ws.settings.dataset}: {len(ws.splits.y_train)} training, {n} test images; "
             f"reference {ws.settings.reference} (clean {ws.reference_acc.get('test', 0):.4f}); "
             f"{eligible} test images it classifies correctly are the fooling rate's eligible "
             f"set (the same examples for every network).",
             f"Attack {attack.name} eps={attack.eps:g}, step {attack.step_size:g}, "
             f"{attack.steps} steps; white-box column on "
             f"{len(idx) if white_box_size is not None else 0} test images: {WHITE_BOX_NOTE}."]
    return Table6(rows, dataclasses.asdict(attack), 0 if white_box_size is None else len(idx),
                  notes, defense)


#: The rows whose paired differences against Ref+GM :func:`summarize` states: transferred
#: fooling rate (every other row) and white-box accuracy (adversarial training).
FOOLING_VERSUS = ("Ref", "Ref+JPEG", "Ref+bilateral", "Ref+free-AT", "Ref+fast-AT",
                  "Ref+PGD-AT", "HE+GM")
WHITE_BOX_VERSUS = tuple(AT_DEFENSES)
COLUMNS = ("fooling", "clean", "transferred", "held_out_worst", "white_box")


@dataclass(frozen=True)
class SummaryRow:
    """One row over its replicates: each column's mean and 95 % interval (``None``: the
    column was not measured)."""

    name: str
    kind: str
    columns: dict[str, Interval | None]
    paper: float | None
    trained: str = ""

    @property
    def n(self) -> int:
        """How many replicates the row has."""
        return self.columns["fooling"].n if self.columns["fooling"] is not None else 0


@dataclass
class Summary:
    """Table 6 over replicates: the rows, the paired differences (label -> interval, for
    the fooling rate and the white-box accuracy) and the replicates' own tables."""

    rows: list[SummaryRow]
    fooling_differences: dict[str, Interval]
    white_box_differences: dict[str, Interval]
    replicates: list[Table6]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: every interval with its verdict, and each replicate's table."""
        def iv(v: Interval | None) -> Any:
            return None if v is None else v.to_dict()

        return {"replicates": len(self.replicates),
                "rows": [{"name": r.name, "kind": r.kind, "n": r.n, "paper": r.paper,
                          "trained": r.trained,
                          **{c: iv(r.columns[c]) for c in COLUMNS}} for r in self.rows],
                "fooling_differences": {k: v.to_dict() for k, v in
                                        self.fooling_differences.items()},
                "white_box_differences": {k: v.to_dict() for k, v in
                                          self.white_box_differences.items()},
                "white_box": WHITE_BOX_NOTE, "notes": self.notes,
                "tables": [t.to_dict() for t in self.replicates]}


def summarize(tables: list[Table6]) -> Summary:
    """Table 6 over replicates (one :class:`Table6` per replicate, replicate ``r``'s trained
    rows from seed ``r``): each column's mean and Student-t interval, and the differences
    against the GM row paired by replicate (module docstring). A row missing from some
    replicates (the search's best, trained once) is summarised over those it has and is left
    out of the paired differences.

    Raises:
        ValueError: no tables.
    """
    if not tables:
        raise ValueError("summarize needs at least one table")
    by_name: dict[str, list[Row]] = {}
    for table in tables:
        for row in table.rows:
            by_name.setdefault(row.name, []).append(row)
    rows = []
    for name, reps in by_name.items():
        cols: dict[str, Interval | None] = {}
        for col in COLUMNS:
            values = [getattr(r, col) for r in reps]
            ok = [v for v in values if v is not None and not math.isnan(v)]
            cols[col] = t_interval(ok) if ok else None
        rows.append(SummaryRow(name, reps[0].kind, cols, reps[0].paper, reps[0].trained))
    n = len(tables)
    gm = row_label("Ref+GM", tables[0].defense)
    fooling, white = {}, {}
    if len(by_name.get(gm, [])) == n:
        base = by_name[gm]
        for other in FOOLING_VERSUS:
            label = row_label(other, tables[0].defense)
            if len(by_name.get(label, [])) != n:
                continue
            fooling[f"{label} - {gm}"] = paired_difference(
                [r.fooling for r in by_name[label]], [r.fooling for r in base])
        for other in WHITE_BOX_VERSUS:
            reps = by_name.get(other, [])
            if len(reps) == n and all(r.white_box is not None for r in reps + base):
                white[f"{other} - {gm}"] = paired_difference(
                    [r.white_box for r in reps], [r.white_box for r in base])
    notes = list(tables[0].notes) + [
        f"{n} replicate(s): every trained row trained {n} time(s) from independent seeds; "
        "each column is the mean with its 95 % Student-t interval over them, the differences "
        "are paired by replicate."]
    return Summary(rows, fooling, white, list(tables), notes)


def _iv(v: Interval | None) -> str:
    """``12.3 [10.1, 14.5]`` in percent; ``-`` when not measured. The bounds of a rate or an
    accuracy are shown clipped to [0, 100] (the Student-t interval of a bounded quantity can
    reach past them with three replicates; the JSON keeps the unclipped values)."""
    if v is None or math.isnan(v.mean):
        return "-"
    if v.low is None or v.high is None:
        return f"{100 * v.mean:.1f}"
    low, high = max(0.0, v.low), min(1.0, v.high)
    return f"{100 * v.mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def summary_markdown(summary: Summary) -> str:
    """The replicated table, then the paired differences with their verdicts, as markdown."""
    head = ("| network | kind | n | fooling rate % (Table 6) | clean % | transferred % | "
            "held-out worst % | white-box PGD % (AT expected to win) | paper % |")
    lines = ["Means over replicates with 95 % Student-t intervals.", "", head,
             "|" + "---|" * 9]
    for r in summary.rows:
        c = r.columns
        lines.append(f"| {r.name} | {r.kind} | {r.n} | {_iv(c['fooling'])} | {_iv(c['clean'])} "
                     f"| {_iv(c['transferred'])} | {_iv(c['held_out_worst'])} | "
                     f"{_iv(c['white_box'])} | {_pct(r.paper)} |")
    for title, diffs, reading in (
            ("Transferred fooling rate, paired by replicate", summary.fooling_differences,
             "above zero: the GM row is fooled less"),
            ("White-box PGD accuracy, paired by replicate", summary.white_box_differences,
             "above zero: adversarial training holds more")):
        if not diffs:
            continue
        lines += ["", f"{title} ({reading}):", "", "| difference | points | verdict |",
                  "|---|---|---|"]
        lines += [f"| {k} | {v.text(100, 1)} | {v.verdict()} |" for k, v in diffs.items()]
    lines += ["", "Lower fooling rate is better; higher accuracies are better. The paper's "
              "column is reduced CIFAR-10 (gm-neuroevolution Table 6)."]
    lines += [f"- {note}" for note in summary.notes]
    lines += [f"- {r.name}: {r.trained}" for r in summary.rows if r.trained]
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def to_markdown(table: Table6) -> str:
    """The table as GitHub markdown, with the paper's column and the notes below."""
    head = ("| network | kind | fooling rate % (Table 6) | 95 % interval | fooled / eligible | "
            "Table 5 rate % | clean % | transferred % | held-out worst % | white-box PGD % "
            "(AT expected to win) | paper % |")
    lines = [head, "|" + "---|" * 11]
    for r in table.rows:
        lines.append(f"| {r.name} | {r.kind} | {_pct(r.fooling)} | {_pct(r.interval[0])}-"
                     f"{_pct(r.interval[1])} | {r.fooled} / {r.eligible} | "
                     f"{_pct(r.fooling_both_correct)} | {_pct(r.clean)} | {_pct(r.transferred)} "
                     f"| {_pct(r.held_out_worst)} | {_pct(r.white_box)} | {_pct(r.paper)} |")
    lines += ["", "Lower fooling rate is better; higher accuracies are better. The paper's "
              "column is reduced CIFAR-10 (gm-neuroevolution Table 6)."]
    lines += [f"- {note}" for note in table.notes]
    lines += [f"- {r.name}: {r.trained}" for r in table.rows if r.trained]
    return "\n".join(lines) + "\n"


def to_json(table: Table6) -> str:
    """The table as indented JSON (:meth:`Table6.to_dict`)."""
    return json.dumps(table.to_dict(), indent=2)
