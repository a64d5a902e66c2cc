"""Evaluate children in parallel with joblib: local processes (loky) or a Dask cluster.

DESIGN.md §9. Only strings and small dicts cross process boundaries: a :class:`Task` goes in,
the child's metrics dict comes out; the worker writes the child's files itself.

- ``workers == 1`` (and no Dask): evaluated in the driver process, one after the other.
- ``backend="loky"``: one process per child slot (memory cannot leak between runs of the
  driver), each worker limits torch to ``cores // workers`` threads before training.
- ``backend="dask"``: joblib's Dask backend on a ``distributed.Client`` connected to
  ``scheduler`` (``tcp://host:8786``) or, when ``scheduler`` is ``None``, a caller-made client.

Results come back *as they finish* (``return_as="generator_unordered"``) so the driver can
log each finished child at once; a crash then loses only the children still in flight.

A loky worker dies with its driver: each one watches its parent process (a daemon thread,
:func:`die_with_parent`) and exits at once when the driver is gone, so a killed search leaves
no worker training on, and none writes a child's files after the kill.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.devices import SLOT, DeviceSlots, pinned
from nas.errors import UserError
from nas.search.ga import redraw_seed, reuse_key, train_seed, train_seed_of
from nas.search.rundir import EventLog, RunCorrupt, child_dir, write_json

#: ``evaluate(genome_json, *, epochs, seed, out_dir, split) -> dict`` (JSON-able metrics).
EvaluateFn = Callable[..., dict[str, Any]]
BACKENDS = ("loky", "dask")
#: Seconds a worker waits between two looks at its parent (how long it can outlive a killed driver).
PARENT_POLL = 0.05
#: Seconds to wait for a Dask scheduler to answer.
CONNECT_TIMEOUT = 30.0
_watched_parent: int | None = None


@dataclass(frozen=True)
class Task:
    """One child to train and score.

    Attributes:
        child_id: the child's id (``g003-c07``), also its directory name.
        genome: the genome as JSON text.
        epochs: training epochs.
        seed: the child's own training seed (derived from run seed + child id).
        out_dir: directory the worker writes the child's files into (or ``None``).
        split: evaluation split (``None``: the configured fitness split; ``"test"``: final).
        extra: further keyword arguments of ``evaluate``, only those a feature set (sorted
            pairs): ``patience`` (refinement), ``reject_below`` (early rejection),
            ``inherit_genome`` / ``inherit_weights`` (inheritance), ``fallback_weights``
            (refinement: the search's weights of the finalist). Empty by default, so an
            evaluation function that knows none of them keeps working.
    """

    child_id: str
    genome: str
    epochs: int
    seed: int
    out_dir: str | None = None
    split: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Torch intra-op threads per worker: ``cores // workers`` (at least 1)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def die_with_parent(parent: int) -> None:
    """In a worker process: exit at once (``os._exit``) as soon as ``parent`` is no longer our
    parent process, i.e. the driver died. Started once per worker process (a daemon thread)."""
    global _watched_parent
    if _watched_parent == parent:
        return
    if os.getppid() != parent:
        os._exit(70)  # the driver is already gone: do not start the child

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(70)

    threading.Thread(target=watch, name="die-with-driver", daemon=True).start()
    _watched_parent = parent


def run_task(evaluate: EvaluateFn, task: Task, threads: int | None = None,
             parent: int | None = None,
             slots: DeviceSlots | None = None) -> tuple[str, dict[str, Any]]:
    """Worker entry point: set torch's thread count, evaluate, write the child's genome.json and
    metrics.json (weights are written by ``evaluate`` into ``out_dir``), return
    ``(child_id, metrics)``.

    ``parent``: the driver's pid when this runs in a loky worker (the worker then dies with it).
    ``slots``: the search's device slots (``--devices``); the worker process evaluates pinned
    to the device of the slot it holds (:mod:`nas.devices`); the pin ends with the task.
    """
    if parent is not None:
        die_with_parent(parent)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    with pinned(slots.device_of_this_worker()) if slots is not None else nullcontext():
        result = evaluate(
            task.genome, epochs=task.epochs, seed=task.seed, out_dir=task.out_dir,
            split=task.split, **dict(task.extra),
        )
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    if task.out_dir is not None:
        out = Path(task.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "genome.json", json.loads(task.genome))
        if not (out / "metrics.json").exists():  # evaluate may have written a richer one
            write_json(out / "metrics.json", result)
    return task.child_id, result


def evaluate_tasks(
    evaluate: EvaluateFn,
    tasks: Sequence[Task],
    *,
    workers: int = 1,
    backend: str = "loky",
    scheduler: str | None = None,
    devices: Sequence[str] = (),
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Evaluate ``tasks``, yielding ``(child_id, metrics)`` in order of completion.

    Args:
        evaluate: picklable evaluation function (module-level function or ``functools.partial``).
        tasks: the children to evaluate.
        workers: parallel evaluations (ignored by Dask, which uses the cluster's workers).
        backend: ``"loky"`` or ``"dask"``.
        scheduler: Dask scheduler address (``tcp://host:8786``); only with ``backend="dask"``.
        devices: the device of every worker slot (:func:`nas.devices.slot_devices`; then
            ``workers`` is their number): each loky worker is pinned to one slot's device for
            its life. Dask workers are pinned by their cluster (:mod:`nas.search.gpu_cluster`).
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if not tasks:
        return
    if devices and backend == "loky":
        workers = len(devices)
    if backend == "loky" and workers <= 1:
        for task in tasks:
            with pinned(devices[0]) if devices else nullcontext():
                result = run_task(evaluate, task)
            yield result
        return
    slots = DeviceSlots.for_driver(devices) if devices and backend == "loky" else None
    import joblib

    threads = worker_threads(workers) if backend == "loky" else None
    with ExitStack() as stack:
        # loky restarts a worker whose memory grew (torch's allocator after training a child)
        # and warns; the child's result is already back and the restart is what we want, so
        # say nothing, for the duration of this map only (the caller's filters are restored).
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                category=UserWarning)
        if backend == "dask":
            stack.enter_context(_dask_backend(scheduler, one_per_slot=bool(devices)))
            n_jobs = -1
        else:
            n_jobs = workers  # a constant size: resizing loky's reusable executor kills workers
        parallel = joblib.Parallel(
            n_jobs=n_jobs,
            backend=None if backend == "dask" else "loky",
            return_as="generator_unordered",
            pre_dispatch="n_jobs",
        )
        parent = os.getpid() if backend == "loky" else None
        yield from parallel(joblib.delayed(run_task)(evaluate, t, threads, parent, slots)
                            for t in tasks)


def _dask_backend(scheduler: str | None, *, one_per_slot: bool = False):
    """Context: joblib's ``dask`` backend on a client connected to ``scheduler``; with
    ``one_per_slot`` every child asks for one :data:`nas.devices.SLOT` resource (a local device
    cluster's worker holds one)."""
    import joblib

    stack = ExitStack()
    if scheduler is not None:
        stack.callback(_connect(scheduler).close)
    resources = {"resources": {SLOT: 1}} if one_per_slot else {}
    stack.enter_context(joblib.parallel_config(backend="dask", **resources))
    return stack


def _connect(scheduler: str) -> Any:
    """A ``distributed.Client`` connected to ``scheduler``; :class:`UserError` when it cannot be."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover
        raise UserError(f"dask needs dask[distributed]: {exc}", setting="backend") from None
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot connect to Dask scheduler {scheduler}: {first}") from None


def check_scheduler(scheduler: str | None) -> None:
    """Connect to the Dask scheduler once and disconnect (before a run folder is created).

    Raises:
        UserError: no address, or no scheduler answers there.
    """
    if not scheduler:
        raise UserError("the dask backend needs the Dask scheduler's address, e.g. "
                        "tcp://host:8786", setting="scheduler")
    _connect(scheduler).close()


def child_event(ind: Any, task: Task, metrics: dict[str, Any],
                reused_from: str | None) -> dict[str, Any]:
    """The ``child_finished`` log line of an evaluated (or reused) child; with early rejection
    it also holds the child's ``threshold`` and ``reject_below``, with inheritance the
    ``inherited_from`` weights file (keys absent when the option is off)."""
    event = {
        "type": "child_finished", "id": ind.child_id, "parent": ind.parent,
        "generation": ind.generation, "hash": ind.hash, "spectrum": list(ind.spectrum),
        "epochs": task.epochs, "seed": task.seed, "reused": reused_from is not None,
        "reused_from": reused_from,
        "reused_what": "metrics and weights" if reused_from else None,
        "metrics": metrics,
    }
    extra = dict(task.extra)
    if "reject_below" in extra:
        event["threshold"], event["reject_below"] = ind.threshold, extra["reject_below"]
    if "inherit_weights" in extra:
        event["inherited_from"] = Path(extra["inherit_weights"]).parent.name  # a child id
    return event


def inheritance_args(run_dir: str | os.PathLike[str], parent: str,
                     weights_of: str) -> dict[str, str]:
    """``inherit_genome`` / ``inherit_weights`` task arguments of a child of ``parent``: the
    parent's genome and the trained weights in ``weights_of``'s directory (the parent itself,
    or the child whose result it reused); empty when it has no weights (it failed or diverged).
    The search (:meth:`ChildEvaluator.parent_weights`) and ``nas.cost --check-rejected`` build
    an inherited child's task with it."""
    children = Path(run_dir) / "children"
    weights, genome = children / weights_of / "weights.pt", children / parent / "genome.json"
    if not (weights.is_file() and genome.is_file()):
        return {}
    return {"inherit_genome": genome.read_text(encoding="utf-8"),
            "inherit_weights": str(weights)}


class ChildEvaluator:
    """The search's ``toolbox.map``: evaluates children once, logs each as it finishes.

    For every child, in order: a ``child_finished`` line already in the log answers it (a
    resume never retrains a finished child); a child whose canonical hash was evaluated
    before *with the same epochs* reuses that result (``reused: true``, ``reused_from``: its
    id, ``reused_what: "metrics and weights"``; :func:`nas.search.ga.reuse_key`); the rest are
    dispatched through :func:`evaluate_tasks`. Duplicates inside one batch wait for their
    first occurrence.
    """

    def __init__(self, log: EventLog, run_dir: str | os.PathLike[str], search: Any,
                 *, workers: int = 1, backend: str = "loky", scheduler: str | None = None,
                 progress: Any = None, devices: Sequence[str] = ()) -> None:
        self.log, self.run_dir, self.search = log, Path(run_dir), search
        self.workers, self.backend, self.scheduler = workers, backend, scheduler
        self.devices = tuple(devices)  # the device of every slot (nas.devices.slot_devices)
        self.progress = progress
        # reuse_key(hash, epochs) -> (source id, metrics)
        self.seen: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}

    def task(self, ind: Any, *, split: str | None = None, epochs: int | None = None,
             generation: int | None = None, sub: str = "") -> Task:
        """The :class:`Task` of an individual (its epochs, seed and directory)."""
        gen = ind.generation if generation is None else generation
        out = (child_dir(self.run_dir, ind.child_id) / sub if sub
               else child_dir(self.run_dir, ind.child_id))
        out.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        if (split is None and self.search.early_reject
                and getattr(ind, "threshold", None) is not None):
            extra["reject_below"] = float(ind.threshold) - self.search.reject_margin
        if split is None and self.search.inherit and ind.parent is not None:
            extra.update(self.parent_weights(ind.parent))
        return Task(ind.child_id, ind.genome, epochs or self.search.epochs_at(gen),
                    train_seed_of(self.search, gen, ind.index), str(out), split,
                    tuple(sorted(extra.items())))

    def parent_weights(self, parent: str) -> dict[str, str]:
        """:func:`inheritance_args` of a child of ``parent``: its genome and trained weights
        (those of the child it reused its result from, if it did)."""
        weights = self.trained_weights(parent)
        return {} if weights is None else inheritance_args(self.run_dir, parent,
                                                           weights.parent.name)

    def reusable(self, ind: Any, key: tuple[str, int]) -> bool:
        """Whether ``ind`` may take the result seen for ``key``: always, unless that child was
        stopped by early rejection against a stricter bar than ``ind``'s (then ``ind`` is
        trained itself)."""
        metrics = self.seen[key][1]
        if metrics.get("status") != "rejected":
            return True
        bar = getattr(ind, "threshold", None)
        return bar is not None and bar - self.search.reject_margin >= float(metrics["reject_below"])

    def map(self, evaluate: EvaluateFn, individuals: Sequence[Any]) -> list[dict[str, Any]]:
        """Metrics of every individual, in order (see the class docstring)."""
        results: dict[str, dict[str, Any]] = {}
        todo: list[tuple[Any, Task]] = []
        waiting: dict[tuple[str, int], list[Any]] = {}  # key of a dispatched child -> duplicates
        for ind in individuals:
            logged = self.log.get(("child_finished", ind.child_id))
            key = reuse_key(ind.hash, self.search.epochs_at(ind.generation))
            if logged is not None:
                if logged["hash"] != ind.hash:
                    raise RunCorrupt(f"replayed child {ind.child_id} is not the logged "
                                     "architecture (the genome or search code changed since the "
                                     "run started?)")
                results[ind.child_id] = logged["metrics"]
                self.seen.setdefault(reuse_key(ind.hash, logged["epochs"]),
                                     (ind.child_id, logged["metrics"]))
                self._tick(logged["metrics"], replayed=True)
            elif key in self.seen and self.reusable(ind, key):
                self._reuse(ind, key, results)
            elif key in waiting:
                waiting[key].append(ind)
            else:
                waiting[key] = []
                todo.append((ind, self.task(ind)))
        while todo:  # a second round trains duplicates of a rejected child it may not reuse
            todo = self._dispatch(evaluate, todo, waiting, results)
        return [results[ind.child_id] for ind in individuals]

    def _dispatch(self, evaluate: EvaluateFn, todo: list[tuple[Any, Task]],
                  waiting: dict[tuple[str, int], list[Any]],
                  results: dict[str, dict[str, Any]]) -> list[tuple[Any, Task]]:
        """Evaluate ``todo``, log each child as it finishes, answer its waiting duplicates;
        returns the duplicates that must be trained themselves (:meth:`reusable`)."""
        by_id = {ind.child_id: (ind, task) for ind, task in todo}
        tasks = [task for _, task in todo]
        again: list[tuple[Any, Task]] = []
        self._running(len(tasks))
        for left, (cid, metrics) in enumerate(
            evaluate_tasks(evaluate, tasks, workers=self.workers, backend=self.backend,
                           scheduler=self.scheduler, devices=self.devices), start=1):
            self._running(len(tasks) - left)
            ind, task = by_id[cid]
            self.log.emit(child_event(ind, task, metrics, None))
            results[cid] = metrics
            key = reuse_key(ind.hash, task.epochs)
            self.seen[key] = (cid, metrics)
            self._tick(metrics)
            pending = []
            for dup in waiting.get(key, []):
                if self.reusable(dup, key):
                    self._reuse(dup, key, results)
                else:
                    pending.append(dup)
            waiting[key] = pending[1:]  # they wait for the first of them
            if pending:
                again.append((pending[0], self.task(pending[0])))
        return sorted(again, key=lambda pair: pair[0].child_id)

    def _reuse(self, ind: Any, key: tuple[str, int], results: dict[str, dict[str, Any]]) -> None:
        source, metrics = self.seen[key]
        task = self.task(ind)
        write_json(Path(task.out_dir) / "genome.json", json.loads(ind.genome))
        write_json(Path(task.out_dir) / "metrics.json", {**metrics, "reused_from": source})
        self.log.emit(child_event(ind, task, metrics, source))
        results[ind.child_id] = metrics
        self._tick(metrics, reused=True)

    def trained_weights(self, child_id: str) -> Path | None:
        """The weights file the search trained for ``child_id`` (that of the child whose
        result it reused, if it did); ``None`` when there is none."""
        logged = self.log.get(("child_finished", child_id)) or {}
        path = self.run_dir / "children" / (logged.get("reused_from") or child_id) / "weights.pt"
        return path if path.is_file() else None

    def reevaluate(self, evaluate: EvaluateFn,
                   members: Sequence[Any]) -> list[dict[str, Any]]:
        """One more training of each member (noise-aware selection,
        :func:`nas.search.ga.reevaluate_close_calls`): draw ``k = len(member.draws)`` from
        :func:`nas.search.ga.redraw_seed`, at the epochs of the member's generation, from
        scratch (no inheritance, no racing), into ``children/<id>/draw<k>`` (the member's own
        weights stay). Each finished draw is logged as a ``reevaluated`` event, so a resume
        replays the draws already made and trains only the rest."""
        tasks, results = [], {}
        for m in members:
            draw = len(m.draws)
            logged = self.log.get(("reevaluated", m.child_id, draw))
            if logged is not None:
                results[m.child_id] = logged["metrics"]
                continue
            out = child_dir(self.run_dir, m.child_id) / f"draw{draw}"
            out.mkdir(parents=True, exist_ok=True)
            tasks.append((m, draw, Task(m.child_id, m.genome, self.search.epochs_at(m.generation),
                                        redraw_seed(self.search.seed, m.generation, m.index, draw),
                                        str(out))))
        self._running(len(tasks))
        by_id = {task.child_id: (m, draw, task) for m, draw, task in tasks}
        for left, (cid, metrics) in enumerate(
            evaluate_tasks(evaluate, [t for _, _, t in tasks], workers=self.workers,
                           backend=self.backend, scheduler=self.scheduler,
                           devices=self.devices), start=1):
            self._running(len(tasks) - left)
            m, draw, task = by_id[cid]
            self.log.emit({"type": "reevaluated", "id": cid, "draw": draw,
                           "generation": m.generation, "epochs": task.epochs, "seed": task.seed,
                           "metrics": metrics})
            results[cid] = metrics
        return [results[m.child_id] for m in members]

    def refine(self, evaluate: EvaluateFn, individuals: Sequence[Any]) -> list[dict[str, Any]]:
        """Train the finalists again for ``refine_epochs`` and score them on the test split;
        a finalist keeps the search's weights when they score higher on validation than the
        refined ones (``kept_search_weights``, :func:`nas.evaluation.fitness.evaluate_module`)."""
        gen = self.search.generations + 1
        tasks, results = [], {}
        for slot, ind in enumerate(individuals):
            logged = self.log.get(("refined", ind.child_id))
            if logged is not None:
                results[ind.child_id] = logged["metrics"]
                self._tick(logged["metrics"], replayed=True)
                continue
            task = self.task(ind, split="test", epochs=max(1, self.search.refine_epochs),
                             generation=gen, sub="refined")
            extra = ((("patience", self.search.refine_patience),)
                     if self.search.refine_patience else ())
            if self.search.refine_draws > 1:
                extra = (*extra, ("draws", self.search.refine_draws))
            searched = self.trained_weights(ind.child_id)
            if searched is not None:  # kept instead when better on validation
                extra = (*extra, ("fallback_weights", str(searched)))
            extra = tuple(sorted(extra))
            tasks.append(dataclasses.replace(task, seed=train_seed(self.search.seed, gen, slot),
                                             extra=extra))
        self._running(len(tasks))
        for left, (cid, metrics) in enumerate(
            evaluate_tasks(evaluate, tasks, workers=self.workers, backend=self.backend,
                           scheduler=self.scheduler, devices=self.devices), start=1):
            self._running(len(tasks) - left)
            task = next(t for t in tasks if t.child_id == cid)
            self.log.emit({"type": "refined", "id": cid, "epochs": task.epochs, "seed": task.seed,
                           "split": "test", "metrics": metrics})
            results[cid] = metrics
            self._tick(metrics)
        return [results[ind.child_id] for ind in individuals]

    def _tick(self, metrics: dict[str, Any], *, reused: bool = False,
              replayed: bool = False) -> None:
        if self.progress is not None:
            self.progress.child_done(metrics, reused=reused, replayed=replayed)

    def _running(self, pending: int) -> None:
        if self.progress is not None:
            self.progress.set_running(min(pending, max(1, self.workers)))
