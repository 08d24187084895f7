"""``attributor bench``: every method, ours and the peers', on the same tasks and ground truth.

For each task of a suite (see :mod:`attributor.pipelines.bench_tasks`):

1. the clean variant: the full model's checkpoints, a FeatureStore (train + queries), a
   TrainingContext, and m retrains on random half subsets (cached): LDS of every method
   with its bootstrap interval and the LDS of random scores;
2. the noisy variant (10% flipped labels): every method's self-influence, ROC AUC against
   the flipped flags, beside a random ranking's;
3. on convex tasks, exact leave-one-out retrains (LOO correlation) and brittleness.

Outputs in DIR: results.csv and results.md (columns task, method, lds, lds_low, lds_high,
lds_random, auc, auc_random, featurize_s, score_s, peak_mb), loo.csv, brittleness.csv,
and tasks/ (checkpoints, stores, the retrain cache: a rerun costs only the scoring).

Ridges: by default (``damping="rule"``) TRAK and the influence functions get the bench's
fixed rules (:func:`method_args`). With ``damping="heldout"`` every method with a ridge
gets the one it scores best with on a validation task built from the training set alone
(:func:`select_damping_heldout`), written to damping.csv and the notes.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from attributor._io import atomic_write_text
from attributor.errors import AttributorError, ConfigError
from attributor.evaluation import detection_auc
from attributor.evaluation.brittleness import brittleness
from attributor.evaluation.lds import lds, lds_random, loo_correlation
from attributor.evaluation.memory import PeakMemory
from attributor.evaluation.retrain import Executor, LocalExecutor, random_subsets, retrain
from attributor.features import FeatureStore, featurize, make_projector
from attributor.methods import TrainingContext, get_method, method_names
from attributor.pipelines.bench_tasks import SUITES, BenchTask, PreparedTask, Suite, load_task_data, prepare
from attributor.progress import progress_bar, silenced_bars
from attributor.reports import Section, Table, write_markdown_report
from attributor.tasks import ClassificationTask

__all__ = ["run_bench", "COLUMNS", "Attribution", "BenchVariant", "load_variant", "lds_ground_truth", "attribute",
           "method_args", "peer_damping", "select_tasks", "check_task", "trak_damping_for_l2", "influence_damping_unit",
           "DampingSelection", "select_damping_heldout", "damping_sweep", "validation_task", "ridge_arg",
           "HELDOUT_METHODS", "HELDOUT_GRID", "HELDOUT_RETRAINS"]

COLUMNS = ["task", "method", "lds", "lds_low", "lds_high", "lds_random", "auc", "auc_random", "featurize_s", "score_s", "peak_mb"]
DAMPING_COLUMNS = ["task", "method", "damping", "lds_heldout", "selected", "n_queries", "n_retrains"]


@dataclass
class Attribution:
    """What one method produced on one prepared task."""

    scores: np.ndarray | None = None  # (n_query, n_train)
    self_influence: np.ndarray | None = None  # (n_train,)
    featurize_s: float | None = None
    score_s: float = 0.0
    peak_mb: float = 0.0
    note: str = ""


@dataclass
class BenchVariant:
    """One variant (``clean`` or ``noisy``) of a bench task, ready for every method.

    ``prepared`` holds the data and the full model's checkpoints, ``store`` the projected
    gradient features of the training set and the queries (split names ``train`` and
    ``query``), ``context`` the TrainingContext the context-based methods read.
    """

    prepared: PreparedTask
    store: FeatureStore
    featurize_s: float
    projection_seed: int
    context: TrainingContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = TrainingContext(
            model=self.prepared.model(), task=ClassificationTask(),
            datasets={"train": self.prepared.train_set, "query": self.prepared.queries},
            checkpoints=self.prepared.checkpoints, learning_rates=self.prepared.learning_rates,
        )


#: Bench settings that differ from a method's defaults: caps on the iterative inverse
#: solvers so that the full suite stays within about 30 minutes on 2 cores.
METHOD_ARGS: dict[str, dict[str, Any]] = {
    # 50 left every query of a small MLP task unconverged (issue 20); the notes record what 200 leaves
    "if-cg": {"max_iter": 200},
    "if-lissa": {"depth": 200},
    # the exact Gauss-Newton inverse on the MLP tasks too (9,610 parameters: a 0.7 GB matrix)
    "if-explicit": {"max_params": 10_000},
}


#: Self-influence the bench does not compute (no AUC row), with the reason.
SKIP_SELF_INFLUENCE: dict[str, str] = {}

#: dattri's IF self-influence is one 10-step CG solve per training example, each step a
#: Hessian-vector product over the whole training set: about n_train^2 x n_params work. It
#: runs where n_train x n_params is at most this (both logistic regressions of the full
#: suite; the digits MLP, 1,347 x 9,610, took about 10 minutes and is skipped).
DATTRI_IF_SELF_INFLUENCE_MAX = 2_000_000

#: Iterative inverse solvers whose self-influence is one capped solve per block of training
#: examples, each iteration a full-data curvature product: skipped above this many training
#: examples on non-convex tasks, where they also do not converge within the cap.
ITERATIVE_SELF_INFLUENCE = ("if-cg", "if-lissa")
ITERATIVE_SELF_INFLUENCE_MAX_TRAIN = {"if-cg": 1000, "if-lissa": 2000}  # if-cg: 200 iterations per block


def skip_self_influence(name: str, task: BenchTask, n_train: int, n_params: int | None = None) -> str | None:
    """Why the bench does not compute ``name``'s self-influence on ``task`` (None: it does)."""
    if name in SKIP_SELF_INFLUENCE:
        return SKIP_SELF_INFLUENCE[name]
    if name == "dattri-if" and n_params is not None and n_train * n_params > DATTRI_IF_SELF_INFLUENCE_MAX:
        return (f"dattri's IF self-influence is one CG solve per training example ({n_train} x {n_params} parameters; "
                f"about 10 minutes on the digits MLP); run where n_train x n_params <= {DATTRI_IF_SELF_INFLUENCE_MAX:,}")
    limit = ITERATIVE_SELF_INFLUENCE_MAX_TRAIN.get(name)
    if limit is not None and not task.convex and n_train > limit:
        return (f"{name}'s self-influence is one capped iterative solve per block of {n_train} training examples "
                f"(over 10 minutes on 2 cores); skipped above {limit} on non-convex tasks")
    return None


def method_args(name: str, task: BenchTask, variant: "BenchVariant | None" = None) -> dict[str, Any]:
    """The bench's arguments for method ``name`` (every method runs with its defaults otherwise).

    On convex tasks the objective is sum_i l_i + l2/2 |theta|^2, whose Hessian is H + l2 I,
    so the influence-function family gets the relative damping that makes its lambda equal
    l2: then if-explicit is the exact Newton step that LOO correlation checks. TRAK gets the
    same l2 on the scale of its kernel (:func:`trak_damping_for_l2`). On the other tasks
    (checkpoints of networks, no l2) TRAK runs at ``NETWORK_TRAK_DAMPING``: the ridge equal to
    the kernel's mean eigenvalue (see there), and the influence functions of
    ``CHECKPOINT_ENSEMBLES`` average over the task's checkpoints.
    """
    import inspect

    from attributor.methods import Method

    args = dict(METHOD_ARGS.get(name, {}))
    takes_damping = "damping" in inspect.signature(Method.lookup(name).__init__).parameters
    if task.convex and name.startswith("if-") and takes_damping and variant is not None:
        args["damping"] = _relative_damping_for_l2(task, variant)
    if name == "trak" and variant is not None:
        args["damping"] = trak_damping_for_l2(task, variant) if task.convex else NETWORK_TRAK_DAMPING
    if name in CHECKPOINT_ENSEMBLES and not task.convex:
        args["checkpoint"] = "all"
    return args


#: Influence functions that the bench averages over the task's checkpoints on networks, as
#: TRAK and TracIn do and as dattri's IF does for every checkpoint of its task (issue 20:
#: that ensemble was dattri's lead on mnist1d). if-cg stays at the last checkpoint: its
#: 200-iteration solves would cost 3-4x their 2-4 minutes.
CHECKPOINT_ENSEMBLES = ("if-explicit", "if-lissa", "if-ekfac", "datainf")


#: TRAK's relative damping on networks (lambda = d * trace(K)/k = d * the kernel's mean
#: eigenvalue). ``benchmarks/trak_ridge.py`` measured LDS over d = 1e-3..1e3 on every
#: full-suite task: d = 1 was the best or within 0.03 of it on all six networks' settings
#: (digits-mlp, digits-cnn, mnist1d-mlp; all checkpoints and the last alone), read off the
#: first four tasks and confirmed on digits-cnn and mnist1d-mlp, held out from that choice.
#: GCV (``damping="auto"``) chose 1e-3 to 1e3 there, at LDS 0.23-0.59 against 0.61-0.75.
#: TRAK's own default stays 1e-2 (close to the paper's lambda = 0).
NETWORK_TRAK_DAMPING = 1.0


def trak_damping_for_l2(task: BenchTask, variant: "BenchVariant", fraction: float | None = 0.5) -> float:
    """TRAK's relative damping d that puts the training l2 on the scale of TRAK's kernel.

    The objective sum_i l_i + l2/2 |theta|^2 has, along the margin gradients, the
    Gauss-Newton curvature Phi^T W Phi + l2 I with W = diag(p_i (1 - p_i)) = diag(Q_i (1 - Q_i))
    (l = log(1 + exp(-f)) for the margin f). TRAK drops W (eq. 16: Phi^T Phi); scaling by the
    trace-weighted mean w~ = trace(Phi^T W Phi) / trace(Phi^T Phi) gives
    Phi^T W Phi + l2 I ~ w~ (Phi^T Phi + (l2 / w~) I), i.e. lambda = l2 / w~ and
    d = lambda k / trace(K) = l2 k / trace(Phi^T W Phi). For LDS at subset ``fraction``
    alpha (the bench's 0.5), a model retrained on alpha n examples has data curvature
    alpha H, and the effect of one example there is (alpha H + l2 I)^{-1} g, proportional to
    (H + l2/alpha I)^{-1} g: the ridge is l2 / alpha (``fraction=None``: l2, the
    leave-one-out ridge). Read from the store (one checkpoint on convex tasks); nothing from
    the retrains. Measured (benchmarks/lds_gaps.py): LDS 0.724 / 0.743 at l2 and 0.737 /
    0.757 at l2/alpha on digits-logreg / cancer-logreg, against 0.580 / 0.572 at 1e-2.
    """
    store = variant.store
    last = store.n_checkpoints - 1
    weighted = sum(float(((np.asarray(f, dtype=np.float64) ** 2).sum(axis=1) * np.asarray(q) * (1 - np.asarray(q))).sum())
                   for _, _, f, q in store.iter_chunks("train", last))
    l2 = task.l2 / (fraction if fraction is not None else 1.0)
    return l2 * store.dim / weighted


def _relative_damping_for_l2(task: BenchTask, variant: "BenchVariant") -> float:
    """d such that d * sum_i |grad l_i|^2 / p = l2 (the influence family's damping rule)."""
    return task.l2 / influence_damping_unit(variant)


#: How the bench sets the ridges (``run_bench(damping=...)``).
DAMPING_MODES = ("rule", "heldout")

#: Methods with a ridge that ``damping="heldout"`` selects: TRAK's relative damping
#: (lambda = d trace(K)/k) and the influence family's (lambda = d sum_i |grad l_i|^2 / p).
HELDOUT_METHODS = ("trak", "if-explicit", "if-cg", "if-lissa", "if-ekfac", "datainf")

#: The relative dampings the held-out selection tries: half decades from 1e-2 to 1e2.
HELDOUT_GRID = tuple(float(x) for x in np.logspace(-2, 2, 9))

#: Retrains (random halves of the remaining training rows) of the held-out selection.
HELDOUT_RETRAINS = 16

#: Whose selected ridge a method takes when it has none of its own: the peers (converted
#: into their units) and if-cg, the iterative solve of if-explicit's system.
_RIDGE_FROM = {"traker-trak": "trak", "dattri-trak": "trak", "dattri-if": "if-explicit", "if-cg": "if-explicit"}


def ridge_arg(name: str) -> str:
    """The constructor argument that holds method ``name``'s ridge: ``damping``, or DataInf's
    ``lambda_scale`` (per-layer lambda_l = lambda_scale * the layer's mean squared gradient norm)."""
    return "lambda_scale" if name == "datainf" else "damping"


def run_bench(
    suite: str | Suite,
    out: str | Path,
    *,
    methods: Sequence[str] | None = None,
    peers: bool | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
    projection: str = "gaussian",
    projection_seed: int | None = None,
    tasks: Sequence[str] | None = None,
    damping: str = "rule",
    heldout_retrains: int = HELDOUT_RETRAINS,
) -> list[dict[str, Any]]:
    """Run a suite (``"quick"``, ``"full"`` or a :class:`Suite`) into ``out``; return the result rows.

    ``damping``: ``"rule"`` (the bench's fixed ridges, :func:`method_args`) or ``"heldout"``
    (each method of :data:`HELDOUT_METHODS` at the ridge :func:`select_damping_heldout` picks
    on a validation task from the training set, with ``heldout_retrains`` retrains; the
    peers get the matching ridge in their units). Writes damping.csv in both cases (the
    selection's curve, or nothing but the header under ``"rule"``).

    ``projection_seed`` (default: each task's seed) seeds the random projections of ours and
    the peers; data, training and the LDS subsets keep the task's seed, so the retrains are
    shared (cached) between projection seeds. ``tasks``: names of the suite's tasks to run
    (default: all). Every task's data is checked before any work (e.g. that it has at least
    ``n_queries`` test examples), so a bad setting fails at once with a ConfigError.
    """
    suite = select_tasks(suite, tasks)
    if damping not in DAMPING_MODES:
        raise ConfigError(f"unknown bench damping {damping!r}; choose one of: {', '.join(DAMPING_MODES)}")
    for task in suite.tasks:
        check_task(task)
    out = Path(out)
    ours = list(methods) if methods is not None else method_names()
    unknown = sorted(set(ours) - set(method_names()) - set(_peer_names()))
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; ours: {', '.join(method_names())}; peers: {', '.join(_peer_names())}")
    use_peers = suite.peers if peers is None else peers
    peer_list = [m for m in ours if m in _peer_names()] or (list(_peer_names()) if use_peers and methods is None else [])
    ours = [m for m in ours if m in method_names()]
    executor = executor or LocalExecutor()
    rows, loo_rows, brittle_rows, notes, per_query, damping_rows = [], [], [], [], [], []
    with silenced_bars(not progress):  # the peers' own bars (traker, dattri) too
        for task in suite.tasks:
            log(f"task {task.name}: preparing")
            seed = task.seed if projection_seed is None else projection_seed
            clean = load_variant(task, "clean", out, suite, projection=projection, projection_seed=seed, progress=progress)
            noisy = load_variant(task, "noisy", out, suite, projection=projection, projection_seed=seed, progress=progress)
            recipe = task.recipe(clean.prepared.data)
            n_train = len(clean.prepared.data.y_train)
            masks, actual = lds_ground_truth(task, clean, suite, out, executor=executor, progress=progress)
            chance = lds_random(masks, actual, n_train, seed=task.seed)
            flags = noisy.prepared.data.flipped
            extras = _convex_ground_truth(task, clean, recipe, suite, out, executor, progress) if task.convex else None
            selected: dict[str, DampingSelection] = {}
            if damping == "heldout":
                selectable = [m for m in ours if m in HELDOUT_METHODS and m not in dict(task.skip_methods)]
                # if-cg solves if-explicit's system iteratively: it takes that choice instead of its own costly sweep
                selectable = [m for m in selectable if _RIDGE_FROM.get(m) not in selectable]
                log(f"task {task.name}: choosing the ridges of {', '.join(selectable)} on held-out training rows")
                selected = select_damping_heldout(selectable, task, suite, out, retrains=heldout_retrains,
                                                  executor=executor, progress=progress, projection=projection,
                                                  projection_seed=seed)
                for name, selection in selected.items():
                    damping_rows += selection.rows(task.name)
                    notes.append(f"{task.name} / {name}: {selection.describe()}")
            for name in [*ours, *peer_list]:
                log(f"task {task.name}: {name}")
                ridge = _selected_ridge(name, selected)
                if ridge is not None and name not in selected:
                    notes.append(f"{task.name} / {name}: runs at {_RIDGE_FROM[name]}'s held-out ridge, relative damping {ridge:g}"
                                 + (" converted into its units" if name in peer_list else ""))
                on_clean = attribute(name, task, clean, suite, out, scores=True, damping=ridge)
                on_noisy = attribute(name, task, noisy, suite, out, scores=False, damping=ridge)
                row = {"task": task.name, "method": name, "lds_random": chance, "featurize_s": on_clean.featurize_s,
                       "score_s": on_clean.score_s, "peak_mb": on_clean.peak_mb}
                if on_clean.scores is not None:
                    result = lds(on_clean.scores, masks, actual, seed=task.seed)
                    row.update(lds=result["lds"], lds_low=result["lds_low"], lds_high=result["lds_high"])
                    per_query += [{"task": task.name, "method": name, "query": q, "spearman": value}
                                  for q, value in enumerate(result["per_query"].tolist())]
                if on_noisy.self_influence is not None:
                    auc = detection_auc(on_noisy.self_influence, flags)
                    row.update(auc=auc["auc"], auc_random=auc["auc_random"])
                for note in {on_clean.note, on_noisy.note} - {""}:
                    notes.append(f"{task.name} / {name}: {note}")
                rows.append(row)
                if extras is not None and on_clean.scores is not None:
                    loo_rows.append({"task": task.name, "method": name, **loo_correlation(on_clean.scores, *extras["loo"])})
                if extras is not None and on_clean.scores is not None and suite.brittleness_queries > 0:
                    brittle_rows.append(_brittleness_row(task, name, on_clean.scores, recipe, extras, suite, out, executor, progress))
            if extras is not None:
                random_scores = np.random.default_rng(task.seed).standard_normal((task.n_queries, n_train))
                loo_rows.append({"task": task.name, "method": "random scores", **loo_correlation(random_scores, *extras["loo"])})
        _write(out, rows, loo_rows, brittle_rows, notes, suite, per_query, damping_rows)
    return rows


def _selected_ridge(name: str, selected: dict[str, "DampingSelection"]) -> float | None:
    source = name if name in selected else _RIDGE_FROM.get(name)
    return selected[source].damping if source in selected else None


@dataclass(frozen=True)
class DampingSelection:
    """A method's ridge chosen on held-out training rows (:func:`select_damping_heldout`).

    ``lds[i]`` is the held-out LDS at relative damping ``grid[i]`` (NaN where the method
    failed at that damping); ``damping`` the grid value with the largest.
    """

    method: str
    damping: float
    grid: tuple[float, ...]
    lds: tuple[float, ...]
    n_queries: int
    n_train: int
    n_retrains: int

    def rows(self, task: str) -> list[dict[str, Any]]:
        return [{"task": task, "method": self.method, "damping": d, "lds_heldout": value, "selected": d == self.damping,
                 "n_queries": self.n_queries, "n_retrains": self.n_retrains} for d, value in zip(self.grid, self.lds)]

    def describe(self) -> str:
        best = self.lds[self.grid.index(self.damping)]
        edge = " (at the grid's edge)" if self.damping in (self.grid[0], self.grid[-1]) else ""
        return (f"damping_selected {self.damping:g}{edge} (held-out LDS {best:.3f} on {self.n_queries} training rows "
                f"held out of {self.n_train + self.n_queries}, {self.n_retrains} retrains; damping.csv has the curve)")


def validation_task(task: BenchTask, fraction: float = 0.1, max_queries: int = 100) -> BenchTask:
    """``task`` with ``fraction`` of its training rows (at least 10, at most ``max_queries``)
    held out as its queries; its test split is not used. Named ``<task>-heldout``."""
    n_train = len(load_task_data(task).y_train)
    n = int(min(max_queries, max(10, round(fraction * n_train))))
    return replace(task, name=f"{task.name}-heldout", holdout=n, n_queries=n)


def select_damping_heldout(names: Sequence[str], task: BenchTask, suite: Suite, out: str | Path, *,
                           grid: Sequence[float] = HELDOUT_GRID, retrains: int = HELDOUT_RETRAINS,
                           executor: Executor | None = None, progress: bool = False, projection: str = "gaussian",
                           projection_seed: int | None = None) -> dict[str, DampingSelection]:
    """Each method's relative damping, chosen by LDS on a validation task cut from the training set.

    The validation task (:func:`validation_task`) holds out 10% of the training rows (at
    most 100) as queries, trains its own full model on the rest (same recipe and
    checkpoints), featurizes both at ``suite.proj_dim``, and retrains ``retrains`` models on
    random halves of the rest. Every damping of ``grid`` is scored by the LDS of the held-out
    rows against those retrains; the largest wins. Nothing of the task's test split (its
    queries, its LDS ground truth) is read. Cost: one full training, one featurization and
    ``retrains`` retrains (cached under ``out``), plus one fit per method and grid value.
    Methods that fail at every damping (e.g. a size limit) are left out of the result.
    """
    if retrains < 2:
        raise ConfigError(f"the held-out ridge selection needs at least 2 retrains, got {retrains}")
    grid = tuple(float(d) for d in grid)
    vtask = validation_task(task)
    vsuite = replace(suite, n_subsets=retrains)
    variant = load_variant(vtask, "clean", out, vsuite, projection=projection, projection_seed=projection_seed,
                           progress=progress)
    masks, actual = lds_ground_truth(vtask, variant, vsuite, out, executor=executor, progress=progress)
    chosen = {}
    for name in names:
        values = [float("nan") if scores is None else lds(scores, masks, actual, seed=task.seed)["lds"]
                  for scores in damping_sweep(name, vtask, variant, vsuite, out, grid)]
        if np.isfinite(values).any():
            best = grid[int(np.nanargmax(values))]
            chosen[name] = DampingSelection(name, best, grid, tuple(values), vtask.n_queries, masks.shape[1], retrains)
    return chosen


def _peer_names() -> tuple[str, ...]:
    try:
        from attributor.evaluation.peers import PEERS
    except ImportError:  # pragma: no cover - the module ships with attributor
        return ()
    return PEERS


def select_tasks(suite: str | Suite, tasks: Sequence[str] | None = None) -> Suite:
    """The suite named ``suite`` (or ``suite`` itself), restricted to the tasks named in ``tasks``."""
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ConfigError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
        suite = SUITES[suite]
    if tasks is None:
        return suite
    names = [t.name for t in suite.tasks]
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks:
        raise ConfigError(f"unknown bench tasks {unknown}; this suite has: {', '.join(names)}")
    return replace(suite, tasks=tuple(t for t in suite.tasks if t.name in set(tasks)))


def damping_sweep(name: str, task: BenchTask, variant: BenchVariant, suite: Suite, out: str | Path,
                   grid: Sequence[float]) -> Iterator[np.ndarray | None]:
    """``name``'s query scores at each damping of ``grid`` (None where it failed). A method
    with ``with_damping`` (if-explicit) is fitted once, at the grid's largest damping, and
    re-damped; the others are fitted once per value."""
    from attributor.methods import Method

    if not hasattr(Method.lookup(name), "with_damping"):
        for d in grid:
            yield attribute(name, task, variant, suite, out, scores=True, damping=d).scores
        return
    try:
        fitted = get_method(name, **{**method_args(name, task, variant), "damping": max(grid)})
        fitted.fit(variant.store, "train", variant.context)
    except AttributorError:
        yield from (None for _ in grid)
        return
    for d in grid:
        try:
            yield fitted.with_damping(d).score("query", topk=1).values
        except AttributorError:  # e.g. C + lambda I not positive definite at a small damping
            yield None


def check_task(task: BenchTask) -> None:
    """Refuse a task whose data cannot serve it (ConfigError), before anything is trained."""
    data = load_task_data(task)
    n_test = len(data.y_test)
    if task.n_queries > n_test:
        raise ConfigError(f"bench task {task.name!r} asks for n_queries={task.n_queries} but its test split has only "
                          f"{n_test} examples (test_fraction={task.test_fraction}); lower n_queries or raise test_fraction")


def load_variant(task: BenchTask, variant: str, out: str | Path, suite: Suite, *, projection: str = "gaussian",
                 projection_seed: int | None = None, progress: bool = False) -> BenchVariant:
    """Train (or reload) ``task``'s full model for ``variant`` (``clean`` or ``noisy``) under
    ``out/tasks`` and featurize its training set and queries at ``suite.proj_dim``."""
    return _variant(task, variant, Path(out), suite, progress, projection, projection_seed)


def lds_ground_truth(task: BenchTask, variant: BenchVariant, suite: Suite, out: str | Path, *,
                     executor: Executor | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The LDS subsets and retrained outputs of ``variant``: ``masks`` (m, n_train), ``actual``
    (m, n_query), retrained with the variant's own labels (cached in ``out/cache``).

    On the noisy variant this measures LDS against retrains on the noisy labels, e.g.
    ``lds(attribute(name, task, noisy, suite, out).scores, *lds_ground_truth(task, noisy, suite, out))``.
    """
    recipe = task.recipe(variant.prepared.data)
    masks = random_subsets(len(variant.prepared.data.y_train), suite.n_subsets, seed=task.seed)
    actual = retrain(recipe, masks, Path(out) / "cache", executor=executor or LocalExecutor(), progress=progress)["measurement"]
    return masks, actual


def _variant(task: BenchTask, variant: str, out: Path, suite: Suite, progress: bool, projection: str = "gaussian",
             projection_seed: int | None = None) -> BenchVariant:
    prepared = prepare(task, variant, out / "tasks")
    seed = task.seed if projection_seed is None else projection_seed
    projector = make_projector(projection, suite.proj_dim, seed=seed)
    start = time.perf_counter()
    path = prepared.folder / "store"
    for split, dataset in (("train", prepared.train_set), ("query", prepared.queries)):
        store = featurize(prepared.model(), ClassificationTask(), dataset, prepared.checkpoints, path, projector,
                          split=split, dtype="float64" if task.dtype == "float64" else "float32",
                          progress=progress, overwrite=True)
    return BenchVariant(prepared, store, time.perf_counter() - start, seed)


def attribute(name: str, task: BenchTask, variant: BenchVariant, suite: Suite, out: str | Path, *, scores: bool = True,
              args: dict[str, Any] | None = None, damping: float | None = None) -> Attribution:
    """Run method or peer ``name`` on ``variant``: its (n_query, n_train) scores when ``scores``,
    else its (n_train,) self-influence (None, with a note, where the bench skips it).

    ``args`` replaces the bench's arguments (:func:`method_args`; for a peer, ``damping`` in
    the peer's own units replaces :func:`peer_damping`) and runs the method even where the
    bench skips it. ``damping`` (a relative damping, ours: TRAK's or the influence family's)
    replaces only the bench's ridge: a peer gets it converted into its units.
    """
    if damping is not None and args is None:
        if name in method_names():
            with_ridge = {**method_args(name, task, variant), ridge_arg(name): float(damping)}
            return _dispatch(name, task, variant, suite, out, scores, with_ridge, skips=True)
        return _dispatch(name, task, variant, suite, out, scores,
                         {"damping": peer_damping(name, task, variant, relative=float(damping))}, skips=True)
    return _dispatch(name, task, variant, suite, out, scores, args, skips=args is None)


def _dispatch(name: str, task: BenchTask, variant: BenchVariant, suite: Suite, out: str | Path, scores: bool,
              args: dict[str, Any] | None, skips: bool) -> Attribution:
    skipped = dict(task.skip_methods).get(name)
    if skipped is not None and skips:
        return Attribution(note=f"not run on this task: {skipped}")
    reason = None if scores or not skips else skip_self_influence(
        name, task, len(variant.prepared.train_set.labels), int(variant.store.settings["n_params"]))
    if reason is not None:
        return Attribution(note=f"no AUC: {reason}")
    if name in method_names():
        return _ours(name, task, variant, scores, args)
    return _peer(name, task, variant, suite, Path(out), scores, args)


def _ours(name: str, task: BenchTask, variant: BenchVariant, scores: bool, args: dict[str, Any] | None = None) -> Attribution:
    try:
        method = get_method(name, **(method_args(name, task, variant) if args is None else args))
        with PeakMemory() as peak:
            start = time.perf_counter()
            store = variant.store if method.requires_features or method.uses_store_folder else None
            method.fit(store, "train", variant.context)
            values = method.score("query", topk=1).values if scores else None
            self_influence = None if scores else method.self_influence()
            seconds = time.perf_counter() - start
    except AttributorError as err:
        return Attribution(note=f"not run: {err}")
    note = "; ".join(f"{key} {value}" for key, value in method.fit_info().items() if key.split(": ")[-1] in _NOTED_FIT_INFO)
    return Attribution(values, self_influence, variant.featurize_s if method.requires_features else None, seconds, peak.rise_mb, note)


#: Fitted facts a method reports (``Method.fit_info``) that go into the run's notes.
_NOTED_FIT_INFO = ("damping_selected", "damping_used", "damping_at_grid_edge", "unconverged")


def _peer(name: str, task: BenchTask, variant: BenchVariant, suite: Suite, out: Path, scores: bool,
          args: dict[str, Any] | None = None) -> Attribution:
    from attributor.evaluation.peers import run_peer

    prepared = variant.prepared
    damping = (args or {}).get("damping", None)
    if damping is None:
        damping = peer_damping(name, task, variant)
    train = (torch.as_tensor(prepared.train_set.inputs), prepared.train_set.labels)
    queries = (torch.as_tensor(prepared.queries.inputs), prepared.queries.labels)
    try:
        with PeakMemory() as peak:
            result = run_peer(name, prepared.model(), train, queries, prepared.checkpoints, proj_dim=suite.proj_dim,
                              damping=damping,
                              learning_rates=prepared.learning_rates, seed=variant.projection_seed,
                              work_dir=out / "tasks" / task.name / prepared.variant / "peers" / name,
                              self_influence=not scores)
    except AttributorError as err:
        return Attribution(note=f"not run: {err}")
    return Attribution(result.scores if scores else None, result.self_influence, result.featurize_s, result.score_s, peak.rise_mb)


def peer_damping(name: str, task: BenchTask, variant: BenchVariant, relative: float | None = None) -> float:
    """The peer's absolute ridge, in the peer's own units, that matches the ridge ours gets.

    TRAK peers match our TRAK's ``lambda = d * trace(K)/k`` (``d``: ``relative``, default
    the relative damping our TRAK uses, :func:`method_args`). Our features phi = P^T g with
    P (p, k) of N(0, 1/k) entries, so E|phi|^2 = |g|^2 and the peer's kernel is c^2 times
    ours in expectation, with c^2 the scale of its features:

    * traker (``BasicProjector``, N(0, 1) entries, gradients divided by sqrt(p)):
      x = R^T g / sqrt(p), c^2 = k/p, hence ``lambda = d * mean_m trace(K_m) / p``
      (``NoOpProjector``: x = g / sqrt(p), c^2 = 1/p with k = p);
    * dattri-trak (dattri 0.3.0: gradients divided by sqrt(p), ``norm_scaler``, then its
      ``BasicProjector``, N(0, 1) entries divided by sqrt(proj_dim)): x = R^T g / sqrt(p k),
      c^2 = 1/p, hence ``lambda = d * mean_m trace(K_m) / (p k)``. Before issue 20 it got
      traker's d * trace / p, a ridge k times heavier than ours (relative 10.24 for 0.01).

    (:func:`attributor.evaluation.peers.peer_ridge` is the conversion.)

    Both apply one ridge to every checkpoint (ours: ``damping_scale="shared"`` is the same
    rule). dattri-if damps the Hessian of the MEAN training loss, H/n + lambda I: on convex
    tasks it gets lambda = l2 / n (our objective sum_i l_i + l2/2 |theta|^2 has Hessian
    H + l2 I = n (H/n + l2/n I)); elsewhere ours damps the summed curvature by
    d * sum_i |grad l_i|^2 / p (``d`` the relative damping of our ``if-explicit``), which is
    lambda = d * sum_i |grad l_i|^2 / (n p) on the mean scale (exact gradients, last checkpoint).
    dattri-tracin has no damping (0).
    """
    store = variant.store
    p = float(store.settings["n_params"])
    if name == "dattri-tracin":
        return 0.0
    if name == "dattri-if":
        n = store.split_size("train")
        if task.convex and relative is None:
            return task.l2 / n
        d = relative if relative is not None else method_args("if-explicit", task, variant).get("damping", 1e-2)
        return d * influence_damping_unit(variant) / n
    if relative is None:
        relative = _trak_relative_damping(task, variant)
    mean_trace = float(np.mean([sum(float((np.asarray(f, dtype=np.float64) ** 2).sum()) for _, _, f, _ in store.iter_chunks("train", c))
                                for c in range(store.n_checkpoints)]))
    from attributor.evaluation.peers import peer_ridge

    return peer_ridge(name, relative, mean_trace, int(p), store.dim)


def _trak_relative_damping(task: BenchTask, variant: BenchVariant) -> float:
    """The relative damping d our TRAK runs with on this variant (``"auto"`` resolved on its store)."""
    from attributor.methods.trak import select_damping

    damping = method_args("trak", task, variant).get("damping", get_method("trak").damping)
    if damping == "auto":
        return select_damping(variant.store, "train")
    return float(damping)


def influence_damping_unit(variant: BenchVariant) -> float:
    """sum_i |grad l_i|^2 / p at the last checkpoint (exact per-example gradients, float64):
    the unit of the influence family's relative damping (lambda = damping * unit)."""
    from attributor.features.gradients import per_example_gradients, tracked_parameter_names
    from attributor.methods._context import model_at

    context = variant.context
    model = model_at(context.model, context.checkpoints[-1])
    names = tracked_parameter_names(model, context.task)
    data = context.dataset("train")
    total = 0.0
    for start in range(0, len(data.labels), 512):
        batch = (torch.as_tensor(data.inputs[start : start + 512]).to(torch.float64), data.labels[start : start + 512])
        total += float((per_example_gradients(model, context.task, batch, names, function="train_loss") ** 2).sum())
    return total / int(variant.store.settings["n_params"])


def _convex_ground_truth(task, clean, recipe, suite, out, executor, progress) -> dict[str, Any]:
    """Exact LOO retrains for ``n_loo`` training points and the data brittleness needs."""
    n_train = len(clean.prepared.data.y_train)
    rng = np.random.default_rng(task.seed + 1)
    removed = np.sort(rng.choice(n_train, size=min(suite.n_loo, n_train), replace=False))
    masks = np.ones((len(removed) + 1, n_train), dtype=bool)
    for row, j in enumerate(removed, start=1):
        masks[row, j] = False
    outputs = retrain(recipe, masks, out / "cache", executor=executor, progress=progress)
    labels = recipe.y_query
    correct = np.flatnonzero(outputs["prediction"][0] == labels)
    return {"loo": (removed, outputs["measurement"][0], outputs["measurement"][1:]),
            "brittle_queries": correct[: suite.brittleness_queries], "labels": labels}


def _brittleness_row(task, name, scores, recipe, extras, suite, out, executor, progress) -> dict[str, Any]:
    result = brittleness(scores, recipe, extras["brittle_queries"], extras["labels"], out / "cache",
                         ks=suite.brittleness_ks, seed=task.seed, executor=executor, progress=progress)
    return {"task": task.name, "method": name, "queries": len(extras["brittle_queries"]),
            "flipped_fraction": result["flipped_fraction"], "median_flip_k": _median(result["flip_k"]),
            "flipped_fraction_random": result["flipped_fraction_random"], "median_flip_k_random": _median(result["flip_k_random"])}


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _write(out: Path, rows, loo_rows, brittle_rows, notes, suite: Suite, per_query=(), damping_rows=()) -> None:
    atomic_write_text(out / "results.csv", _csv(COLUMNS, rows))
    atomic_write_text(out / "damping.csv", _csv(DAMPING_COLUMNS, list(damping_rows)))
    # every query's Spearman correlation, so that two methods' LDS can be compared paired by query
    atomic_write_text(out / "lds_per_query.csv", _csv(["task", "method", "query", "spearman"], list(per_query)))
    loo_columns = ["task", "method", "loo_pearson", "loo_spearman"]
    brittle_columns = ["task", "method", "queries", "flipped_fraction", "median_flip_k", "flipped_fraction_random", "median_flip_k_random"]
    atomic_write_text(out / "loo.csv", _csv(loo_columns, loo_rows))
    atomic_write_text(out / "brittleness.csv", _csv(brittle_columns, brittle_rows))
    tasks = ", ".join(f"{t.name} ({t.n_queries} queries)" for t in suite.tasks)
    sections = [
        Section("Attribution quality and cost", text=(
            f"Tasks: {tasks}. LDS over {suite.n_subsets} retrains on random halves of the training set, mean Spearman "
            "over queries with a bootstrap 95% interval; lds_random is the LDS of random scores. auc is the ROC AUC of "
            "self-influence for 10% flipped training labels (auc_random: a random ranking). featurize_s is the "
            "feature-store time a method reads (shared by the gradient-feature methods), score_s its fit + score or "
            "fit + self-influence time, peak_mb how far the process's resident memory rose above its level when the method started (its own footprint)."),
            tables=[Table("results.csv", COLUMNS, [[_cell(row.get(c)) for c in COLUMNS] for row in rows])]),
    ]
    if loo_rows:
        sections.append(Section("Leave-one-out correlation (convex tasks)", text=(
            f"Exact retrains without each of {suite.n_loo} training points; the correlation, per query, of the score with "
            "f(z; S) - f(z; S without j), averaged over queries."),
            tables=[Table("loo.csv", loo_columns, [[_cell(r.get(c)) for c in loo_columns] for r in loo_rows])]))
    if brittle_rows:
        sections.append(Section("Brittleness (convex tasks)", text=(
            f"Removing a query's top-k proponents (k in {list(suite.brittleness_ks)}) and retraining: the fraction of "
            "queries whose prediction flips and the median smallest flipping k, against removing k random examples."),
            tables=[Table("brittleness.csv", brittle_columns, [[_cell(r.get(c)) for c in brittle_columns] for r in brittle_rows])]))
    if notes:
        sections.append(Section("Notes", text="\n\n".join(notes)))
    write_markdown_report(out / "results.md", "attributor bench", sections)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    return value


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()
