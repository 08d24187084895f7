"""``attributor provenance eval``: how well each fingerprint tells related models from unrelated ones.

On a zoo (``model_info.json`` with families, types and bases), every model pair is either
*related* (same family: derived from the same base) or *unrelated* (different families).
A method scores a pair by the similarity of the two fingerprints under its metric; a pair a
metric cannot compare (e.g. weight fingerprints of different vocabularies) scores below
every comparable pair, i.e. is called unrelated.

Reported per method, each beside its chance level:

* ``auc``: ROC AUC of Base-vs-derived pairs of the types Chat, Fine-tuned, Quantized and
  Pruned (positives) against all unrelated pairs (negatives); chance 0.5.
* ``accuracy``: the best single-threshold accuracy on the same pairs, beside
  ``accuracy_chance`` (always answering the majority class) and ``balanced_accuracy``.
* ``by_type``: the AUC of Base-vs-T pairs against unrelated pairs for every derived type T
  (Distilled included: a fresh student trained on the base's outputs is the hardest case).
* ``by_type_pair``: the AUC of every same-family type pair ("Chat-Quantized", ...) against
  unrelated pairs, and ``related_auc`` over all same-family pairs except the distilled ones.
* ``by_derivation.{TYPE}``: for every derived type, ``auc`` of the (parent, derived) pairs of
  that type (each model's ``parents``, so a merge counts with both) against all unrelated
  pairs, and ``top1``: the share of models of that type whose most similar candidate base
  (a model of type Base other than itself) is one of their parents; ``n`` models.

Unrelated pairs are of different families *and* share no ancestor along ``parents`` (a
merge of families A and B is related to both); on a zoo without merges that is "different
families". Besides the methods, the report has a row ``combined``: the mean over the
methods (all evaluated, or ``combine``) of each method's similarities z-scored over the
zoo's own off-diagonal pairs (no labels used; an incomparable pair scores one below the
method's lowest z), evaluated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attributor.errors import DataError
from attributor.provenance.calibration import ancestors
from attributor.provenance.experiment import ModelEntry, ProvenanceConfig, read_model_info, run_experiment, write_json_files
from attributor.provenance.fingerprints import DEFAULT_METRIC, fingerprinter_names

__all__ = ["evaluate_zoo", "pair_auc", "best_threshold_accuracy", "EVAL_TYPES", "combine_matrices", "COMBINED"]

#: The key of the combination of methods in the report.
COMBINED = "combined"

#: The derived types whose pairs with their base make up the overall AUC.
EVAL_TYPES = ("Chat", "Fine-tuned", "Quantized", "Pruned")


def pair_auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if positive.size == 0 or negative.size == 0:
        return None
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (positive.size * negative.size))


def best_threshold_accuracy(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """Best accuracy and balanced accuracy of 'related iff score >= t' over all thresholds t."""
    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    best, best_balanced = 0.0, 0.0
    for threshold in np.concatenate([np.unique(scores), [np.inf]]):
        called = scores >= threshold
        tpr = called[labels == 1].mean() if len(positive) else 0.0
        tnr = (~called[labels == 0]).mean() if len(negative) else 0.0
        best = max(best, float((called == (labels == 1)).mean()))
        best_balanced = max(best_balanced, float((tpr + tnr) / 2))
    chance = max(len(positive), len(negative)) / max(len(scores), 1)
    return {"accuracy": best, "balanced_accuracy": best_balanced, "accuracy_chance": chance}


@dataclass
class _Pairs:
    models: list[ModelEntry]

    def __post_init__(self) -> None:
        missing = [m.model_id for m in self.models if not m.family or not m.model_type]
        if missing:
            raise DataError(f"model info needs family and model_type for every model; missing for {', '.join(missing)}")

    def select(self, keep: Callable[[ModelEntry, ModelEntry], bool]) -> list[tuple[int, int]]:
        n = len(self.models)
        return [(i, j) for i in range(n) for j in range(i + 1, n) if keep(self.models[i], self.models[j])]

    def unrelated(self) -> list[tuple[int, int]]:
        parents = {m.model_id: m.parents for m in self.models}
        lineage = ancestors(parents, set(parents).union(*parents.values()))  # a parent outside the zoo still links
        return self.select(lambda a, b: a.family != b.family and not (lineage[a.model_id] & lineage[b.model_id]))

    def base_with(self, types: Sequence[str]) -> list[tuple[int, int]]:
        def keep(a: ModelEntry, b: ModelEntry) -> bool:
            kinds = {a.model_type, b.model_type}
            return a.family == b.family and "Base" in kinds and len(kinds) == 2 and (kinds - {"Base"}) <= set(types)
        return self.select(keep)

    def type_pair(self, key: str) -> list[tuple[int, int]]:
        return self.select(lambda a, b: a.family == b.family and a.model_type != b.model_type
                           and "-".join(sorted((a.model_type, b.model_type))) == key)

    def type_pair_keys(self) -> list[str]:
        keys = {"-".join(sorted((a.model_type, b.model_type))) for a in self.models for b in self.models
                if a.family == b.family and a.model_type != b.model_type}
        return sorted(keys)


def _scores(matrix: np.ndarray, pairs: list[tuple[int, int]], floor: float) -> np.ndarray:
    values = np.array([matrix[i, j] for i, j in pairs], dtype=float)
    return np.where(np.isfinite(values), values, floor)


def method_metrics(matrix: np.ndarray, models: list[ModelEntry]) -> dict[str, Any]:
    """AUCs and accuracies of one similarity matrix over a zoo's pairs (see the module docstring)."""
    pairs = _Pairs(models)
    finite = matrix[np.isfinite(matrix)]
    floor = (finite.min() - 1.0) if finite.size else -1.0  # incomparable pairs: called unrelated
    negative = _scores(matrix, pairs.unrelated(), floor)
    positive = _scores(matrix, pairs.base_with(EVAL_TYPES), floor)
    types = sorted({m.model_type for m in models} - {"Base"})
    related = pairs.select(lambda a, b: a.family == b.family and "Distilled" not in (a.model_type, b.model_type))
    out: dict[str, Any] = {
        "auc": pair_auc(positive, negative), "auc_chance": 0.5,
        **best_threshold_accuracy(positive, negative),
        "by_type": {t: pair_auc(_scores(matrix, pairs.base_with([t]), floor), negative) for t in types},
        "by_type_pair": {k: pair_auc(_scores(matrix, pairs.type_pair(k), floor), negative) for k in pairs.type_pair_keys()},
        "related_auc": pair_auc(_scores(matrix, related, floor), negative),
        "n_positive": int(positive.size), "n_negative": int(negative.size),
        "n_incomparable": int((~np.isfinite(matrix[np.triu_indices(len(models), 1)])).sum()),
        "by_derivation": by_derivation(matrix, models, negative, floor),
    }
    return out


def by_derivation(matrix: np.ndarray, models: list[ModelEntry], negative: np.ndarray, floor: float) -> dict[str, Any]:
    """``{TYPE: {auc, top1, n}}`` over each derived type's (parent, derived) pairs (module docstring)."""
    index = {m.model_id: i for i, m in enumerate(models)}
    bases = [i for i, m in enumerate(models) if m.model_type == "Base"]
    filled = np.where(np.isfinite(matrix), matrix, floor)
    out: dict[str, Any] = {}
    for kind in sorted({m.model_type for m in models} - {"Base"}):
        derived = [i for i, m in enumerate(models) if m.model_type == kind]
        positive = np.array([filled[index[p], i] for i in derived for p in models[i].parents if p in index])
        hits = []
        for i in derived:
            candidates = [b for b in bases if b != i]
            if candidates and models[i].parents:
                best = max(candidates, key=lambda b: filled[i, b])  # first of equals: a tie is not a free hit
                hits.append(models[best].model_id in models[i].parents)
        out[kind] = {"auc": pair_auc(positive, negative), "top1": float(np.mean(hits)) if hits else None, "n": len(derived)}
    return out


def combine_matrices(matrices: list[np.ndarray]) -> np.ndarray:
    """Mean of z-scored similarity matrices (z over each matrix's finite off-diagonal entries).

    An incomparable (NaN) entry gets that matrix's lowest z minus one; the diagonal is 1 + the
    highest z. Uses no labels, so it can be computed on any set of models.
    """
    if not matrices:
        raise DataError("combining methods needs at least one similarity matrix")
    n = matrices[0].shape[0]
    off = ~np.eye(n, dtype=bool)
    scored = []
    for matrix in matrices:
        values = matrix[off & np.isfinite(matrix)]
        mean, std = (values.mean(), values.std()) if values.size else (0.0, 1.0)
        z = (matrix - mean) / (std if std > 0 else 1.0)
        finite = z[off & np.isfinite(z)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        z = np.where(np.isfinite(z), z, low - 1.0)
        np.fill_diagonal(z, high + 1.0)
        scored.append(z)
    return np.mean(scored, axis=0)


def evaluate_zoo(zoo: str | Path, out: str | Path, *, methods: dict[str, dict[str, Any]] | None = None,
                 metrics: dict[str, str] | None = None, progress: bool = True, combine: Sequence[str] | None = None,
                 log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Fingerprint every zoo model, score every pair, write ``metrics.json`` and ``results.md`` to ``out``.

    ``combine``: the methods whose z-scored similarities are averaged into the ``combined`` row
    (default: every evaluated method; a single method gives no combined row).
    """
    zoo, out = Path(zoo), Path(out)
    info = zoo / "model_info.json" if zoo.is_dir() else zoo
    if not info.is_file():
        raise DataError(f"{zoo} holds no model_info.json; build a zoo with `attributor provenance zoo --out {zoo}`")
    models = read_model_info(info)
    methods = methods or {name: {} for name in fingerprinter_names()}
    combine = list(dict.fromkeys(combine)) if combine else list(methods)
    stray = [name for name in combine if name not in methods]
    if stray:
        raise DataError(f"cannot combine {', '.join(stray)}: not among the evaluated methods ({', '.join(methods)})")
    metrics = {name: (metrics or {}).get(name, DEFAULT_METRIC.get(name, "cosine")) for name in methods}
    config = ProvenanceConfig(model_info=info, methods=methods, metrics=sorted(set(metrics.values())), output_dir=out)
    result = run_experiment(config, progress=progress, log=log)
    report = {name: {"metric": metrics[name], **method_metrics(result.matrices[name][metrics[name]], models)}
              for name in methods}
    if len(combine) > 1:
        matrix = combine_matrices([result.matrices[name][metrics[name]] for name in combine])
        report[COMBINED] = {"metric": "mean z-score of " + " + ".join(combine), "methods": combine,
                            **method_metrics(matrix, models)}
    write_json_files(out, {"metrics.json": report, "results.md": render_markdown(report, models, zoo)})
    return report


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _auc_top1(cell: dict[str, Any] | None, digits: int = 3) -> str:
    if not cell:
        return ""
    top1 = "" if cell.get("top1") is None else f"{cell['top1']:.2f}"
    return f"{'' if cell.get('auc') is None else format(cell['auc'], f'.{digits}f')} / {top1}"


def derivation_table(report: dict[str, Any], width: int = 80) -> list[str]:
    """Console lines: one row per derivation type, one 'AUC/top-1' column per method, wrapped to ``width``."""
    kinds = sorted({k for row in report.values() for k in row.get("by_derivation", {})})
    names = list(report)
    cell, first = 11, 11
    per_line = max(1, (width - first) // (cell + 1))
    lines = []
    for start in range(0, len(names), per_line):
        chunk = names[start:start + per_line]
        lines.append(f"{'AUC/top-1':<{first}}" + " ".join(f"{n[:cell]:>{cell}}" for n in chunk))
        for kind in kinds:
            cells = []
            for n in chunk:
                c = report[n].get("by_derivation", {}).get(kind) or {}
                auc = "-" if c.get("auc") is None else f"{c['auc']:.2f}"
                top1 = "-" if c.get("top1") is None else f"{c['top1']:.2f}"
                cells.append(f"{auc + '/' + top1:>{cell}}")
            lines.append(f"{kind[:first]:<{first}}" + " ".join(cells))
    return lines


def render_markdown(report: dict[str, Any], models: list[ModelEntry], zoo: Path) -> str:
    families = sorted({m.family for m in models})
    types = sorted({m.model_type for m in models} - {"Base"})
    lines = [f"# Provenance accuracy on {zoo}", "",
             f"{len(models)} models, {len(families)} families ({', '.join(families)}). Related = same family "
             "(derived from the same base); unrelated = different families. AUC chance = 0.5; "
             "accuracy chance = always answering the majority class.", "",
             "| method | metric | AUC (Chat, Fine-tuned, Quantized, Pruned vs unrelated) | accuracy | chance accuracy | balanced accuracy | "
             + " | ".join(f"AUC Base-{t}" for t in types) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(types)]
    for name, row in report.items():
        lines.append(f"| {name} | {row['metric']} | {_fmt(row['auc'])} | {_fmt(row['accuracy'])} | {_fmt(row['accuracy_chance'])} | "
                     f"{_fmt(row['balanced_accuracy'])} | " + " | ".join(_fmt(row["by_type"].get(t)) for t in types) + " |")
    keys = sorted({k for row in report.values() for k in row["by_type_pair"]})
    lines += ["", "AUC of every same-family type pair against the unrelated pairs:", "",
              "| type pair | " + " | ".join(report) + " |", "|---|" + "---|" * len(report)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(row["by_type_pair"].get(key)) for row in report.values()) + " |")
    kinds = sorted({k for row in report.values() for k in row.get("by_derivation", {})})
    lines += ["", "Per derivation: AUC of (parent, derived) pairs against the unrelated pairs / top-1 parent "
              "accuracy among the Base models (n = models of that type):", "",
              "| derivation | n | " + " | ".join(report) + " |", "|---|---|" + "---|" * len(report)]
    for kind in kinds:
        n = next(row["by_derivation"][kind]["n"] for row in report.values() if kind in row.get("by_derivation", {}))
        lines.append(f"| {kind} | {n} | " + " | ".join(_auc_top1(row.get("by_derivation", {}).get(kind)) for row in report.values()) + " |")
    lines += ["", "| method | pairs: positive / unrelated | incomparable pairs | AUC all related pairs (no Distilled) |",
              "|---|---|---|---|"]
    for name, row in report.items():
        lines.append(f"| {name} | {row['n_positive']} / {row['n_negative']} | {row['n_incomparable']} | {_fmt(row['related_auc'])} |")
    return "\n".join(lines) + "\n"
