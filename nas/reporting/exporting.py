"""Export evolved networks of a run as standalone PyTorch modules (the library behind
``python -m nas.export`` and :meth:`nas.api.Run.export`).

For every selected child (default: the final population; ``all_``: every trained child;
``ids``: the ones named; ``front``: the trade-off front) the output folder receives
``net_<id>.py`` (readable layer-by-layer source, imports torch only), ``net_<id>.pt`` (its
trained weights: the refined ones when the child was refined), ``net_<id>.genome.json`` and,
with ``onnx``, ``net_<id>.onnx``, plus a README.md with how to load them and their metrics.
Everything is checked before the first file is written (unknown ids, missing weights, weights
that do not fit the architecture), and every file is written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.search.rundir import (
    CHILDREN,
    EVENTS,
    FINAL,
    RunCorrupt,
    load_config,
    read_events,
    read_json,
)
from nasbase.files import write_text_atomically
from nasbase.values import check_out_dir

_LOG = logging.getLogger("nas.export")


def module_name(child_id: str) -> str:
    """Importable module name of a child: ``g012-c003`` -> ``net_g012_c003``."""
    return "net_" + child_id.replace("-", "_")


def _children(run: Path) -> dict[str, dict[str, Any]]:
    """``child_finished`` and ``refined`` events by id (``{"child": ..., "refined": ...}``)."""
    if not (run / EVENTS).is_file():
        raise UserError(f"{run} has no {EVENTS}")
    events, _ = read_events(run / EVENTS)
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["type"] in ("child_finished", "refined"):
            out.setdefault(e["id"], {})["child" if e["type"] == "child_finished" else "refined"] = e
    return out


def select(run: Path, children: dict[str, dict[str, Any]], *, all_: bool,
           ids: Sequence[str] | None) -> list[str]:
    """Child ids to export (see the module docstring)."""
    if ids:
        unknown = [i for i in ids if i not in children]
        if unknown:
            raise UserError(f"unknown child ids {', '.join(unknown)} in {run}")
        return list(ids)
    if all_:
        return [i for i, c in children.items() if "child" in c and not c["child"]["reused"]]
    if not (run / FINAL).is_file():
        raise UserError(f"{run} has no {FINAL} (the search has not finished); use --all or --ids")
    final = read_json(run / FINAL)
    members = final.get("population") if isinstance(final, dict) else None
    if not isinstance(members, list) or not all(
            isinstance(m, dict) and isinstance(m.get("id"), str) for m in members):
        raise RunCorrupt(f"{run / FINAL} is not a final population (expected "
                         "{\"population\": [{\"id\": ...}, ...]})")
    ids = [m["id"] for m in members]
    missing = [i for i in ids if "child" not in children.get(i, {})]
    if missing:
        raise RunCorrupt(f"{run / FINAL} names children that {run / EVENTS} does not hold "
                         f"({', '.join(missing)}); the run directory is incomplete")
    return ids


def weights_file(run: Path, child_id: str,
                 children: dict[str, dict[str, Any]]) -> tuple[Path, dict]:
    """The weights of a child (refined ones first; a reused child's source) and its metrics."""
    entry = children[child_id]
    if "refined" in entry:
        path = run / CHILDREN / child_id / "refined" / "weights.pt"
        if path.is_file():
            return path, {**entry["refined"]["metrics"], "split": "test"}
    child = entry["child"]
    source = child.get("reused_from") or child_id
    path = run / CHILDREN / source / "weights.pt"
    if not path.is_file():
        raise UserError(f"no trained weights for child {child_id} ({path} is missing)")
    return path, {**child["metrics"], "split": "fitness"}


def _load_checked(run: Path, child_id: str, wpath: Path, info: Any) -> tuple[Any, dict]:
    """The genome and weights of a child, verified to load into the compiled network.

    Weights go through :func:`nas.evaluation.references.load_weights` (``weights_only``; an
    unreadable, truncated or non-tensor file is one :class:`UserError`).
    """
    import genome as gn
    from nas.evaluation.references import load_weights

    genome_path = run / CHILDREN / child_id / "genome.json"
    if not genome_path.is_file():
        raise UserError(f"{genome_path} is missing; the run directory is incomplete")
    g = gn.load(genome_path)
    model = gn.compile_genome(g, **info.network_args())
    load_weights(model, wpath)
    return g, model.state_dict()


def readme(rows: list[dict[str, Any]], run: Path, dataset: str) -> str:
    """README.md of an export directory: loading instructions and measured metrics."""
    lines = [f"# Networks exported from `{run}`", "",
             f"Evolved on `{dataset}`. Each `net_<id>.py` needs torch only:", "", "```python",
             "import torch", f"from {rows[0]['module']} import load_model", "",
             "model = load_model()            # loads the .pt file beside the module, eval mode",
             "logits = model(x)               # x: float pixels in [0, 1], (N, C, H, W)", "```",
             "", "`net_<id>.genome.json` is the genome (`python -m nas.genome describe FILE`).", "",
             "| module | spectrum | split | clean acc | transferred adv acc | fitness | params |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| `{r['module']}` | {tuple(r['spectrum'])} | {m['split']} | "
                     f"{m.get('clean_acc', float('nan')):.4f} | "
                     f"{m.get('adv_acc', float('nan')):.4f} | "
                     f"{m.get('fitness', float('nan')):.4f} | {m.get('params', '-')} |")
    lines += ["", "Split `test`: measured after refinement on the test split; `fitness`: the "
              "search's fitness split (not refined)."]
    if any(r.get("onnx") for r in rows):
        from nas.reporting.onnx import OPSET

        lines += ["", f"`net_<id>.onnx`: the same network in ONNX (opset {OPSET}), input `pixels` "
                  "(batch, C, H, W) in [0, 1] with a free batch size, output `logits`:", "",
                  "```python", "import onnxruntime as ort", "",
                  f"session = ort.InferenceSession('{rows[0]['onnx']}')",
                  "logits = session.run(None, {'pixels': x})[0]   # x: float32 numpy array", "```"]
    return "\n".join(lines) + "\n"


def export_run(run: str | Path, out: str | Path, *, all_: bool = False,
               ids: Sequence[str] | None = None, front: bool = False, front_size: str = "params",
               onnx: bool = False) -> list[Path]:
    """Export children of ``run`` into ``out``; returns the module paths written.

    ``front``: the children on the run's trade-off front (:func:`nas.reporting.front.run_front`).
    ``onnx``: also write ``net_<id>.onnx`` beside each module (:mod:`nas.reporting.onnx`).
    """
    import genome as gn
    from nas.evaluation.data import dataset_info

    run, out = Path(run), Path(out)
    check_out_dir(out)
    if onnx:
        _check_onnx()
    if front:
        ids = _front_ids(run, front_size)
    config = load_config(run)
    dataset = (config.get("fitness", {}).get("dataset")
               if isinstance(config.get("fitness"), dict) else None)
    if not isinstance(dataset, str):
        raise RunCorrupt(f"{run / 'config.json'} names no dataset (fitness.dataset)")
    from nas.plugins import load_plugins

    load_plugins(config["fitness"].get("plugins") or ())  # a plugin's dataset: its info
    info = dataset_info(dataset)
    children = _children(run)
    chosen = select(run, children, all_=all_, ids=ids)
    if not chosen:
        raise UserError(f"nothing to export in {run}")
    prepared = []
    for cid in chosen:  # check everything before writing anything
        wpath, metrics = weights_file(run, cid, children)
        g, state = _load_checked(run, cid, wpath, info)
        prepared.append((cid, g, state, metrics))
    out.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    for cid, g, state, metrics in prepared:
        name = module_name(cid)
        path, _ = gn.export_module(g, out / f"{name}.py", num_classes=info.num_classes,
                                   input_shape=info.input_shape, mean=info.mean, std=info.std,
                                   state_dict=state)
        gn.save(g, out / f"{name}.genome.json")
        rows.append({"module": name, "spectrum": gn.spectrum(g), "metrics": metrics})
        written.append(path)
        if onnx:
            written.append(_write_onnx(g, state, info, out / f"{name}.onnx"))
            rows[-1]["onnx"] = f"{name}.onnx"
    write_text_atomically(out / "README.md", readme(rows, run, info.name))
    return written


def _check_onnx() -> None:
    """:class:`UserError` (one line, exit 2) when the ``[onnx]`` extra is missing."""
    from nas.reporting.onnx import OnnxUnavailable, check_available

    try:
        check_available()
    except OnnxUnavailable as exc:
        raise UserError(str(exc)) from None


def _front_ids(run: Path, size: str) -> list[str]:
    """Ids of the children on the run's trade-off front."""
    from nas.reporting.front import run_front

    if not (run / EVENTS).is_file():
        raise UserError(f"{run} has no {EVENTS}")
    ids = run_front(run, size).ids
    if not ids:
        raise UserError(f"{run} has no evaluated child with metrics: the front is empty")
    return ids


def _write_onnx(g: Any, state: dict, info: Any, path: Path) -> Path:
    """``net_<id>.onnx``: the compiled genome with its weights (the .py module's logits)."""
    import genome as gn
    from nas.reporting.onnx import export_onnx

    model = gn.compile_genome(g, **info.network_args())
    model.load_state_dict(state)
    return export_onnx(model, path, input_shape=tuple(info.input_shape), log=_LOG)
