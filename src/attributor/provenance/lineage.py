"""Lineage: for each model, its most likely parent(s), with a score calibrated on another zoo.

Two steps, two commands:

1. ``attributor provenance calibrate``: on a *calibration zoo* (whose ``model_info`` knows
   every true parent) fit, per fingerprint method and its metric, a threshold and a
   probability map, and save them as ``calibration.json`` (:class:`Calibration`).
2. ``attributor provenance lineage``: on the evaluated zoo (another zoo, e.g. built with
   another ``--seed``; the very matrix the calibration was fitted on is refused) call each
   model's parent(s) with that calibration (:func:`infer_lineage`), write ``lineage.json``,
   ``lineage.csv`` and ``lineage.html``, and, when the evaluated zoo's model info knows the
   true parents, score the answer (:func:`evaluate_lineage`).

**Calibration**: see :mod:`attributor.provenance.calibration` (a threshold and a monotone
map from similarity to P(edge), fitted on a zoo whose parents are known).

**Direction.** A similarity is symmetric, so "who is the parent of whom" needs a rule. Two
models are *relatives* when their similarity reaches the threshold. Models are ranked by how
root-like they are: a model whose model type is ``Base`` first (a Base has no parent), then
by the number of relatives, then by the mean similarity to them (a parent sits at the centre
of its derivatives: they each moved away from it in their own direction, so it has at least
as many relatives as any of them and is closer to them than they are to each other), then by
model id. A model's candidate parents are its relatives ranked above it; its parent is the
most similar candidate, except that when a more root-like candidate is closer to that one
than the model is (the two are nearly the same point seen from the model, e.g. a base and its
int8 copy), the parent moves to the more root-like of them, repeatedly. The rank is a strict
order, so the calls never form a cycle. A
model with no candidate is a root (not derived). With ``direction="centrality"`` the model
types are ignored and only the similarity decides.

**Merges.** A model gets a second parent when the best other candidate also reaches the
threshold, is not a relative of the first parent (two unrelated parents: a merge of two
families), and the model lies a real part of the way from the first parent to the second:
reading ``1 - s`` as a squared distance (exact for the cosine of unit vectors), the position
of the model's projection on the segment from parent 1 to parent 2,
``w = (d1^2 - d2^2 + d12^2) / (2 d12^2)``, is at least ``min_merge_weight`` (0.25). A uniform
merge sits near w = 0.5; a fine-tune of parent 1 that happens to pass the threshold with an
unrelated model sits near w = 0, and is not called a merge.

``P(derived)`` of a model is ``P`` of the similarity to its called parent; a model with no
relative gets ``P`` of its best match (below 0.5); a root by rank (a Base, or the centre of
its relatives) gets none: the similarity cannot say that it was derived.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attributor._io import atomic_write_text
from attributor.errors import ConfigError, DataError, UnknownNameError
from attributor.provenance.analysis import ModelInfo, SimilarityResults, load_model_info, load_results
from attributor.provenance.calibration import (
    Calibration, MethodCalibration, _zoo_results, calibrate, load_calibration, matrix_digest, run_calibrate,
)

__all__ = ["ModelLineage", "Lineage", "infer_lineage", "evaluate_lineage", "write_lineage", "run_lineage",
           "merge_weight", "summary_lines", "console_table", "DIRECTIONS", "OUTPUT_FILES",
           # re-exported from attributor.provenance.calibration
           "Calibration", "MethodCalibration", "calibrate", "load_calibration", "run_calibrate"]

PathLike = str | os.PathLike[str]
LINEAGE_SCHEMA = "attributor.provenance.lineage/1"
DIRECTIONS = ("auto", "centrality")
OUTPUT_FILES = ("lineage.json", "lineage.csv", "lineage.html")


# -- lineage -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelLineage:
    """The answer for one model: called parents (best first) with similarity and edge probability."""

    model_id: str
    display_name: str
    model_type: str | None
    derived: bool
    probability: float | None  # P(derived); None for a root by rank (see the module docstring)
    parents: tuple[dict[str, Any], ...]  # {model_id, similarity, probability}
    best_match: dict[str, Any] | None  # the most similar other model, whatever the direction
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parents": list(self.parents)}


@dataclass(frozen=True, eq=False)
class Lineage:
    method: str
    metric: str
    calibration: MethodCalibration
    direction: str
    min_merge_weight: float
    models: tuple[ModelLineage, ...]
    matrix: np.ndarray
    infos: tuple[ModelInfo, ...]
    evaluation: dict[str, Any] | None = None

    @property
    def edges(self) -> list[dict[str, Any]]:
        return [{"child": m.model_id, "parent": p["model_id"], "similarity": p["similarity"],
                 "probability": p["probability"]} for m in self.models for p in m.parents]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": LINEAGE_SCHEMA, "method": self.method, "metric": self.metric,
                "threshold": self.calibration.threshold, "direction": self.direction,
                "min_merge_weight": self.min_merge_weight,
                "calibration": self.calibration.to_dict(), "models": [m.to_dict() for m in self.models],
                "edges": self.edges, "evaluation": self.evaluation}


def _rank_keys(matrix: np.ndarray, related: np.ndarray, ids: Sequence[str], is_base: Sequence[bool]) -> list[tuple]:
    degree = related.sum(axis=1)
    keys = []
    for i in range(len(ids)):
        neighbours = matrix[i, related[i]]
        keys.append((bool(is_base[i]), int(degree[i]), float(neighbours.mean()) if neighbours.size else -math.inf,
                     # the model id last: a strict, deterministic order (reversed, so "a" ranks above "b")
                     tuple(-ord(ch) for ch in ids[i])))
    return keys


def merge_weight(s1: float, s2: float, s12: float) -> float:
    """How far (0: at parent 1, 1: at parent 2) a model with similarities ``s1``, ``s2`` to two parents
    whose own similarity is ``s12`` lies along the segment between them (1 - s read as a squared distance)."""
    d1, d2, d12 = 1.0 - s1, 1.0 - s2, 1.0 - s12
    return 0.0 if d12 <= 0 else (d1 - d2 + d12) / (2.0 * d12)


def infer_lineage(results: SimilarityResults, calibration: Calibration, method: str | None = None,
                  infos: Sequence[ModelInfo] | None = None, direction: str = "auto",
                  min_merge_weight: float = 0.25) -> Lineage:
    """Call every model's parent(s) from one similarity matrix with a calibration fitted elsewhere."""
    if direction not in DIRECTIONS:
        raise UnknownNameError("lineage direction rule", direction, DIRECTIONS)
    method = method or calibration.best_method(results.methods)
    if method not in calibration.methods:
        raise DataError(f"the calibration has no entry for method {method!r} (it has {', '.join(sorted(calibration.methods))}); "
                        "calibrate that method on a calibration zoo first")
    cal = calibration.methods[method]
    matrix = results.matrix(method, cal.metric)
    if matrix_digest(matrix) == cal.matrix_digest:
        raise DataError(f"the calibration of {method} / {cal.metric} was fitted on this very similarity matrix; "
                        "calibrate on a different zoo (e.g. one built with another --seed), never on the evaluated one")
    info = {m.model_id: m for m in infos or ()}
    ids = list(results.models)
    n = len(ids)
    models_info = tuple(info.get(m) or ModelInfo(m, "", "", m) for m in ids)
    typed = direction == "auto"
    is_base = [typed and models_info[i].model_type == "Base" for i in range(n)]
    finite = np.isfinite(matrix)
    related = finite & (np.where(finite, matrix, -np.inf) >= cal.threshold)
    np.fill_diagonal(related, False)
    keys = _rank_keys(matrix, related, ids, is_base)

    def entry(j: int, i: int) -> dict[str, Any]:
        s = float(matrix[i, j])
        return {"model_id": ids[j], "similarity": s, "probability": cal.probability(s)}

    out = []
    for i in range(n):
        others = [j for j in range(n) if j != i and finite[i, j]]
        best = max(others, key=lambda j: matrix[i, j], default=None)
        best_match = entry(best, i) if best is not None else None
        candidates = sorted((j for j in np.flatnonzero(related[i]) if keys[j] > keys[i]),
                            key=lambda j: (-matrix[i, j], ids[j]))
        parents: list[int] = []

        def settle(c: int) -> int:
            # a more root-like candidate closer to c than the model is: the same point seen from i
            while True:
                closer = [j for j in candidates if keys[j] > keys[c] and matrix[c, j] >= matrix[i, c]]
                if not closer:
                    return c
                c = max(closer, key=lambda j: (matrix[c, j], keys[j]))

        if is_base[i]:
            reason = "model type Base: no parent"
        elif candidates:
            first = settle(candidates[0])
            parents = [first]
            second = next((j for j in candidates if j != first and not related[first, j]), None)
            if second is not None:
                second = settle(second)
                if second != first and not related[first, second] and merge_weight(
                        matrix[i, first], matrix[i, second], matrix[first, second]) >= min_merge_weight:
                    parents.append(second)
            reason = "merge: two unrelated parents" if len(parents) == 2 else "most similar more root-like relative"
        elif related[i].any():
            reason = "root: the most root-like of its relatives"
        else:
            reason = "no model reaches the threshold"
        if parents:
            probability = cal.probability(float(matrix[i, parents[0]]))
        elif is_base[i] or related[i].any():
            probability = None
        else:
            probability = best_match["probability"] if best_match else 0.0
        out.append(ModelLineage(ids[i], models_info[i].display_name, models_info[i].model_type or None,
                                bool(parents), probability, tuple(entry(j, i) for j in parents), best_match, reason))
    lineage = Lineage(method, cal.metric, cal, direction, min_merge_weight, tuple(out), matrix.copy(), models_info)
    if any(m.parents for m in info.values()):  # the true parents are known: score the answer
        lineage = replace(lineage, evaluation=evaluate_lineage(lineage, list(info.values())))
    return lineage


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def evaluate_lineage(lineage: Lineage, infos: Sequence[ModelInfo]) -> dict[str, Any]:
    """The calls against the known parents (those present in the results).

    ``parent_top1``: the first called parent is a true parent (models with a parent);
    ``parent_exact``: the called parents are exactly the true ones; ``root_accuracy``: models with
    no parent are not called derived; ``derived_precision/recall``: of the "derived" call;
    ``edge_precision/recall``: of the directed (child, parent) edges; ``by_type``: per model type.
    """
    info = {m.model_id: m for m in infos}
    present = {m.model_id for m in lineage.models}
    truth = {m.model_id: {p for p in info[m.model_id].parents if p in present} if m.model_id in info else set()
             for m in lineage.models}
    called = {m.model_id: [p["model_id"] for p in m.parents] for m in lineage.models}
    with_parent = [m for m in truth if truth[m]]
    roots = [m for m in truth if not truth[m]]
    true_edges = {(c, p) for c, ps in truth.items() for p in ps}
    called_edges = {(c, p) for c, ps in called.items() for p in ps}
    derived = {m for m in called if called[m]}
    by_type: dict[str, dict[str, Any]] = {}
    for kind in sorted({info[m].model_type for m in truth if m in info}):
        members = [m for m in truth if m in info and info[m].model_type == kind]
        have = [m for m in members if truth[m]]
        by_type[kind] = {"n": len(members), "with_parent": len(have),
                         "parent_top1": _ratio(sum(bool(called[m]) and called[m][0] in truth[m] for m in have), len(have)),
                         "parent_exact": _ratio(sum(set(called[m]) == truth[m] for m in have), len(have)),
                         "called_derived": _ratio(sum(m in derived for m in members), len(members))}
    merges = [m for m in with_parent if len(truth[m]) > 1]
    return {
        "n_models": len(truth), "n_with_parent": len(with_parent), "n_roots": len(roots),
        "parent_top1": _ratio(sum(bool(called[m]) and called[m][0] in truth[m] for m in with_parent), len(with_parent)),
        "parent_exact": _ratio(sum(set(called[m]) == truth[m] for m in with_parent), len(with_parent)),
        "root_accuracy": _ratio(sum(m not in derived for m in roots), len(roots)),
        "derived_precision": _ratio(len(derived & set(with_parent)), len(derived)),
        "derived_recall": _ratio(len(derived & set(with_parent)), len(with_parent)),
        "edge_precision": _ratio(len(called_edges & true_edges), len(called_edges)),
        "edge_recall": _ratio(len(called_edges & true_edges), len(true_edges)),
        "n_merges": len(merges),
        "merges_exact": _ratio(sum(set(called[m]) == truth[m] for m in merges), len(merges)),
        "by_type": by_type,
    }


# -- outputs ---------------------------------------------------------------------------------------
def _csv(lineage: Lineage) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model_id", "display_name", "model_type", "derived", "probability", "parent_1", "similarity_1",
                     "probability_1", "parent_2", "similarity_2", "probability_2", "reason"])
    for m in lineage.models:
        cells = []
        for k in range(2):
            p = m.parents[k] if k < len(m.parents) else None
            cells += [p["model_id"], f"{p['similarity']:.6g}", f"{p['probability']:.4f}"] if p else ["", "", ""]
        writer.writerow([m.model_id, m.display_name, m.model_type or "", "yes" if m.derived else "no",
                         "" if m.probability is None else f"{m.probability:.4f}", *cells, m.reason])
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(lineage: Lineage) -> list[str]:
    """The evaluation in a few lines of at most 80 characters (empty without known parents)."""
    e = lineage.evaluation
    if not e:
        return []
    lines = [f"parents: top-1 {_pct(e['parent_top1'])}, exact {_pct(e['parent_exact'])} "
             f"({e['n_with_parent']} models with a parent); roots right {_pct(e['root_accuracy'])}",
             f"derived: precision {_pct(e['derived_precision'])}, recall {_pct(e['derived_recall'])}; "
             f"edges: precision {_pct(e['edge_precision'])}, recall {_pct(e['edge_recall'])}"]
    if e["n_merges"]:
        lines.append(f"merges: {e['n_merges']}, both parents right {_pct(e['merges_exact'])}")
    for kind, row in e["by_type"].items():
        if row["with_parent"]:
            lines.append(f"  {kind[:18]:18s} n={row['n']:<3d} top-1 {_pct(row['parent_top1'])}  "
                         f"exact {_pct(row['parent_exact'])}")
    return lines


def console_table(lineage: Lineage) -> Any:
    """A rich Table of the calls that folds (never cuts) its cells on a narrow terminal."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"Lineage [{lineage.method} / {lineage.metric}, threshold {lineage.calibration.threshold:.4g}]",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("model", overflow="fold", ratio=3)
    table.add_column("P(derived)", justify="right", overflow="fold", min_width=5)
    table.add_column("parent(s), similarity", overflow="fold", ratio=4)
    for m in lineage.models:
        parents = "; ".join(f"{p['model_id']} {p['similarity']:.4f}" for p in m.parents) or f"- ({m.reason})"
        table.add_row(m.model_id, "n/a" if m.probability is None else f"{m.probability:.3f}", parents)
    return table


def write_lineage(lineage: Lineage, output_dir: PathLike, *, console: bool = True,
                  echo: Callable[[str], None] | None = None) -> list[Path]:
    """lineage.json, lineage.csv and lineage.html into ``output_dir``; all rendered before the first write."""
    from attributor.provenance import lineage_page

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output folder {output_dir} is a file; give a folder for the lineage outputs")
    texts = {"lineage.json": json.dumps(lineage.to_dict(), indent=1, allow_nan=False) + "\n",
             "lineage.csv": _csv(lineage), "lineage.html": lineage_page.render_lineage_page(lineage)}
    try:
        for name, text in texts.items():
            atomic_write_text(output_dir / name, text)
    except OSError as error:
        raise DataError(f"cannot write the lineage into {output_dir}: {error}") from None
    if console:
        from rich.console import Console

        out = Console()
        out.print(console_table(lineage))
        for line in summary_lines(lineage):
            out.print(line, markup=False, highlight=False)
        out.print(f"wrote {', '.join(OUTPUT_FILES)} to {output_dir}", markup=False, highlight=False)
    return [output_dir / name for name in OUTPUT_FILES]


# -- the commands ------------------------------------------------------------------------------------
def run_lineage(calibration_file: PathLike, output_dir: PathLike, *, results_file: PathLike | None = None,
                model_info: PathLike | None = None, zoo: PathLike | None = None, method: str | None = None,
                direction: str = "auto", min_merge_weight: float = 0.25, console: bool = True,
                progress: bool = True) -> Lineage:
    """``attributor provenance lineage``: load (or, for a zoo, compute) the matrices, call parents, write."""
    calibration = load_calibration(calibration_file)  # a bad calibration fails before any fingerprint
    if direction not in DIRECTIONS:
        raise UnknownNameError("lineage direction rule", direction, DIRECTIONS)
    if not 0.0 <= min_merge_weight <= 0.5:
        raise ConfigError(f"min_merge_weight must be between 0 and 0.5, got {min_merge_weight}")
    if method is not None and method not in calibration.methods:
        raise DataError(f"calibration file {calibration_file} has no entry for method {method!r} (it has "
                        f"{', '.join(sorted(calibration.methods))})")
    output_dir = Path(output_dir)
    if (zoo is None) == (results_file is None):
        raise ConfigError("give either --zoo (the zoo to answer for) or --results-file")
    if zoo is not None:
        wanted = [method] if method else list(calibration.methods)
        results_file, zoo_info = _zoo_results(zoo, output_dir, {n: calibration.methods[n].metric for n in wanted}, progress)
        model_info = model_info or zoo_info
    results = load_results(results_file)
    infos = load_model_info(model_info) if model_info is not None else None
    lineage = infer_lineage(results, calibration, method, infos, direction, min_merge_weight)
    write_lineage(lineage, output_dir, console=console)
    return lineage
