"""Calibration of lineage calls: when is a similarity high enough to call a derivation?

``attributor provenance calibrate`` fits, on a *calibration zoo* whose ``model_info`` knows
every true parent, one :class:`MethodCalibration` per fingerprint method and its metric and
saves them as ``calibration.json`` (:class:`Calibration`); ``attributor provenance lineage``
(:mod:`attributor.provenance.lineage`) reads it to answer for another zoo. The digest of the
matrix it was fitted on is kept, so the evaluated zoo can never be its own calibration.

**Calibration.** Pairs of the calibration zoo are *edges* (a model and one of its listed
parents: positives) or *unrelated* (no common ancestor, a model counting as its own
ancestor: negatives); siblings and other relatives that are not an edge are left out, and
so are pairs the metric cannot compare (null).

* The threshold ``t`` is the cut between two consecutive scores with the best balanced
  accuracy of "edge" vs "unrelated" (ties: the widest gap), halfway across that gap.
* ``P(s)``, the probability that a pair at similarity ``s`` is a derivation edge, is an
  isotonic (monotone) regression of the label on the similarity, fitted on each side of
  ``t``: pool-adjacent-violators over the sorted scores with the two classes weighted
  equally (P is the posterior at even prior odds of edge vs unrelated), each block smoothed
  with half a pseudo-count per class (a perfectly separated zoo gives probabilities near,
  not at, 0 and 1), kept below 0.5 under ``t`` and at least 0.5 from ``t`` on, linear
  between the blocks' end points and flat beyond the calibration range. So a pair is called
  an edge exactly when ``P(s) >= 0.5``. (One isotonic fit over all pairs can be fooled by a
  few edges *less* similar than every unrelated pair, e.g. distilled students under an
  output fingerprint: they pool the bottom of the range into one block above 0.5, which
  calls everything derived. The threshold decides; P grades the calls on either side.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from attributor._io import atomic_write_text
from attributor.errors import ConfigError, DataError
from attributor.provenance.analysis import ModelInfo, SimilarityResults, _read_json, load_model_info, load_results

__all__ = ["MethodCalibration", "Calibration", "fit_calibration", "calibrate", "load_calibration", "isotonic_map",
           "best_cut", "labelled_pairs", "matrix_digest", "default_metric", "run_calibrate", "CALIBRATION_SCHEMA"]

PathLike = str | os.PathLike[str]
CALIBRATION_SCHEMA = "attributor.provenance.calibration/1"


def matrix_digest(matrix: np.ndarray) -> str:
    """sha256 of a similarity matrix (12 significant digits, null as null): which zoo it comes from."""
    rows = [[None if not math.isfinite(v) else float(f"{v:.12g}") for v in row] for row in np.asarray(matrix)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


# -- calibration ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodCalibration:
    """Threshold and probability map of one method / metric (see the module docstring)."""

    method: str
    metric: str
    threshold: float
    knots: tuple[tuple[float, float], ...]  # (similarity, P) points of the monotone map, increasing
    n_edges: int
    n_unrelated: int
    balanced_accuracy: float
    auc: float
    matrix_digest: str
    n_null: int = 0

    def probability(self, similarity: float) -> float:
        """P(a pair at this similarity is a derivation edge); >= 0.5 exactly from the threshold on; NaN -> 0."""
        if not math.isfinite(similarity):
            return 0.0
        xs, ps = zip(*self.knots)
        return float(np.interp(similarity, xs, ps))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "knots": [list(k) for k in self.knots]}


@dataclass(frozen=True)
class Calibration:
    """``calibration.json``: one :class:`MethodCalibration` per method, and where they came from."""

    methods: dict[str, MethodCalibration]
    source: dict[str, Any] = field(default_factory=dict)

    def best_method(self, available: Sequence[str]) -> str:
        """The calibrated method of ``available`` with the best balanced accuracy (then AUC, then name)."""
        usable = [m for m in self.methods if m in available]
        if not usable:
            raise DataError(f"the calibration covers methods {', '.join(sorted(self.methods))} but the results hold "
                            f"{', '.join(sorted(available))}; calibrate on a zoo fingerprinted with the same methods")
        return min(usable, key=lambda m: (-self.methods[m].balanced_accuracy, -self.methods[m].auc, m))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CALIBRATION_SCHEMA, "source": self.source,
                "methods": {name: c.to_dict() for name, c in sorted(self.methods.items())}}

    def save(self, path: PathLike) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return Path(path)


def load_calibration(path: PathLike) -> Calibration:
    """Read ``calibration.json``; a missing, corrupt or foreign file is one :class:`DataError`."""
    data = _read_json(path, "calibration file")
    hint = f"calibration file {path}"
    if not isinstance(data, dict) or data.get("schema") != CALIBRATION_SCHEMA:
        raise DataError(f"{hint} is not a calibration (expected schema {CALIBRATION_SCHEMA!r}); make one with "
                        "`attributor provenance calibrate` on a calibration zoo")
    methods = data.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise DataError(f"{hint}: 'methods' must be a non-empty object method -> calibration")
    names = set(MethodCalibration.__dataclass_fields__)
    out = {}
    for name, entry in methods.items():
        try:
            c = MethodCalibration(**{k: v for k, v in entry.items() if k in names})
            c = replace(c, knots=tuple((float(x), float(p)) for x, p in c.knots))
            numbers = [c.threshold, c.balanced_accuracy, c.auc, *(v for k in c.knots for v in k)]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
                raise TypeError("threshold, knots, balanced_accuracy and auc must be finite numbers")
            xs, ps = np.array([k[0] for k in c.knots]), np.array([k[1] for k in c.knots])
            if xs.size == 0 or (np.diff(xs) < 0).any() or (np.diff(ps) < 0).any() or ps.min() < 0 or ps.max() > 1:
                raise TypeError("knots must be (similarity, probability) pairs, both non-decreasing, P in [0, 1]")
            if not (isinstance(c.metric, str) and isinstance(c.matrix_digest, str)):
                raise TypeError("metric and matrix_digest must be strings")
        except (TypeError, ValueError, AttributeError) as error:
            raise DataError(f"{hint}: methods[{name!r}] is malformed ({error})") from None
        out[name] = c
    return Calibration(out, data.get("source") if isinstance(data.get("source"), dict) else {})


def ancestors(parents: Mapping[str, Sequence[str]], present: set[str]) -> dict[str, set[str]]:
    """Every model's ancestors among ``present``, itself included (``parents``: model id -> its
    parents' ids). Two models are related when these sets meet (a merge is related to both sides)."""
    out: dict[str, set[str]] = {}

    def walk(model: str, seen: set[str]) -> set[str]:
        if model in out:
            return out[model]
        found = {model}
        for parent in parents.get(model, ()):
            if parent in present and parent not in seen:
                found |= walk(parent, seen | {model})
        out[model] = found
        return found

    for model in present:
        walk(model, set())
    return out


def labelled_pairs(models: Sequence[str], infos: Sequence[ModelInfo]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(edges, unrelated) index pairs of a zoo: a model and a listed parent; pairs with no common ancestor."""
    info = {m.model_id: m for m in infos}
    missing = [m for m in models if m not in info]
    if missing:
        raise DataError(f"{len(missing)} model(s) of the results have no model info entry: "
                        f"{', '.join(missing[:10])}; the calibration needs every model's parents")
    present = set(models)
    lineage = ancestors({m: i.parents for m, i in info.items()}, present)
    index = {m: i for i, m in enumerate(models)}
    edges = sorted({tuple(sorted((index[m], index[p]))) for m in models for p in info[m].parents if p in present and p != m})
    unrelated = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))
                 if not lineage[models[i]] & lineage[models[j]]]
    return edges, unrelated


def best_cut(positive: np.ndarray, negative: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy): the cut maximising balanced accuracy, halfway across its gap."""
    values = np.unique(np.concatenate([positive, negative]))
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    gaps = np.concatenate([[np.inf], np.diff(values), [np.inf]])
    tpr = (positive[None, :] >= cuts[:, None]).mean(axis=1)
    tnr = (negative[None, :] < cuts[:, None]).mean(axis=1)
    balanced = (tpr + tnr) / 2
    best = np.flatnonzero(np.isclose(balanced, balanced.max(), rtol=0, atol=1e-12))
    inner = [k for k in best if 0 < k < len(cuts) - 1] or list(best)  # below / above everything: last resort
    k = max(inner, key=lambda k: (gaps[k], -k))
    return float(cuts[k]), float(balanced[k])


def isotonic_map(positive: np.ndarray, negative: np.ndarray, threshold: float) -> tuple[tuple[float, float], ...]:
    """Knots (similarity, P) of the balanced, smoothed isotonic regression on each side of ``threshold``
    (below 0.5 under it, at least 0.5 from it on; see the module docstring)."""
    below = _pav(positive[positive < threshold], negative[negative < threshold], positive.size, negative.size)
    above = _pav(positive[positive >= threshold], negative[negative >= threshold], positive.size, negative.size)
    knots = [(x, min(p, 0.5 - 1e-6)) for x, p in below] + [(threshold, 0.5)]
    knots += [(x, max(p, 0.5)) for x, p in above if x > threshold]
    return tuple(knots)


def _pav(positive: np.ndarray, negative: np.ndarray, total_pos: int, total_neg: int) -> list[tuple[float, float]]:
    """Pool adjacent violators over the distinct scores; knots at each block's first and last score."""
    values = np.unique(np.concatenate([positive, negative]))
    if values.size == 0:
        return []
    positive, negative = np.sort(positive), np.sort(negative)
    n_pos = np.searchsorted(positive, values, side="right") - np.searchsorted(positive, values)
    n_neg = np.searchsorted(negative, values, side="right") - np.searchsorted(negative, values)
    blocks: list[list[float]] = []  # [lo, hi, positives, negatives]
    for v, a, b in zip(values, n_pos, n_neg):
        blocks.append([float(v), float(v), float(a), float(b)])
        # the balanced rate must not decrease along the similarity
        while len(blocks) > 1 and _rate(blocks[-2], total_pos, total_neg) >= _rate(blocks[-1], total_pos, total_neg):
            hi, a2, b2 = blocks[-1][1], blocks[-1][2], blocks[-1][3]
            blocks.pop()
            blocks[-1][1], blocks[-1][2], blocks[-1][3] = hi, blocks[-1][2] + a2, blocks[-1][3] + b2
    smoothed = np.maximum.accumulate([_rate(block, total_pos, total_neg, 0.5) for block in blocks])
    knots: list[tuple[float, float]] = []
    for (lo, hi, _, _), p in zip(blocks, smoothed):
        knots += [(lo, float(p))] + ([(hi, float(p))] if hi > lo else [])
    return knots


def _rate(block: list[float], total_pos: int, total_neg: int, prior: float = 0.0) -> float:
    """The balanced positive rate of a block: P(edge) at even prior odds, with ``prior`` pseudo-counts per class."""
    pos = (block[2] + prior) / (total_pos + 2 * prior)
    neg = (block[3] + prior) / (total_neg + 2 * prior)
    return pos / (pos + neg) if pos + neg > 0 else 0.5


def fit_calibration(matrix: np.ndarray, models: Sequence[str], infos: Sequence[ModelInfo], method: str,
                    metric: str) -> MethodCalibration:
    """Fit threshold and slope of one (n, n) similarity matrix of a zoo whose parents are known."""
    from attributor.provenance.evaluate import pair_auc

    edges, unrelated = labelled_pairs(models, infos)
    pos = np.array([matrix[i, j] for i, j in edges], dtype=float)
    neg = np.array([matrix[i, j] for i, j in unrelated], dtype=float)
    n_null = int((~np.isfinite(pos)).sum() + (~np.isfinite(neg)).sum())
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if pos.size == 0 or neg.size == 0:
        raise DataError(f"{method} / {metric}: the calibration zoo needs comparable pairs of both kinds, a model and "
                        f"its parent ({pos.size}) and two unrelated models ({neg.size}); give a zoo whose model info "
                        "lists parents (base / parents) and holds at least two unrelated families")
    threshold, balanced = best_cut(pos, neg)
    knots = isotonic_map(pos, neg, threshold)
    return MethodCalibration(method=method, metric=metric, threshold=threshold, knots=knots, n_edges=int(pos.size),
                             n_unrelated=int(neg.size), balanced_accuracy=balanced, auc=float(pair_auc(pos, neg)),
                             matrix_digest=matrix_digest(matrix), n_null=n_null)


def default_metric(results: SimilarityResults, method: str, metric: str | None = None) -> str:
    """``metric``, else the method's registered default (DEFAULT_METRIC) when the results hold it, else the
    only metric the results hold for it."""
    from attributor.provenance.fingerprints import DEFAULT_METRIC

    known = results.metrics(method)
    if metric is not None:
        results.matrix(method, metric)
        return metric
    if DEFAULT_METRIC.get(method) in known:
        return DEFAULT_METRIC[method]
    if len(known) == 1:
        return known[0]
    raise ConfigError(f"method {method!r} has matrices for metrics {', '.join(known)} and no default among them; "
                      "name one with --metric")


def calibrate(results: SimilarityResults, infos: Sequence[ModelInfo], methods: Sequence[str] | None = None,
              metric: str | None = None, source: dict[str, Any] | None = None) -> Calibration:
    """A :class:`Calibration` of every method of ``results`` (or of ``methods``) on a zoo with known parents."""
    names = list(methods) if methods else results.methods
    fitted = {name: fit_calibration(results.matrix(name, m := default_metric(results, name, metric)),
                                    results.models, infos, name, m) for name in names}
    return Calibration(fitted, {**(source or {}), "n_models": len(results.models)})


# -- the command -------------------------------------------------------------------------------------
def _zoo_results(zoo: PathLike, output_dir: Path, methods: dict[str, str], progress: bool) -> tuple[Path, Path]:
    """(similarity_matrices.json, model_info.json) of a zoo: reuse ``output_dir``'s matrices when they hold
    every method / metric for the zoo's models, else fingerprint the zoo into ``output_dir``."""
    from attributor.provenance.experiment import ProvenanceConfig, read_model_info, run_experiment

    info = Path(zoo) / "model_info.json" if Path(zoo).is_dir() else Path(zoo)
    if not info.is_file():
        raise DataError(f"{zoo} holds no model_info.json; build a zoo with `attributor provenance zoo --out {zoo}`")
    results_file = output_dir / "similarity_matrices.json"
    ids = [m.model_id for m in read_model_info(info)]
    if results_file.is_file():
        try:
            existing = load_results(results_file)
            if list(existing.models) == ids and all(metric in existing.matrices.get(name, {})
                                                    for name, metric in methods.items()):
                return results_file, info
        except DataError:
            pass  # unreadable: computed again below
    config = ProvenanceConfig(model_info=info.resolve(), methods={name: {} for name in methods},
                              metrics=sorted(set(methods.values())), output_dir=output_dir)
    run_experiment(config, progress=progress)
    return results_file, info


def run_calibrate(out: PathLike, *, results_file: PathLike | None = None, model_info: PathLike | None = None,
                  zoo: PathLike | None = None, methods: Sequence[str] | None = None, metric: str | None = None,
                  progress: bool = True) -> Calibration:
    """``attributor provenance calibrate``: fit on a calibration zoo, write ``out`` (calibration.json).

    With ``zoo`` the zoo is fingerprinted first (every registered method, or ``methods``, with its
    default metric) into the folder of ``out``, reusing matrices already there.
    """
    from attributor.provenance.fingerprints import DEFAULT_METRIC, fingerprinter_names

    out = Path(out)
    if out.is_dir():
        out = out / "calibration.json"
    if (zoo is None) == (results_file is None):
        raise ConfigError("give either --zoo (a calibration zoo) or --results-file with --model-info")
    if zoo is not None:
        names = list(methods or fingerprinter_names())
        results_file, model_info = _zoo_results(zoo, out.parent, {n: metric or DEFAULT_METRIC.get(n, "cosine")
                                                                  for n in names}, progress)
    elif model_info is None:
        raise ConfigError("--results-file needs --model-info (the calibration zoo's model_info.json with parents)")
    results = load_results(results_file)
    for name in methods or ():
        results.metrics(name)  # unknown methods fail before the model info is read
    calibration = calibrate(results, load_model_info(model_info), methods, metric,
                            source={"results_file": str(results_file), "model_info": str(model_info)})
    calibration.save(out)
    return calibration
