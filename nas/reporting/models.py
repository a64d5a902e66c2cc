"""The model-based numbers of a report: networks, accuracies, transfer, fooling rates, IG.

The networks compared are the paper's (§4): the search's *reference* (trained with CE, from
the cache the search used), the baselines (the reference's architecture trained again with
CE, the paper's "Ref. Net.", and with the run's defense, "Ref. Net.+GM"; optionally other
architectures with the defense, "HE. Net.+GM"; each trained here once and cached) and the
*finalists* of the search (compiled from their genome, with their refined weights when the
run finished). Everything reuses the run's prepared workspace
(:func:`nas.evaluation.fitness.prepare`): same data subsets, same reference, same
transferred sets."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.errors import UserError
from nas.evaluation.attacks import resolve_attack
from nas.evaluation.cache import digest, discard, first_line, load_entry, save_entry, tensor_digest
from nas.evaluation.data import cache_root
from nas.evaluation.fitness import Budget, FitnessSettings, Workspace, prepare
from nas.evaluation.references import build_reference, get_reference, load_weights
from nas.evaluation.training import resolve_device
from nas.evaluation.transfer import accuracy, fooling_rates, transfer_matrix
from nas.reporting import plots
from nas.reporting.ig import compare_maps
from nas.reporting.options import ATTACKS, PAPER_SOURCES, ReportData, ReportOptions
from nas.reporting.runview import RunView, child_files, load_run
from nas.search.refinement import refine_network
from nasbase.progress import Stages

REF, REF_CE, REF_GM = "reference", "ref. arch+CE", "ref. arch+GM"
#: A step of a defense with double backpropagation (GM) costs about this many CE steps
#: (docs/fitness.md, "Speed": GM stays above 2x the plain step); used only to estimate
#: training time.
DEFENSE_COST = 3.0


def run_settings(view: RunView, opts: ReportOptions) -> FitnessSettings:
    """The run's fitness settings, with the report's device."""
    fit = view.config.get("fitness")
    if not isinstance(fit, dict):
        raise UserError(f"{view.path}/config.json has no fitness settings")
    settings = FitnessSettings.from_dict(fit)
    return dataclasses.replace(settings, device=opts.device)


def trained_child(view: RunView, child_id: str, ws: Workspace) -> nn.Module | None:
    """A run's child compiled for the run's dataset with its trained (refined first) weights;
    ``None`` when it has none."""
    from genome import compile_genome, load

    info = ws.splits.info
    genome_path, weights = child_files(view, child_id)
    if weights is None:
        return None
    net = compile_genome(load(genome_path), **info.network_args())
    return load_weights(net, weights).eval()


def finalist_models(view: RunView, ws: Workspace, opts: ReportOptions) -> dict[str, nn.Module]:
    """Compiled finalists with their trained weights, best first (``evolved #k``)."""
    out = {}
    chosen = view.finalists[: opts.max_finalists or None]
    for rank, f in enumerate(chosen, start=1):
        net = trained_child(view, str(f["id"]), ws)
        if net is not None:
            out[f"evolved #{rank}"] = net
    if not out:
        raise UserError(f"{view.path}: no finalist has trained weights (children/<id>/weights.pt)")
    return out


@dataclass(frozen=True)
class Candidate:
    """A network the report trains itself: a registered architecture (``arch``) or a
    finalist's genome (``genome``: its JSON text; ``arch`` is then its label), with a
    training objective (``defense``)."""

    name: str
    arch: str
    defense: str
    genome: str | None = None

    def factory(self, ws: Workspace) -> Callable[[], nn.Module]:
        """A function building the untrained network for the run's dataset."""
        info = ws.splits.info
        if self.genome is None:
            return lambda: build_reference(self.arch, info)
        from genome import compile_genome, from_json

        genome = from_json(self.genome)
        return lambda: compile_genome(genome, **info.network_args())


def comparable_run(view: RunView, path: str) -> RunView:
    """The finished run at ``path``, checked to be evaluated exactly as ``view``'s.

    Raises:
        UserError: missing, unfinished, or other fitness settings (data, reference, attack,
            defense, held-out sources: its numbers would not be comparable).
    """
    other = load_run(path)
    mine = FitnessSettings.from_dict(view.config.get("fitness") or {})
    theirs = FitnessSettings.from_dict(other.config.get("fitness") or {})
    if dataclasses.replace(theirs, device=mine.device) != mine:
        raise UserError(f"--compare {path}: its fitness settings (data, reference, attack, "
                        f"defense) differ from {view.path}'s; only runs evaluated alike compare")
    if not other.finalists:
        raise UserError(f"--compare {path}: no final population yet")
    return other


def compared_models(view: RunView, ws: Workspace, opts: ReportOptions) -> dict[str, nn.Module]:
    """The best finalist of each ``opts.compare`` run, as ``<run name> best``.

    Raises:
        UserError: a run with other fitness settings (data, reference, attack, defense: its
            numbers would not be comparable) or without refined weights.
    """
    out = {}
    for path in opts.compare:
        other = comparable_run(view, path)
        net = trained_child(other, str(other.finalists[0]["id"]), ws)
        if net is None:
            raise UserError(f"--compare {path}: its best finalist has no trained weights")
        out[f"{other.path.name} best"] = net
    return out


def baseline(ws: Workspace, settings: FitnessSettings, arch: str | Candidate, defense: str,
             epochs: int, log: Callable[[str], None], progress: bool,
             patience: int = 0, draws: int = 1, replicate: int = 0) -> nn.Module:
    """A network trained with ``defense`` against the run's reference, cached.

    ``defense="none"`` with the reference's architecture is an independently initialised CE
    copy of the reference (the paper's "Ref. Net." column); with the run's defense it is the
    "Ref. Net.+GM" baseline; another architecture gives e.g. "HE. Net.+GM" (paper Table 4); a
    :class:`Candidate` with a genome is a finalist's architecture trained anew (its CE copy);
    a :class:`Candidate` brings its own defense (``defense`` applies to a name). ``epochs`` is
    a cap when ``patience`` > 0: training stops at the validation plateau, as the
    run's refinement does, so a baseline gets the finalists' budget; ``draws`` > 1 trains it
    that many times and keeps the draw best on validation (``--refine-draws``); ``replicate``
    ``r`` > 0 is the same training from the independent seed of draw ``r``
    (:func:`nas.evaluation.fitness.draw_seed`; replicate 0 is the single training). Cached as one
    all-or-nothing entry keyed by the run's reference key, the digest of the training images
    and labels and the training settings (:mod:`nas.evaluation.cache`).
    """
    cand = arch if isinstance(arch, Candidate) else Candidate(arch, arch, defense)
    defense = cand.defense
    trained_with = baseline_settings(settings, cand)
    path, content = baseline_entry(ws, settings, cand, epochs, patience, draws, replicate)
    factory = cand.factory(ws)
    model = factory()
    entry = load_entry(path, content, log=log)
    if entry is not None:
        try:
            model.load_state_dict(entry[0])
            return model.eval()
        except RuntimeError as exc:
            discard(path, f"does not fit {cand.arch} ({first_line(exc)})", log)
    cap = f"at most {epochs} epochs, patience {patience}" if patience else f"{epochs} epochs"
    cap += f", best of {draws} draws on validation" if draws > 1 else ""
    cap += f", replicate {replicate + 1}" if replicate else ""
    log(f"training {cand.arch} with {defense} for {cap} (cached once)")
    result, trained = refine_network(factory, ws.trained_with(trained_with),
                                     Budget(epochs, settings.seed, patience), draws=draws,
                                     split="test", progress=progress, log=log,
                                     first_draw=replicate * draws)
    if trained is None:
        raise UserError(f"{cand.arch} trained with {defense} diverged ({result.reason})")
    state = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
    save_entry(path, content, state, result.to_dict())
    model.load_state_dict(state)  # as a later report loads it
    return model.eval()


def baseline_settings(settings: FitnessSettings, cand: Candidate) -> FitnessSettings:
    """The run's settings with ``cand``'s defense; the run's defense arguments only when it is
    the run's own defense (another defense trains with its defaults)."""
    args = settings.defense_args if cand.defense == settings.defense else ()
    return dataclasses.replace(settings, defense=cand.defense, defense_args=args)


def baseline_entry(ws: Workspace, settings: FitnessSettings, cand: Candidate, epochs: int,
                   patience: int = 0, draws: int = 1,
                   replicate: int = 0) -> tuple[Path, dict[str, Any]]:
    """Cache file of a baseline and its key: everything that determines its training (the
    reference, the training images and labels, architecture (or genome), defense and its
    arguments, epochs, patience, draws and replicate, seed, batch size and the recipe)."""
    defense = cand.defense
    args = baseline_settings(settings, cand).defense_args
    content = {"reference": ws.reference_key, "arch": cand.arch, "defense": defense,
               "args": [list(a) for a in args], "epochs": epochs, "seed": settings.seed,
               "batch": settings.batch_size, "lr": settings.lr,
               "recipe": settings.training_recipe().to_dict(),
               "train": tensor_digest(ws.splits.x_train, ws.splits.y_train)}
    if patience:
        content["patience"] = patience
    if draws > 1:
        content["draws"] = draws
    if replicate:
        content["replicate"] = replicate
    if cand.genome is not None:
        content["genome"] = digest({"genome": cand.genome})
    stem = "genome" if cand.genome is not None else cand.arch
    path = cache_root(settings.cache_dir) / "report" / f"{stem}-{defense}-{digest(content)}.pt"
    return path, content


def estimate_seconds(ws: Workspace, settings: FitnessSettings, cand: Candidate, epochs: int,
                     device: torch.device) -> float:
    """Training time of a baseline on this machine, from what the run measured where it can.

    CE seconds per epoch: for the reference's architecture, the reference's own training time
    recorded in its cache entry (seconds / epochs it ran; no new measurement); otherwise one timed
    CE step of a full batch x ceil(train images / batch). Times ``epochs`` (the cap), and times
    :data:`DEFENSE_COST` for a defense other than ``none``. Evaluation is not counted.
    """
    meta = ws.reference_meta
    trained_epochs = meta.get("epochs_run") or (meta.get("training") or {}).get("epochs")
    if cand.genome is None and cand.arch == settings.reference and meta.get("seconds") \
            and trained_epochs:
        per_epoch = float(meta["seconds"]) / int(trained_epochs)
    else:
        info = ws.splits.info
        model = cand.factory(ws)().to(device).train()
        x = torch.rand(settings.batch_size, *info.input_shape, device=device)  # (B, C, H, W)
        y = torch.zeros(settings.batch_size, dtype=torch.long, device=device)
        step = 0.0
        for _ in range(2):  # the first step pays one-off allocations; the second is timed
            start = time.perf_counter()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            step = time.perf_counter() - start
        per_epoch = step * math.ceil(len(ws.splits.y_train) / settings.batch_size)
    return per_epoch * epochs * (1.0 if cand.defense == "none" else DEFENSE_COST)


def candidates(view: RunView, settings: FitnessSettings, opts: ReportOptions) -> list[Candidate]:
    """What the report trains: the reference's architecture with CE and with the run's defense,
    ``opts.baselines`` with the defense and, with ``opts.ce_copies``, each finalist's
    architecture with CE (``evolved #k+CE``)."""
    wanted = [Candidate(REF_CE, settings.reference, "none"),
              Candidate(REF_GM, settings.reference, settings.defense)]
    wanted += [Candidate(f"{arch}+{settings.defense}", arch, settings.defense)
               for arch in opts.baselines]
    if opts.ce_copies:
        chosen = view.finalists[: opts.max_finalists or None]
        for rank, f in enumerate(chosen, start=1):
            genome_path, weights = child_files(view, f["id"])
            if weights is not None:
                wanted.append(Candidate(f"evolved #{rank}+CE", str(f["id"]), "none",
                                        Path(genome_path).read_text()))
    return wanted


def baselines(ws: Workspace, settings: FitnessSettings, opts: ReportOptions, epochs: int,
              device: torch.device, log: Callable[[str], None],
              notes: list[str], *, wanted: list[Candidate], patience: int = 0,
              draws: int = 1) -> dict[str, nn.Module]:
    """The ``wanted`` networks: cached ones always; missing ones trained when they fit the
    time budget.

    With ``opts.full`` every missing one is trained; otherwise one is trained only when its
    estimate (:func:`estimate_seconds`) fits what is left of ``opts.budget`` seconds, and a
    skipped one is named in ``notes`` with its estimate and the flag that trains it.
    """
    left, out = opts.budget, {}
    for cand in wanted:
        path = baseline_entry(ws, settings, cand, epochs, patience, draws)[0]
        if not opts.full and not path.exists():
            est = estimate_seconds(ws, settings, cand, epochs, device) * draws
            if est > left:
                notes.append(f"{cand.name} ({cand.arch} trained with {cand.defense} for "
                              f"{epochs} epochs) left out: training it would take about "
                              f"{est / 60:.0f} min here, more than the {left:.0f} s left of the "
                              "report's budget (--budget); --full trains it once and caches it.")
                continue
        start = time.perf_counter()
        out[cand.name] = baseline(ws, settings, cand, cand.defense, epochs, log, opts.progress,
                                  patience=patience, draws=draws)
        left -= time.perf_counter() - start
    return out


def eval_subset(ws: Workspace, size: int, seed: int) -> torch.Tensor:
    """Indices of ``size`` test images (a seeded random subset; all when ``size`` is 0)."""
    n = len(ws.splits.y_test)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: size or n].sort().values


def sources(names: tuple[str, ...], ws: Workspace, settings: FitnessSettings, opts: ReportOptions,
            log: Callable[[str], None]) -> dict[str, nn.Module]:
    """The networks the transfer matrix crafts examples on (``own`` = the run's reference)."""
    out: dict[str, nn.Module] = {}
    epochs = opts.source_epochs or settings.reference_epochs
    for name in names:
        if name in ("own", settings.reference):
            out[f"{settings.reference} (own reference)"] = ws.reference
            continue
        config = dataclasses.replace(settings.reference_config(progress=opts.progress),
                                     epochs=epochs, device=opts.device)
        model, _, _ = get_reference(name, ws.splits, cache_root(settings.cache_dir),
                                    config=config, seed=settings.seed, log=log)
        out[name] = model.eval()
    return out


def ig_images(ws: Workspace, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of each class, then the following ones: ``(n, C, H, W)``, ``(n,)``."""
    y = ws.splits.y_test
    first = [int((y == c).nonzero()[0])
             for c in range(ws.splits.info.num_classes) if (y == c).any()]
    rest = [i for i in range(len(y)) if i not in set(first)]
    pick = torch.tensor((first + rest)[:n], dtype=torch.long)
    return ws.splits.x_test[pick].float() / 255.0, y[pick]  # (n, C, H, W), (n,)


def compute(view: RunView, opts: ReportOptions, *, log: Callable[[str], None] = print,
            stages: Stages | None = None) -> ReportData:
    """Every model-based number and figure of the report (see the module docstring)."""
    stages = stages or Stages(log)
    settings = run_settings(view, opts)
    device = resolve_device(opts.device)
    data, out = ReportData(), Path(opts.out)
    with stages("workspace (data, reference, transferred sets; cached by the run)"):
        ws = prepare(settings, progress=opts.progress, log=log)
    search = view.config.get("search", {})
    epochs = opts.baseline_epochs or int(search.get("refine_epochs") or search.get("epochs") or 1)
    # the finalists' budget: the refinement's cap and patience (unless --baseline-epochs)
    patience = 0 if opts.baseline_epochs else int(search.get("refine_patience") or 0)
    draws = 1 if opts.baseline_epochs else int(search.get("refine_draws") or 1)
    nets: dict[str, nn.Module] = {REF: ws.reference}
    skipped: list[str] = []
    with stages("baselines"):
        nets.update(baselines(ws, settings, opts, epochs, device, log, skipped,
                              wanted=candidates(view, settings, opts), patience=patience,
                              draws=draws))
    with stages("finalists"):
        nets.update(finalist_models(view, ws, opts))
        nets.update(compared_models(view, ws, opts))
    nets = {n: m.to(device).eval() for n, m in nets.items()}
    x, y = ws.splits.x_test, ws.splits.y_test
    with stages("accuracies"):
        for n, m in nets.items():
            row = {"clean": accuracy(m, x, y, device=device),
                   "adv": accuracy(m, ws.adversarial["test"], y, device=device)}
            row["fitness"] = min(row["clean"], row["adv"])
            for source, x_adv in ws.held_out_adv.items():  # the run's cached sets
                row[f"held-out {source}"] = accuracy(m, x_adv, y, device=device)
            held = [v for k, v in row.items() if k.startswith("held-out ")]
            if len(held) > 1:  # the strongest held-out attack (nas.evaluation.heldout)
                row["held-out worst case"] = min(held)
            data.accuracy[n] = row
    budget = (f"at most {epochs} epochs, stopping after {patience} without a better validation "
              "score (the refinement's budget)" if patience else f"{epochs} epochs")
    budget += f", the best of {draws} training draws on validation" if draws > 1 else ""
    data.notes["transfer"] = [
        f"Test split: {len(y)} images of {settings.dataset}; reference {settings.reference} (CE, "
        f"{settings.reference_epochs} epochs; its own column is white-box). Baselines ({REF_CE}: "
        f"an independent CE copy of the reference's architecture; {REF_GM}: trained with "
        f"{settings.defense}) trained for {budget}; attack {ws.attack.name} "
        f"eps={ws.attack.eps:g}, step {ws.attack.step_size:g}, {ws.attack.steps} steps.", *skipped]
    if not opts.skip_transfer:
        _transfer_and_fooling(data, nets, ws, settings, opts, device, log, stages)
    if opts.ig_images > 0:
        with stages("integrated gradients"):
            _ig(data, nets, ws, opts, device, out)
    return data


def report_attacks(settings: FitnessSettings, opts: ReportOptions) -> tuple[str, ...]:
    """Attacks of the fooling-rate table: as asked; else the run's own (its examples are cached)
    and FGSM (one step), or all of :data:`nas.report.ATTACKS` with ``--full``."""
    if opts.attacks:
        return opts.attacks
    return ATTACKS if opts.full else tuple(dict.fromkeys((settings.attack, "fgsm")))


def _transfer_and_fooling(data: ReportData, nets: dict[str, nn.Module], ws: Workspace,
                          settings: FitnessSettings, opts: ReportOptions, device: torch.device,
                          log: Callable[[str], None], stages: Stages) -> None:
    out = Path(opts.out)
    idx = eval_subset(ws, opts.eval_size, opts.seed)
    x, y = ws.splits.x_test[idx], ws.splits.y_test[idx]
    # the run's cached transferred test set: the reference's examples under the run's attack
    cached = ws.adversarial["test"][idx]  # (n, C, H, W)
    with stages("transfer sources"):
        src = {n: m.to(device) for n, m in sources(opts.transfer_from, ws, settings, opts,
                                                   log).items()}
    own = [n for n, m in src.items() if m is ws.reference]
    with stages("transfer matrix"):
        if len(idx) == len(ws.splits.y_test):  # own row = the accuracies on the cached set, known
            data.transfer = {n: {t: data.accuracy[t]["adv"] for t in nets} for n in own}
            src = {n: m for n, m in src.items() if n not in own}
        data.transfer.update(transfer_matrix(src, nets, x, y, ws.attack, device=device,
                                             seed=opts.seed,
                                             progress=opts.progress,
                                             crafted={n: cached for n in own}))
    p = plots.plot_matrix(data.transfer, out / "transfer.png",
                          title=f"Transfer matrix ({ws.attack.name})",
                          row_label="examples crafted on", col_label="evaluated network",
                          value_label="adversarial accuracy")
    data.figures["transfer"] = [(str(p), "Adversarial accuracy of each network (columns) on "
                                         "examples crafted on each source network (rows); higher "
                                         "= less transfer.")]
    data.notes["transfer"].append(f"Transfer matrix and fooling rates on {len(y)} test images "
                                  "(--eval-size); sources trained with CE for "
                                  f"{opts.source_epochs or settings.reference_epochs} epochs; the "
                                  "reference's examples under the run's attack are the run's "
                                  "cached transferred set.")
    names = report_attacks(settings, opts)
    attacks = [ws.attack if a == ws.attack.name else resolve_attack(a, settings.dataset)
               for a in names]
    data.attack_settings = {a.name: dataclasses.asdict(a) for a in attacks}
    with stages(f"fooling rates ({', '.join(names)})"):
        rates = fooling_rates(ws.reference, nets, x, y, attacks, device=device, seed=opts.seed,
                              progress=opts.progress, crafted={ws.attack.name: cached})
    data.fooling = {a: {n: dataclasses.asdict(r) for n, r in row.items()}
                    for a, row in rates.items()}
    p = plots.plot_matrix({a: {n: r.rate for n, r in row.items()} for a, row in rates.items()},
                          out / "fooling.png", title="Fooling rates (examples crafted on the "
                                                     "reference)",
                          row_label="attack", col_label="evaluated network",
                          value_label="fooling rate",
                          cmap="magma_r")
    data.figures["fooling"] = [(str(p), "Fraction of correctly classified images whose "
                                        "reference-crafted adversarial version fools the network; "
                                        "lower is better.")]


def _ig(data: ReportData, nets: dict[str, nn.Module], ws: Workspace, opts: ReportOptions,
        device: torch.device, out: Path) -> None:
    best = next(n for n in nets if n.startswith("evolved"))
    models = {n: nets[n] for n in (REF, REF_GM, best) if n in nets}
    x, y = ig_images(ws, opts.ig_images)
    res = compare_maps(models, x.to(device), y.to(device), reference=REF, n_steps=opts.ig_steps)
    res = {n: {k: v.cpu() for k, v in r.items()} for n, r in res.items()}
    data.ig = {n: {"distance": r["distance"].tolist(), "delta": r["delta"].tolist()}
               for n, r in res.items()}
    p = plots.plot_ig_grid(x, {n: r["maps"] for n, r in res.items()},
                           {n: r["distance"] for n, r in res.items()},
                           {n: r["delta"] for n, r in res.items()},
                           out / "integrated_gradients.png")
    data.figures["ig"] = [(str(p), "Integrated gradients of the true class (black baseline, "
                                   f"{opts.ig_steps} steps), scaled to [-1, 1]: red negative, "
                                   "green positive.")]


EXTRA_COLUMNS = ("architecture", "dataset", "defense", "reference", "clean_acc", "adv_acc",
                 "fitness", "fooling_rate", "epochs", "params", "status")


def _extra_row(item: dict[str, Any], source: str) -> dict[str, Any]:
    """One table row from a ``nas.train`` metrics.json (settings nested or flat)."""
    flat = {**(item.get("settings") or {}), **(item.get("metrics") or {}), **item}
    return {"file": source,
            **{k: flat.get(k) for k in EXTRA_COLUMNS if not isinstance(flat.get(k), dict | list)}}


def load_extra(paths: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of retraining results (paper Tables 3 and 7) from ``nas.train --out`` files.

    Each file is a ``metrics.json`` written by ``nas.train``, a list of such objects, or
    ``{"results": [...]}``; the columns are :data:`EXTRA_COLUMNS`.
    """
    rows = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"file {path} does not exist", setting="extra_metrics") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"file {path} is not JSON ({exc.msg})",
                            setting="extra_metrics") from None
        items = doc.get("results", [doc]) if isinstance(doc, dict) else doc
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UserError(f"file {path}: expected a JSON object or a list of objects",
                            setting="extra_metrics")
        rows += [_extra_row(item, Path(path).parent.name or Path(path).name) for item in items]
    return rows


__all__ = ["PAPER_SOURCES", "compute", "load_extra"]
