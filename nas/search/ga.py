"""The steady-state genetic algorithm with spectrum niching (paper §3.2, Algorithm 1), on DEAP.

All DEAP set-up lives here (STYLE.md §7): the creator classes are made once (guarded), one
function builds the toolbox (``mutate``, ``evaluate``, ``map``, plus ``emit`` for the event
log), and :func:`steady_state` is the loop. Genome operations (sample, mutate, spectrum,
canonical hash) and the evaluation are *injected* through :class:`GenomeOps` and the toolbox,
so the loop runs unchanged on real networks, on synthetic fitness functions (tests) and during
a resume (where ``map`` answers finished children from the log).

Randomness: every draw is made by ``np.random.default_rng([seed, generation, index])`` (index
= child index in the generation, or the sampling attempt of the initial population), so a
search is a pure function of its seed and the children's results; nothing is pickled to
resume it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import base, creator, tools

from genome import spectrum_distance
from nas.errors import UserError
from nas.search.config import SearchSettings


@dataclass(frozen=True)
class GenomeOps:
    """The genome operations the search needs, on genome JSON text.

    Attributes:
        sample: ``rng -> genome`` a random valid genome of the search space.
        mutate: ``(genome, rng, count) -> genome`` ``count`` mutation operators ("aggressive").
        spectrum: ``genome -> (n_conv, n_pool, n_sconv, n_sum, n_concat)`` (paper eq. 3).
        canonical_hash: ``genome -> str`` equal for isomorphic architectures.
    """

    sample: Callable[[np.random.Generator], str]
    mutate: Callable[[str, np.random.Generator, int], str]
    spectrum: Callable[[str], tuple[int, ...]]
    canonical_hash: Callable[[str], str]


class Child:
    """One architecture evaluated by the search (docs/architecture.md, glossary); the base
    class of the DEAP individual ``creator.NasChild``, to which DEAP adds ``fitness``.

    Attributes:
        genome: the genome as JSON text.
        child_id: ``g<generation>-c<index>``; also the child's directory name.
        parent: id of the member it was mutated from (``None`` for the initial population).
        generation: generation that produced it (0 = initial population).
        index: position among the children of its generation (seeds derive from it).
        spectrum: spectrum vector (paper eq. 3).
        hash: canonical hash of the architecture.
        metrics: the evaluation result (a ``ChildResult`` dict) once evaluated.
        threshold: with early rejection, the fitness of the member nearest to it when it was
            mutated (the fitness it must beat to replace); ``None`` otherwise.
        draws: the fitness of each of its trainings, its first evaluation first; with
            noise-aware selection (``reevaluate_margin``) a member is trained again from fresh
            seeds and its fitness is the mean of its draws.
    """

    def __init__(self, genome: str, child_id: str, parent: str | None, generation: int,
                 index: int, spectrum: tuple[int, ...], hash: str) -> None:
        self.genome, self.child_id, self.parent = genome, child_id, parent
        self.generation, self.index = generation, index
        self.spectrum, self.hash = tuple(int(v) for v in spectrum), hash
        self.metrics: dict[str, Any] | None = None
        self.threshold: float | None = None
        self.draws: list[float] = []

    def summary(self) -> dict[str, Any]:
        """JSON-able description (for population.json and final.json); ``draws`` and the
        mean ``fitness`` only for a member trained more than once."""
        out = {"id": self.child_id, "parent": self.parent, "generation": self.generation,
               "hash": self.hash, "spectrum": list(self.spectrum), "metrics": self.metrics}
        if len(self.draws) > 1:
            out.update(draws=list(self.draws), fitness=self.fitness.values[0])
        return out


def setup_creator() -> None:
    """Create ``creator.NasFitness`` (maximise one value) and ``creator.NasChild`` once."""
    if not hasattr(creator, "NasFitness"):
        creator.create("NasFitness", base.Fitness, weights=(1.0,))
    if not hasattr(creator, "NasChild"):
        creator.create("NasChild", Child, fitness=creator.NasFitness)


def child_id(generation: int, index: int) -> str:
    """The id of child ``index`` of ``generation`` (``g003-c007``)."""
    return f"g{generation:03d}-c{index:03d}"


def draw_rng(seed: int, generation: int, index: int) -> np.random.Generator:
    """The generator of every random draw for (run seed, generation, index)."""
    return np.random.default_rng([seed, generation, index])


def train_seed(seed: int, generation: int, index: int) -> int:
    """The training seed of a child, derived from (run seed, generation, index)."""
    return int(np.random.SeedSequence([seed, generation, index, 1]).generate_state(1)[0])


def train_seed_of(search: Any, generation: int, index: int) -> int:
    """The training seed of child ``index`` of ``generation`` under ``search``: its own
    (:func:`train_seed`), or with common random numbers (``search.common_seeds``) the seed
    of the generation's child 0 for every child, so the children of one generation see the
    same data order and the same random draws (initialisation aside, which the architecture
    fixes) and differ by architecture alone."""
    return train_seed(search.seed, generation, 0 if search.common_seeds else index)


def redraw_seed(seed: int, generation: int, index: int, draw: int) -> int:
    """The training seed of draw ``draw`` >= 1 of child ``index`` of ``generation`` (a
    re-evaluation): independent of every child's first seed and of its other draws."""
    return int(np.random.SeedSequence([seed, generation, index, 1, draw]).generate_state(1)[0])


def reuse_key(hash: str, epochs: int) -> tuple[str, int]:
    """When a child may reuse an earlier child's result instead of being trained.

    Same architecture (canonical hash) *and* same training budget: a child of a generation
    that trains for more epochs (the paper's +5 every 10 generations) is trained again. The
    remaining settings (data, reference, attack, defense, batch size, learning rate) are the
    run's and cannot change within it (a resume with other settings is refused), so the pair
    names one training recipe. The child's own seed is not part of it (DESIGN.md §4: an
    identical architecture reuses the result).
    """
    return hash, int(epochs)


def make_individual(ops: GenomeOps, genome: str, generation: int, index: int,
                    parent: str | None) -> Any:
    """A fresh (unevaluated) ``NasChild`` for ``genome``."""
    return creator.NasChild(genome, child_id(generation, index), parent, generation, index,
                                 ops.spectrum(genome), ops.canonical_hash(genome))


def mutate_child(parent: Child, generation: int, index: int, *, ops: GenomeOps,
                 search: SearchSettings) -> Any:
    """Child ``index`` of ``generation``: ``mutations_min..mutations_max`` operators on ``parent``.

    The child is a new individual, so its fitness is invalid (as after DEAP's ``varAnd``).
    """
    rng = draw_rng(search.seed, generation, index)
    count = int(rng.integers(search.mutations_min, search.mutations_max + 1))
    genome = ops.mutate(parent.genome, rng, count)
    child = make_individual(ops, genome, generation, index, parent.child_id)
    del child.fitness.values
    return child


def nearest(population: Sequence[Child], child: Child) -> int:
    """Index of the member nearest to ``child`` by spectrum; the first one on ties (§3.2)."""
    sq = [int(np.sum((np.subtract(m.spectrum, child.spectrum)) ** 2)) for m in population]
    return int(np.argmin(sq))  # exact integer squared distances: ties are exact


def initial_genomes(search: SearchSettings, ops: GenomeOps) -> list[str]:
    """s random genomes with pairwise spectrum distance >= d (Algorithm 1 line 1).

    Rejection sampling: a draw is kept when it is a new architecture at distance >= d (eq. 3)
    from every genome kept so far. When that greedy pass fails (early draws can crowd out the
    rest in a small space), :func:`farthest_point` over all distinct draws is tried. Attempt
    ``a`` samples with ``draw_rng(seed, 0, a)``, so the result is a pure function of the
    settings (and cheap: nothing is trained).

    Raises:
        UserError: no such population found in ``200 * s`` attempts (setting ``min_distance``).
    """
    accepted: list[str] = []
    spectra: list[tuple[int, ...]] = []
    pool: dict[str, tuple[str, tuple[int, ...]]] = {}  # hash -> (genome, spectrum), every draw
    for attempt in range(200 * search.population):
        genome = ops.sample(draw_rng(search.seed, 0, attempt))
        spec, h = ops.spectrum(genome), ops.canonical_hash(genome)
        if h in pool:
            continue
        pool[h] = (genome, spec)
        if all(spectrum_distance(spec, s) >= search.min_distance for s in spectra):
            accepted.append(genome)
            spectra.append(spec)
            if len(accepted) == search.population:
                return accepted
    spread = farthest_point(list(pool.values()), search.population)
    if min_pairwise(s for _, s in spread) >= search.min_distance:
        return [g for g, _ in spread]
    raise UserError(
        f"could not sample {search.population} genomes with spectrum distance >= "
        f"{search.min_distance}; lower it or the population, or raise max_nodes",
        setting="min_distance",
    )


def farthest_point(pool: list[tuple[str, tuple[int, ...]]],
                   k: int) -> list[tuple[str, tuple[int, ...]]]:
    """Greedy max-min selection of ``k`` (genome, spectrum) pairs: start from the first draw,
    then repeatedly add the draw farthest (eq. 3) from those chosen (first on ties)."""
    chosen = pool[:1]
    while 0 < len(chosen) < min(k, len(pool)):
        best = max((p for p in pool if p not in chosen),
                   key=lambda p: min(spectrum_distance(p[1], c[1]) for c in chosen))
        chosen.append(best)
    return chosen


def min_pairwise(spectra: Any) -> float:
    """Smallest pairwise spectrum distance (inf for fewer than two)."""
    specs = list(spectra)
    return min((spectrum_distance(a, b) for i, a in enumerate(specs) for b in specs[i + 1:]),
               default=float("inf"))


def extra_genomes(search: SearchSettings, ops: GenomeOps, first: Sequence[str]) -> list[str]:
    """Warm start (``--init-samples K``): K - s more random genomes, new architectures (by
    canonical hash) not among ``first``; no distance constraint (only the kept s need one).
    Draw ``a`` uses the stream ``[seed, 0, a, 3]``.

    Raises:
        UserError: the space has fewer than K distinct architectures within ``200 * K`` draws.
    """
    seen = {ops.canonical_hash(g) for g in first}
    extra: list[str] = []
    for attempt in range(200 * search.init_samples):
        if len(first) + len(extra) >= search.init_samples:
            return extra
        genome = ops.sample(np.random.default_rng([search.seed, 0, attempt, 3]))
        h = ops.canonical_hash(genome)
        if h not in seen:
            seen.add(h)
            extra.append(genome)
    raise UserError(f"the search space has fewer than {search.init_samples} distinct "
                    f"architectures; lower it or raise max_nodes", setting="init_samples")


def initial_population(toolbox: base.Toolbox, search: SearchSettings, ops: GenomeOps) -> list[Any]:
    """The initial population as unevaluated individuals with ids ``g000-c000``... in order of
    acceptance (see :func:`initial_genomes`). With ``search.init_samples = K > s`` they are
    followed by K - s candidates of :func:`extra_genomes` (so Algorithm 1's population is among
    the K), of which :func:`select_initial` keeps s once all are trained."""
    genomes = initial_genomes(search, ops)
    if search.warm_start:
        genomes += extra_genomes(search, ops, genomes)
    return [make_individual(ops, g, 0, i, None) for i, g in enumerate(genomes)]


def select_initial(candidates: Sequence[Any], search: SearchSettings) -> list[Any]:
    """Warm start (``--init-samples K``): the s fittest of the K trained candidates whose
    pairwise spectrum distance is >= d, taken greedily in order of fitness (the earlier
    candidate on ties); when fewer than s are that far apart, the fittest of the rest fill the
    population. The population keeps the candidates' generation-0 order."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].fitness.values[0])
    kept: list[int] = []
    for i in order:
        if all(spectrum_distance(candidates[i].spectrum, candidates[k].spectrum)
               >= search.min_distance for k in kept):
            kept.append(i)
        if len(kept) == search.population:
            break
    kept += [i for i in order if i not in kept][:search.population - len(kept)]
    return [candidates[i] for i in sorted(kept)]


def random_child(generation: int, index: int, *, ops: GenomeOps, search: SearchSettings) -> Any:
    """Child ``index`` of ``generation`` under ``--strategy random``: a fresh sample of the
    search space (no parent), drawn with its own stream ``[seed, generation, index, 2]``."""
    genome = ops.sample(np.random.default_rng([search.seed, generation, index, 2]))
    child = make_individual(ops, genome, generation, index, None)
    del child.fitness.values
    return child


def set_thresholds(population: Sequence[Any], children: Sequence[Any]) -> None:
    """Early rejection: each child's threshold is the fitness of its nearest member of
    ``population`` (the member it would be compared with, known before training)."""
    for child in children:
        child.threshold = float(population[nearest(population, child)].fitness.values[0])


def build_toolbox(search: SearchSettings, ops: GenomeOps, *, evaluate: Callable[..., dict],
                  map_fn: Callable[..., list[dict]], emit: Callable[[dict], Any],
                  reevaluate: Callable[..., list[dict]] | None = None) -> base.Toolbox:
    """The DEAP toolbox of a search.

    Args:
        search: the search settings.
        ops: genome operations.
        evaluate: picklable ``(genome, *, epochs, seed, out_dir, split) -> metrics dict``.
        map_fn: ``(evaluate, individuals) -> [metrics dict]`` in order (parallel, logged,
            answering finished children from the log).
        emit: writes one event to the run log (``replacement``, ``generation_finished``).
        reevaluate: ``members -> [metrics dict]``, one fresh training of each member
            (noise-aware selection; needed when ``search.reevaluate_margin`` > 0).
    """
    setup_creator()
    toolbox = base.Toolbox()
    toolbox.register("mutate", mutate_child, ops=ops, search=search)
    toolbox.register("random_child", random_child, ops=ops, search=search)
    toolbox.register("evaluate", evaluate)
    toolbox.register("map", map_fn)
    toolbox.register("emit", emit)
    if reevaluate is not None:
        toolbox.register("reevaluate", reevaluate)
    return toolbox


def assign(individuals: Sequence[Child], results: Sequence[dict[str, Any]]) -> None:
    """Store each result on its individual: ``fitness.values = (F,)`` (eq. 4), ``metrics``
    and its first draw."""
    for ind, res in zip(individuals, results, strict=True):
        ind.metrics = res
        ind.fitness.values = (float(res["fitness"]),)
        ind.draws = [float(res["fitness"])]


def close_calls(population: Sequence[Any], children: Sequence[Any],
                search: Any) -> list[Any]:
    """The members a fully trained child beats by no more than ``search.reevaluate_margin``
    (its nearest member, the one it would replace), each once, in the children's order,
    leaving out members already trained ``search.max_draws`` times."""
    out: list[Any] = []
    for child in children:
        if rejected(child) or (child.metrics or {}).get("status", "ok") != "ok":
            continue
        member = population[nearest(population, child)]
        gap = child.fitness.values[0] - member.fitness.values[0]
        if (0.0 < gap <= search.reevaluate_margin and len(member.draws) < search.max_draws
                and not any(member is m for m in out)):
            out.append(member)
    return out


def reevaluate_close_calls(toolbox: base.Toolbox, population: Sequence[Any],
                           children: Sequence[Any], search: Any) -> int:
    """Noise-aware selection: before lines 7-9 compare, every member a child beats by less
    than the measured noise (:func:`close_calls`) is trained once more from a fresh seed
    (``toolbox.reevaluate``: one draw each, logged, so a resume replays it) and its fitness
    becomes the mean of its draws. A lucky draw then no longer decides a replacement on its
    own: the member's estimate tightens exactly where the comparison is close. Returns how
    many members were re-evaluated."""
    members = close_calls(population, children, search)
    if not members:
        return 0
    for member, res in zip(members, toolbox.reevaluate(members), strict=True):
        member.draws.append(float(res["fitness"]))
        member.fitness.values = (float(np.mean(member.draws)),)
    return len(members)


def rejected(ind: Any) -> bool:
    """Whether early rejection stopped ``ind`` (its fitness is that of a partly trained
    network: it never replaces, enters the population or the hall of fame)."""
    return (ind.metrics or {}).get("status") == "rejected"


def select_replace(population: list[Any], child: Any, generation: int,
                   toolbox: base.Toolbox) -> bool:
    """Algorithm 1 lines 7-9: the nearest member is replaced if the child is strictly fitter.

    A child stopped by early rejection (status ``rejected``) never replaces: its fitness is
    that of a partly trained network.
    """
    if rejected(child):
        return False
    k = nearest(population, child)
    old = population[k]
    if not child.fitness.values[0] > old.fitness.values[0]:
        return False
    population[k] = child
    toolbox.emit({"type": "replacement", "generation": generation, "id": child.child_id,
                  "replaced": old.child_id, "slot": k, "spectrum": list(child.spectrum),
                  "fitness": child.fitness.values[0],
                  "replaced_fitness": old.fitness.values[0]})
    return True


def make_statistics() -> tools.Statistics:
    """Fitness statistics of a population (max / mean / min)."""
    stats = tools.Statistics(key=lambda ind: ind.fitness.values[0])
    stats.register("max", np.max)
    stats.register("mean", np.mean)
    stats.register("min", np.min)
    return stats


def compete(toolbox: base.Toolbox, population: list[Any], children: list[Any], t: int,
            search: SearchSettings) -> int:
    """Lines 5-10 for a batch of children: their thresholds (early rejection), their training
    (``toolbox.map``), the re-evaluation of narrowly beaten members (``reevaluate_margin``),
    then each child against its nearest member in order. Returns how many replaced one."""
    if search.early_reject:
        set_thresholds(population, children)
    assign(children, toolbox.map(toolbox.evaluate, children))
    if search.reevaluate_margin > 0:
        reevaluate_close_calls(toolbox, population, children, search)
    return sum(select_replace(population, c, t, toolbox) for c in children)


def generation_parallel(toolbox: base.Toolbox, population: list[Any], t: int,
                        search: SearchSettings) -> tuple[list[Any], int]:
    """One generation, children of the generation-start population evaluated together."""
    children = [toolbox.mutate(parent, t, i * search.children + j)
                for i, parent in enumerate(list(population)) for j in range(search.children)]
    return children, compete(toolbox, population, children, t, search)


def generation_sequential(toolbox: base.Toolbox, population: list[Any], t: int,
                          search: SearchSettings) -> tuple[list[Any], int]:
    """One generation line by line: candidate i mutates from the *current* P (lines 3-11).

    The n children of one candidate are mutated together (line 4); training one child does not
    depend on P, so they are trained as a batch and then compared in order (lines 5-10).
    """
    all_children, replaced = [], 0
    for i in range(len(population)):
        parent = population[i]
        children = [toolbox.mutate(parent, t, i * search.children + j)
                    for j in range(search.children)]
        replaced += compete(toolbox, population, children, t, search)
        all_children += children
    return all_children, replaced


def generation_immigrants(toolbox: base.Toolbox, population: list[Any], t: int,
                          search: SearchSettings) -> tuple[list[Any], int]:
    """A generation of immigrants (``--stagnation G``, after G generations in which no child
    replaced a member): the s x n children are fresh samples of the space (drawn as random
    search draws them, :func:`random_child`) instead of mutants of a population that has
    stopped changing, trained and compared by Algorithm 1's rule (nearest member, strictly
    fitter; early rejection and re-evaluation as configured), so niching still holds and an
    immigrant enters only where it beats the member it is nearest to."""
    children = [toolbox.random_child(t, i) for i in range(len(population) * search.children)]
    return children, compete(toolbox, population, children, t, search)


def generation_random(toolbox: base.Toolbox, population: list[Any], t: int,
                      search: SearchSettings) -> tuple[list[Any], int]:
    """Random search (``--strategy random``): s x n fresh samples of the space, evaluated as
    the GA's children are (same evaluation, same epochs); the population becomes the s best
    distinct architectures seen so far (members first on ties), so the finalists are the
    best of the same number of evaluated children.

    With early rejection each sample is raced as a GA child is, against the fitness it must
    beat to change the outcome: that of the population's worst member (the s-th best so far).
    A rejected sample never enters the population.
    """
    children = [toolbox.random_child(t, i) for i in range(len(population) * search.children)]
    if search.early_reject:
        bar = min(float(ind.fitness.values[0]) for ind in population)
        for child in children:
            child.threshold = bar
    assign(children, toolbox.map(toolbox.evaluate, children))
    best = best_distinct(list(population) + [c for c in children if not rejected(c)],
                         len(population))
    replaced = sum(1 for ind in best if any(ind is c for c in children))
    population[:] = best
    return children, replaced


def generation_aging(toolbox: base.Toolbox, population: list[Any], t: int,
                     search: Any) -> tuple[list[Any], int]:
    """Regularized evolution (``--strategy aging``; Real et al. 2019, "Regularized evolution
    for image classifier architecture search", Algorithm 1), a baseline at the same number of
    children: each of the s x n children is mutated from the fittest of a random sample of
    the population (:data:`AGING_SAMPLE` members, drawn from the child's own generator), and
    after the generation is trained each child in turn joins the population and its oldest
    member leaves, whatever their fitness: a member that owes its place to a lucky draw is
    aged out instead of kept. A failed child does not join. The finalists are the s fittest
    distinct architectures ever trained (:func:`steady_state`), as the method reports its
    best model in history.
    """
    children = []
    for i in range(len(population) * search.children):
        rng = draw_rng(search.seed, t, 10_000 + i)
        sample = rng.choice(len(population), size=min(AGING_SAMPLE, len(population)),
                            replace=False)
        parent = max((population[int(k)] for k in sample), key=lambda m: m.fitness.values[0])
        children.append(toolbox.mutate(parent, t, i))
    assign(children, toolbox.map(toolbox.evaluate, children))
    replaced = 0
    for child in children:
        if (child.metrics or {}).get("status", "ok") != "ok":
            continue
        oldest = min(range(len(population)),
                     key=lambda k: (population[k].generation, population[k].index))
        old = population[oldest]
        population[oldest] = child
        toolbox.emit({"type": "replacement", "generation": t, "id": child.child_id,
                      "replaced": old.child_id, "slot": oldest, "spectrum": list(child.spectrum),
                      "fitness": child.fitness.values[0],
                      "replaced_fitness": old.fitness.values[0], "aged_out": True})
        replaced += 1
    return children, replaced


#: Members sampled for each parent of regularized evolution (its tournament size; Real et
#: al. sample a fraction of a large population, here the population is a handful).
AGING_SAMPLE = 2


def best_distinct(individuals: Sequence[Any], k: int) -> list[Any]:
    """Random search's population: the ``k`` fittest distinct architectures (by canonical hash)
    of ``individuals``, the earlier one first on ties."""
    pool, hashes = [], set()
    for ind in individuals:
        if ind.hash not in hashes:
            hashes.add(ind.hash)
            pool.append(ind)
    return sorted(pool, key=lambda ind: -ind.fitness.values[0])[:k]


def steady_state(toolbox: base.Toolbox, population: list[Any], search: SearchSettings,
                 on_generation: Callable[[int, list[Any], dict[str, Any]], None] | None = None,
                 ) -> tuple[list[Any], tools.Logbook, tools.HallOfFame]:
    """Neuroevolution with spectrum niching (paper Algorithm 1).

    ```
    1:  P = {N_1..N_s}, pairwise d_spec >= d                 (initial_population + evaluate;
                                                              select_initial with --init-samples)
    2:  for t = 1..g:
    3:    for each N in P:
    4:      {C_1..C_n} = mutation(N)                         (toolbox.mutate, 4-5 operators)
    5:      for j = 1..n:
    6:        N_j = train(C_j)                               (toolbox.map(toolbox.evaluate, ...))
    7:        N* = argmin_{N' in P} d_spec(N', C_j)          (nearest; first on ties)
    8:        if F(N*) < F(C_j):                             (strictly fitter, eq. 4)
    9:          replace N* with C_j                          (select_replace)
    14: return P
    ```
    By default a generation's children are all mutated from the generation-start P and trained
    in parallel before lines 7-9 run in candidate order; ``search.sequential`` follows the
    listing exactly (each candidate mutates from the current P). Beside the listing, off by
    default: ``reevaluate_margin`` re-trains a narrowly beaten N* before line 8 compares, so
    F(N*) is the mean of its draws (:func:`reevaluate_close_calls`); ``stagnation`` G makes the
    generation after G without a replacement one of immigrants
    (:func:`generation_immigrants`); ``strategy`` ``random`` and ``aging`` are the baselines
    (:func:`generation_random`, :func:`generation_aging`).

    Returns:
        The final population, the Logbook (one record per generation) and a HallOfFame (of
        fully trained children: one stopped by early rejection has a partial fitness).
    """
    stats, logbook = make_statistics(), tools.Logbook()
    hof = tools.HallOfFame(len(population), similar=lambda a, b: a.hash == b.hash)
    logbook.header = ["gen", "evals", "replaced", "max", "mean", "min"]
    candidates = list(population)
    assign(candidates, toolbox.map(toolbox.evaluate, candidates))
    hof.update(candidates)
    if search.warm_start:  # --init-samples
        population[:] = (best_distinct(candidates, search.population)
                         if search.strategy == "random" else select_initial(candidates, search))
    logbook.record(gen=0, evals=len(candidates), replaced=0, **stats.compile(population))
    if on_generation:
        on_generation(0, population, logbook[-1])
    step = {"random": generation_random, "aging": generation_aging}.get(search.strategy) or (
        generation_sequential if search.sequential else generation_parallel)
    quiet = 0  # generations in a row in which no child replaced a member (immigrants reset it)
    for t in range(1, search.generations + 1):
        if search.stagnation and quiet >= search.stagnation and search.strategy == "ga":
            toolbox.emit({"type": "immigrants", "generation": t, "quiet_generations": quiet})
            children, replaced = generation_immigrants(toolbox, population, t, search)
            quiet = 0
        else:
            children, replaced = step(toolbox, population, t, search)
            quiet = 0 if replaced else quiet + 1
        hof.update([c for c in children if not rejected(c)])
        logbook.record(gen=t, evals=len(children), replaced=replaced, **stats.compile(population))
        if on_generation:
            on_generation(t, population, logbook[-1])
    if search.strategy == "aging":  # regularized evolution reports its best in history
        population[:] = best_distinct(list(hof), len(population))
    return population, logbook, hof


# -- the real genome operations ---------------------------------------------------------------

def search_space(search: SearchSettings, input_shape: tuple[int, int, int]) -> Any:
    """The ``search_spaces.SearchSpace`` of a search: the default space with the search's caps,
    valid for the dataset's input shape."""
    from search_spaces.space import DEFAULT_SPACE

    channels = tuple(c for c in DEFAULT_SPACE.channels if c <= search.max_channels)
    initial = tuple(c for c in DEFAULT_SPACE.initial_channels if c <= search.max_channels)
    return dataclasses.replace(
        DEFAULT_SPACE, channels=channels or (search.max_channels,),
        initial_channels=initial or (search.max_channels,), max_channels=search.max_channels,
        max_nodes=search.max_nodes, input_shapes=(tuple(input_shape),),
        max_macs=round(search.max_mmacs * 1e6),
        max_blocks=min(DEFAULT_SPACE.max_blocks,
                       max(DEFAULT_SPACE.min_blocks, search.max_nodes - 4)))


def _spectrum_json(genome: str) -> tuple[int, ...]:
    import genome as gn

    return tuple(gn.spectrum(gn.from_json(genome)))


def _hash_json(genome: str) -> str:
    import genome as gn

    return gn.canonical_hash(gn.from_json(genome))


def _mutate_json(genome: str, rng: np.random.Generator, count: int, *, limits: Any) -> str:
    import genome as gn

    child, _ = gn.mutate(gn.from_json(genome), rng, limits=limits, count=count)
    return gn.to_json(child, indent=None)


def _sample_json(rng: np.random.Generator, *, space: Any, input_shape: tuple[int, int, int]) -> str:
    import genome as gn
    from search_spaces.sampling import sample_genome

    return gn.to_json(sample_genome(rng, space, input_shape), indent=None)


def genome_ops(search: SearchSettings, input_shape: tuple[int, int, int]) -> GenomeOps:
    """:class:`GenomeOps` on real genomes (``genome`` + the ``search_spaces`` sampler)."""
    space = search_space(search, input_shape)
    return GenomeOps(
        sample=functools.partial(_sample_json, space=space, input_shape=tuple(input_shape)),
        mutate=functools.partial(_mutate_json, limits=space.limits()),
        spectrum=_spectrum_json, canonical_hash=_hash_json)
