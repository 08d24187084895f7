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
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
from attributor.pipelines.bench_tasks import SUITES, BenchTask, PreparedTask, Suite, prepare
from attributor.progress import progress_bar
from attributor.reports import Section, Table, write_markdown_report
from attributor.tasks import ClassificationTask

__all__ = ["run_bench", "COLUMNS"]

COLUMNS = ["task", "method", "lds", "lds_low", "lds_high", "lds_random", "auc", "auc_random", "featurize_s", "score_s", "peak_mb"]


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
class _Variant:
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
    "if-cg": {"max_iter": 50},
    "if-lissa": {"depth": 200},
    # the exact Gauss-Newton inverse on the MLP tasks too (9,610 parameters: a 0.7 GB matrix)
    "if-explicit": {"max_params": 10_000},
}


#: Self-influence the bench does not compute (no AUC row), with the reason.
SKIP_SELF_INFLUENCE = {
    "dattri-if": "dattri's IF self-influence is one CG solve per training example (about 10 minutes on the digits MLP)",
}

#: Iterative inverse solvers whose self-influence is one capped solve per block of training
#: examples, each iteration a full-data curvature product: skipped above this many training
#: examples on non-convex tasks, where they also do not converge within the cap.
ITERATIVE_SELF_INFLUENCE = ("if-cg", "if-lissa")
ITERATIVE_SELF_INFLUENCE_MAX_TRAIN = 2000


def skip_self_influence(name: str, task: BenchTask, n_train: int) -> str | None:
    """Why the bench does not compute ``name``'s self-influence on ``task`` (None: it does)."""
    if name in SKIP_SELF_INFLUENCE:
        return SKIP_SELF_INFLUENCE[name]
    if name in ITERATIVE_SELF_INFLUENCE and not task.convex and n_train > ITERATIVE_SELF_INFLUENCE_MAX_TRAIN:
        return (f"{name}'s self-influence is one capped iterative solve per block of {n_train} training examples "
                f"(over 10 minutes on 2 cores); skipped above {ITERATIVE_SELF_INFLUENCE_MAX_TRAIN} on non-convex tasks")
    return None


def method_args(name: str, task: BenchTask, variant: "_Variant | None" = None) -> dict[str, Any]:
    """The bench's arguments for method ``name`` (every method runs with its defaults otherwise).

    On convex tasks the objective is sum_i l_i + l2/2 |theta|^2, whose Hessian is H + l2 I,
    so the influence-function family gets the relative damping that makes its lambda equal
    l2: then if-explicit is the exact Newton step that LOO correlation checks.
    """
    import inspect

    from attributor.methods import Method

    args = dict(METHOD_ARGS.get(name, {}))
    takes_damping = "damping" in inspect.signature(Method.lookup(name).__init__).parameters
    if task.convex and name.startswith("if-") and takes_damping and variant is not None:
        args["damping"] = _relative_damping_for_l2(task, variant)
    return args


def _relative_damping_for_l2(task: BenchTask, variant: "_Variant") -> float:
    """d such that d * sum_i |grad l_i|^2 / p = l2 (the influence family's damping rule)."""
    from attributor.features.gradients import per_example_gradients, tracked_parameter_names
    from attributor.methods._context import model_at

    context = variant.context
    model = model_at(context.model, context.checkpoints[-1])
    names = tracked_parameter_names(model, context.task)
    data = context.dataset("train")
    batch = (data.inputs.to(torch.float64), data.labels)
    grads = per_example_gradients(model, context.task, batch, names, function="train_loss")
    return task.l2 * grads.shape[1] / float((grads**2).sum())


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
) -> list[dict[str, Any]]:
    """Run a suite (``"quick"``, ``"full"`` or a :class:`Suite`) into ``out``; return the result rows.

    ``projection_seed`` (default: each task's seed) seeds the random projections of ours and
    the peers; data, training and the LDS subsets keep the task's seed, so the retrains are
    shared (cached) between projection seeds.
    """
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ConfigError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
        suite = SUITES[suite]
    out = Path(out)
    ours = list(methods) if methods is not None else method_names()
    unknown = sorted(set(ours) - set(method_names()) - set(_peer_names()))
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; ours: {', '.join(method_names())}; peers: {', '.join(_peer_names())}")
    use_peers = suite.peers if peers is None else peers
    peer_list = [m for m in ours if m in _peer_names()] or (list(_peer_names()) if use_peers and methods is None else [])
    ours = [m for m in ours if m in method_names()]
    executor = executor or LocalExecutor()
    rows, loo_rows, brittle_rows, notes = [], [], [], []
    for task in suite.tasks:
        log(f"task {task.name}: preparing")
        seed = task.seed if projection_seed is None else projection_seed
        clean = _variant(task, "clean", out, suite, progress, projection, seed)
        noisy = _variant(task, "noisy", out, suite, progress, projection, seed)
        recipe = task.recipe(clean.prepared.data)
        n_train = len(clean.prepared.data.y_train)
        masks = random_subsets(n_train, suite.n_subsets, seed=task.seed)
        actual = retrain(recipe, masks, out / "cache", executor=executor, progress=progress)["measurement"]
        chance = lds_random(masks, actual, n_train, seed=task.seed)
        flags = noisy.prepared.data.flipped
        extras = _convex_ground_truth(task, clean, recipe, suite, out, executor, progress) if task.convex else None
        for name in [*ours, *peer_list]:
            log(f"task {task.name}: {name}")
            on_clean = _attribute(name, task, clean, suite, out, scores=True)
            on_noisy = _attribute(name, task, noisy, suite, out, scores=False)
            row = {"task": task.name, "method": name, "lds_random": chance, "featurize_s": on_clean.featurize_s,
                   "score_s": on_clean.score_s, "peak_mb": on_clean.peak_mb}
            if on_clean.scores is not None:
                result = lds(on_clean.scores, masks, actual, seed=task.seed)
                row.update(lds=result["lds"], lds_low=result["lds_low"], lds_high=result["lds_high"])
            if on_noisy.self_influence is not None:
                auc = detection_auc(on_noisy.self_influence, flags)
                row.update(auc=auc["auc"], auc_random=auc["auc_random"])
            for note in {on_clean.note, on_noisy.note} - {""}:
                notes.append(f"{task.name} / {name}: {note}")
            rows.append(row)
            if extras is not None and on_clean.scores is not None:
                loo_rows.append({"task": task.name, "method": name, **loo_correlation(on_clean.scores, *extras["loo"])})
                brittle_rows.append(_brittleness_row(task, name, on_clean.scores, recipe, extras, suite, out, executor, progress))
        if extras is not None:
            random_scores = np.random.default_rng(task.seed).standard_normal((task.n_queries, n_train))
            loo_rows.append({"task": task.name, "method": "random scores", **loo_correlation(random_scores, *extras["loo"])})
    _write(out, rows, loo_rows, brittle_rows, notes, suite)
    return rows


def _peer_names() -> tuple[str, ...]:
    try:
        from attributor.evaluation.peers import PEERS
    except ImportError:  # pragma: no cover - the module ships with attributor
        return ()
    return PEERS


def _variant(task: BenchTask, variant: str, out: Path, suite: Suite, progress: bool, projection: str = "gaussian",
             projection_seed: int | None = None) -> _Variant:
    prepared = prepare(task, variant, out / "tasks")
    seed = task.seed if projection_seed is None else projection_seed
    projector = make_projector(projection, suite.proj_dim, seed=seed)
    start = time.perf_counter()
    path = prepared.folder / "store"
    for split, dataset in (("train", prepared.train_set), ("query", prepared.queries)):
        store = featurize(prepared.model(), ClassificationTask(), dataset, prepared.checkpoints, path, projector,
                          split=split, dtype="float64" if task.dtype == "float64" else "float32",
                          progress=progress, overwrite=True)
    return _Variant(prepared, store, time.perf_counter() - start, seed)


def _attribute(name: str, task: BenchTask, variant: _Variant, suite: Suite, out: Path, *, scores: bool) -> Attribution:
    reason = None if scores else skip_self_influence(name, task, len(variant.prepared.train_set.labels))
    if reason is not None:
        return Attribution(note=f"no AUC: {reason}")
    if name in method_names():
        return _ours(name, task, variant, scores)
    return _peer(name, task, variant, suite, out, scores)


def _ours(name: str, task: BenchTask, variant: _Variant, scores: bool) -> Attribution:
    try:
        method = get_method(name, **method_args(name, task, variant))
        with PeakMemory() as peak:
            start = time.perf_counter()
            store = variant.store if method.requires_features or method.uses_store_folder else None
            method.fit(store, "train", variant.context)
            values = method.score("query", topk=1).values if scores else None
            self_influence = None if scores else method.self_influence()
            seconds = time.perf_counter() - start
    except AttributorError as err:
        return Attribution(note=f"not run: {err}")
    return Attribution(values, self_influence, variant.featurize_s if method.requires_features else None, seconds, peak.rise_mb)


def _peer(name: str, task: BenchTask, variant: _Variant, suite: Suite, out: Path, scores: bool) -> Attribution:
    from attributor.evaluation.peers import run_peer

    prepared = variant.prepared
    train = (torch.as_tensor(prepared.train_set.inputs), prepared.train_set.labels)
    queries = (torch.as_tensor(prepared.queries.inputs), prepared.queries.labels)
    try:
        with PeakMemory() as peak:
            result = run_peer(name, prepared.model(), train, queries, prepared.checkpoints, proj_dim=suite.proj_dim,
                              damping=_peer_damping(name, variant),
                              learning_rates=prepared.learning_rates, seed=variant.projection_seed,
                              work_dir=out / "tasks" / task.name / prepared.variant / "peers" / name,
                              self_influence=not scores)
    except AttributorError as err:
        return Attribution(note=f"not run: {err}")
    return Attribution(result.scores if scores else None, result.self_influence, result.featurize_s, result.score_s, peak.rise_mb)


def _peer_damping(name: str, variant: _Variant, relative: float = 1e-2) -> float:
    """The peer's absolute ridge that matches our relative damping (1e-2, our default).

    Ours: lambda = d * trace(K)/k on features phi with E|phi|^2 = |g|^2. traker and dattri
    scale their projected gradients so that E|x|^2 = k |g|^2 / p (p = parameters), hence
    lambda_peer = d * trace(K_ours) / p, averaged over checkpoints. dattri's IF damps the
    Hessian of the MEAN loss; ours damps the summed Fisher by d * sum_i |grad l_i|^2 / p,
    i.e. d * mean_i (Q_i^2 |phi_i|^2) / p on the mean scale (grad l = -Q grad f).
    """
    store = variant.store
    p = float(store.settings["n_params"])
    if name == "dattri-if":
        last = store.n_checkpoints - 1
        total = sum(float(((np.asarray(f, dtype=np.float64) ** 2).sum(axis=1) * np.asarray(q, dtype=np.float64) ** 2).sum())
                    for _, _, f, q in store.iter_chunks("train", last))
        return relative * total / store.split_size("train") / p
    traces = [sum(float((np.asarray(f, dtype=np.float64) ** 2).sum()) for _, _, f, _ in store.iter_chunks("train", c))
              for c in range(store.n_checkpoints)]
    return relative * float(np.mean(traces)) / p


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


def _write(out: Path, rows, loo_rows, brittle_rows, notes, suite: Suite) -> None:
    atomic_write_text(out / "results.csv", _csv(COLUMNS, rows))
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
