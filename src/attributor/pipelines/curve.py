"""``attributor bench --curve``: LDS against the number of models, the projection dimension and compute.

For each task of a bench suite, on the bench's own LDS ground truth (the same random-half
masks and the same retrain cache, ``OUT/cache``):

* ``independent``: M models trained with different seeds on the full training set
  (:func:`attributor.evaluation.ensemble.train_models`, TRAK's paper setting), M in
  ``grid.models``, one final checkpoint each;
* ``trajectory``: the bench's checkpoints along one training run (what ``attributor bench``
  uses), for comparison.

Methods and the knobs that apply to them: ``trak`` and ``tracin`` (ours, read the
FeatureStore: M and k), ``traker-trak`` and ``dattri-trak`` (the peers, their own
projection at k: M and k), ``if-ekfac`` and ``if-lissa`` (one model at a time, no
projection: the M-model ensemble is the mean of the M models' score matrices). The
peers run on a cross of the grid by default (:class:`CurveGrid`). Every
store and every peer run is featurized for exactly its M checkpoints at its k, so its
featurize time is what that setting costs.

Compute, in seconds on this machine: ``train_s`` trains the M - 1 models beyond the one
being attributed (the trajectory's checkpoints are free), ``featurize_s`` the feature
store of ours or the peer's own featurize phase, ``score_s`` fit + score; ``total_s`` their
sum. The bench's methods run with the bench's arguments (``bench.method_args``, the
peers' damping from ``bench.peer_damping``).

Outputs in ``OUT/curve/``: curve.csv (one row per task, method, setting, M, k), curve.md
(LDS tables per task, k across), curve.html (plotly, offline: the library is embedded)
and curve.png (matplotlib, when installed): LDS against total seconds, one panel per task.
Models, stores and peer scratch live under ``OUT/curve/`` too; the bench's folders are
only read (its retrain cache is shared).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attributor._io import atomic_write_bytes, atomic_write_text
from attributor.errors import ConfigError
from attributor.evaluation.ensemble import train_models
from attributor.evaluation.lds import lds, lds_random
from attributor.evaluation.retrain import Executor, LocalExecutor, random_subsets, retrain
from attributor.features import featurize, make_projector
from attributor.pipelines.bench import BenchVariant, attribute, method_args, select_tasks
from attributor.pipelines.bench_tasks import BenchTask, PreparedTask, Suite, prepare
from attributor.tasks import ClassificationTask

__all__ = ["CurveGrid", "run_curve", "CURVE_COLUMNS"]

CURVE_COLUMNS = ["task", "method", "setting", "models", "checkpoints", "k", "lds", "lds_low", "lds_high", "lds_random",
                 "train_s", "featurize_s", "score_s", "total_s", "note"]

#: Methods reading the projected features (both knobs apply).
STORE_METHODS = ("trak", "tracin")
#: Methods run on one model at a time (no projection): ensembled by averaging scores.
PER_MODEL_METHODS = ("if-ekfac", "if-lissa")
#: Peers with a projection and a checkpoint ensemble.
CURVE_PEERS = ("traker-trak", "dattri-trak")


@dataclass(frozen=True)
class CurveGrid:
    """The grid: numbers of independent models, projection dimensions, and who runs.

    ``peer_grid="cross"`` (default) runs the peers on the M-curve at the suite's k, the
    k-curve at M = 1 and the trajectory (their own featurize dominates the curve's cost on
    2 cores); ``"full"`` on every (M, k).
    """

    models: tuple[int, ...] = (1, 2, 5, 10)
    dims: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    methods: tuple[str, ...] = (*STORE_METHODS, *PER_MODEL_METHODS)
    peers: tuple[str, ...] = CURVE_PEERS
    peer_grid: str = "cross"
    trajectory: bool = True

    def __post_init__(self) -> None:
        for name, values in (("models", self.models), ("dims", self.dims)):
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"curve {name} must be positive integers, got {list(values)}")
        unknown = sorted(set(self.methods) - set(STORE_METHODS) - set(PER_MODEL_METHODS))
        if unknown:
            raise ConfigError(f"the curve runs {', '.join(STORE_METHODS + PER_MODEL_METHODS)}; got {unknown}")
        if sorted(set(self.peers) - set(CURVE_PEERS)):
            raise ConfigError(f"the curve's peers are {', '.join(CURVE_PEERS)}; got {list(self.peers)}")
        if self.peer_grid not in ("full", "cross"):
            raise ConfigError(f"peer_grid must be 'full' or 'cross', got {self.peer_grid!r}")
        object.__setattr__(self, "models", tuple(sorted(set(self.models))))
        object.__setattr__(self, "dims", tuple(sorted(set(self.dims))))


def run_curve(
    suite: str | Suite,
    out: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    grid: CurveGrid | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict[str, Any]]:
    """Run the curve for the suite's tasks (or those named in ``tasks``) into ``out/curve``; return its rows."""
    suite = select_tasks(suite, tasks)
    grid = grid or CurveGrid()
    out = Path(out)
    folder = out / "curve"
    executor = executor or LocalExecutor()
    rows: list[dict[str, Any]] = []
    for task in suite.tasks:
        rows += _task_curve(task, suite, out, folder, grid, executor, progress, log)
        write_curve(folder, rows)  # after every task: a long run keeps what it has measured
    return rows


def _task_curve(task: BenchTask, suite: Suite, out: Path, folder: Path, grid: CurveGrid, executor: Executor,
                progress: bool, log: Callable[[str], None]) -> list[dict[str, Any]]:
    log(f"curve {task.name}: ground truth and {max(grid.models)} independent models")
    prepared = prepare(task, "clean", folder / "tasks")
    recipe = task.recipe(prepared.data)
    n_train = len(prepared.data.y_train)
    masks = random_subsets(n_train, suite.n_subsets, seed=task.seed)  # the bench's masks and cache
    actual = retrain(recipe, masks, out / "cache", executor=executor, progress=progress)["measurement"]
    chance = lds_random(masks, actual, n_train, seed=task.seed)
    paths, train_seconds = train_models(recipe, max(grid.models), folder / "models" / task.name, executor=executor)
    extra_train = {m: float(sum(train_seconds[1:m])) for m in grid.models}
    rates = None if task.convex else [task.lr] * len(paths)
    rows: list[dict[str, Any]] = []

    def add(method: str, setting: str, models: int | None, checkpoints: int, k: int | None, scores: np.ndarray | None,
            train_s: float, featurize_s: float | None, score_s: float, note: str = "") -> None:
        row = {"task": task.name, "method": method, "setting": setting, "models": models, "checkpoints": checkpoints, "k": k,
               "lds_random": chance, "train_s": train_s, "featurize_s": featurize_s, "score_s": score_s,
               "total_s": train_s + (featurize_s or 0.0) + score_s, "note": note}
        if scores is not None:
            result = lds(scores, masks, actual, seed=task.seed)
            row.update(lds=result["lds"], lds_low=result["lds_low"], lds_high=result["lds_high"])
        rows.append(row)
        log(f"curve {task.name}: {method} {setting} M={models} k={k}: lds {row.get('lds', float('nan')):.3f}, {row['total_s']:.1f} s")

    settings: list[tuple[str, int | None, list[Path], list[float] | None]] = [
        ("independent", m, paths[:m], None if rates is None else rates[:m]) for m in grid.models]
    if grid.trajectory:
        settings.append(("trajectory", None, list(prepared.checkpoints), prepared.learning_rates))
    for k in grid.dims:
        sized = dataclasses.replace(suite, proj_dim=k)
        for setting, models, checkpoints, lrs in settings:
            variant = _featurized(task, prepared, checkpoints, lrs, k, folder / "stores" / task.name, progress)
            train_s = extra_train[models] if models is not None else 0.0
            for name in (m for m in grid.methods if m in STORE_METHODS):
                done = attribute(name, task, variant, sized, folder, scores=True)
                add(name, setting, models, len(checkpoints), k, done.scores, train_s, variant.featurize_s, done.score_s, done.note)
            peer_point = grid.peer_grid == "full" or k == suite.proj_dim or models in (1, None)
            for name in grid.peers if peer_point else ():
                done = attribute(name, task, variant, sized, folder, scores=True)
                add(name, setting, models, len(checkpoints), k, done.scores, train_s, done.featurize_s, done.score_s, done.note)
            if setting == "independent" and models == max(grid.models) and k == grid.dims[0]:
                _per_model(task, variant, sized, folder, grid, extra_train, add)
        shutil.rmtree(folder / "stores" / task.name, ignore_errors=True)  # up to n x k x M floats per store: not kept
    return rows


def _per_model(task: BenchTask, variant: BenchVariant, suite: Suite, folder: Path, grid: CurveGrid,
               extra_train: dict[int, float], add: Callable[..., None]) -> None:
    """EK-FAC and LiSSA on each independent model; the M-ensemble is the mean of the first M score matrices."""
    n_models = len(variant.prepared.checkpoints)
    for name in (m for m in grid.methods if m in PER_MODEL_METHODS):
        matrices, seconds, notes = [], [], set()
        for member in range(n_models):
            args = {**method_args(name, task, variant), "checkpoint": member}
            done = attribute(name, task, variant, suite, folder, scores=True, args=args)
            if done.scores is None:
                notes.add(done.note)
                break
            matrices.append(done.scores)
            seconds.append(done.score_s)
        for m in grid.models:
            if m <= len(matrices):
                add(name, "independent", m, m, None, np.mean(matrices[:m], axis=0), extra_train[m], None, float(sum(seconds[:m])))
            else:
                add(name, "independent", m, m, None, None, extra_train[m], None, float(sum(seconds)), "; ".join(sorted(notes)))


def _featurized(task: BenchTask, prepared: PreparedTask, checkpoints: list[Path], rates: list[float] | None, k: int,
                folder: Path, progress: bool) -> BenchVariant:
    """A BenchVariant whose model ensemble is ``checkpoints``, featurized at dimension ``k`` (timed)."""
    view = dataclasses.replace(prepared, checkpoints=list(checkpoints), learning_rates=rates)
    projector = make_projector("gaussian", k, seed=task.seed)
    start = time.perf_counter()
    path = folder / f"k{k}"
    store = None
    for split, dataset in (("train", view.train_set), ("query", view.queries)):
        store = featurize(view.model(), ClassificationTask(), dataset, view.checkpoints, path, projector, split=split,
                          dtype="float64" if task.dtype == "float64" else "float32", progress=progress, overwrite=True)
    return BenchVariant(view, store, time.perf_counter() - start, task.seed)


# -- outputs -------------------------------------------------------------------------------
def write_curve(folder: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """curve.csv, curve.md, curve.html (plotly, if installed) and curve.png (matplotlib, if installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {"csv": folder / "curve.csv", "md": folder / "curve.md"}
    atomic_write_text(written["csv"], _csv(rows))
    atomic_write_text(written["md"], curve_markdown(rows))
    try:
        written["html"] = _plotly(folder / "curve.html", rows)
    except ImportError:
        pass
    try:
        written["png"] = _matplotlib(folder / "curve.png", rows)
    except ImportError:
        pass
    return written


def _cell(value: Any, digits: int = 4) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, digits)
    return value


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CURVE_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in CURVE_COLUMNS])
    return buffer.getvalue()


def _series(row: dict[str, Any]) -> str:
    if row["setting"] == "trajectory":
        return f"{row['method']} trajectory ({row['checkpoints']} ckpts)"
    return f"{row['method']} M={row['models']}"


def curve_markdown(rows: list[dict[str, Any]]) -> str:
    """Per task: one line per method and ensemble, one column per k, cells 'LDS (total seconds)'."""
    lines = ["# LDS against the number of models, the projection dimension and compute", "",
             "Cells: LDS (total seconds: extra models' training + featurize + fit and score). "
             "M = independently trained models (final checkpoints); trajectory = the bench's checkpoints of one run; "
             "k = projection dimension (none for EK-FAC and LiSSA, which ensemble by averaging per-model scores).", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        dims = sorted({r["k"] for r in mine if r["k"] is not None})
        chance = mine[0]["lds_random"]
        lines += [f"## {task}", "", f"LDS of random scores: {chance:.3f}.", "",
                  "| method | ensemble | " + " | ".join(f"k={k}" for k in dims) + " | no projection |",
                  "|---|---|" + "---:|" * (len(dims) + 1)]
        for series in dict.fromkeys((r["method"], _series(r).split(" ", 1)[1]) for r in mine):
            cells = []
            for k in [*dims, None]:
                hit = [r for r in mine if (r["method"], _series(r).split(" ", 1)[1]) == series and r["k"] == k]
                cells.append(f"{hit[0]['lds']:.3f} ({hit[0]['total_s']:.1f})" if hit and "lds" in hit[0] else ("n/a" if hit else ""))
            lines.append(f"| {series[0]} | {series[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _points(rows: list[dict[str, Any]], task: str) -> dict[str, list[dict[str, Any]]]:
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["task"] == task and "lds" in row:
            key = row["method"] + (" (trajectory)" if row["setting"] == "trajectory" else "")
            series.setdefault(key, []).append(row)
    return series


def _plotly(path: Path, rows: list[dict[str, Any]]) -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    figure = make_subplots(rows=1, cols=len(tasks), subplot_titles=tasks, shared_yaxes=True)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    names = list(dict.fromkeys(key for task in tasks for key in _points(rows, task)))
    for col, task in enumerate(tasks, start=1):
        for key, points in _points(rows, task).items():
            labels = [f"M={p['models'] or 'traj'} k={p['k'] or '-'}" for p in points]
            figure.add_trace(go.Scatter(
                x=[max(p["total_s"], 1e-3) for p in points], y=[p["lds"] for p in points], mode="markers", name=key,
                legendgroup=key, showlegend=col == 1, text=labels, marker={"color": colors[names.index(key) % len(colors)],
                                                                            "size": [6 + 2 * (p["models"] or 1) ** 0.5 for p in points]},
                hovertemplate="%{text}<br>%{x:.1f} s<br>LDS %{y:.3f}<extra>" + key + "</extra>"), row=1, col=col)
        figure.update_xaxes(type="log", title_text="total seconds", row=1, col=col)
    figure.update_yaxes(title_text="LDS", row=1, col=1)
    figure.update_layout(title="LDS against compute (marker size: number of models)", height=480, width=420 * len(tasks) + 200)
    atomic_write_text(path, figure.to_html(full_html=True, include_plotlyjs=True))
    return path


def _matplotlib(path: Path, rows: list[dict[str, Any]]) -> Path:
    from attributor.reports._figures import DPI, pyplot

    plt = pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 1.5, 4), sharey=True, squeeze=False)
    names = list(dict.fromkeys(key for task in tasks for key in _points(rows, task)))
    cmap = plt.get_cmap("tab10")
    try:
        for ax, task in zip(axes[0], tasks):
            for key, points in _points(rows, task).items():
                ax.scatter([max(p["total_s"], 1e-3) for p in points], [p["lds"] for p in points], s=[12 + 10 * (p["models"] or 1) ** 0.5 for p in points],
                           color=cmap(names.index(key) % 10), label=key, alpha=0.8)
            ax.set_xscale("log")
            ax.set_title(task)
            ax.set_xlabel("total seconds")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("LDS")
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path
