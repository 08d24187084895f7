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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attributor.errors import DataError
from attributor.provenance.experiment import ModelEntry, ProvenanceConfig, read_model_info, run_experiment, write_json_files
from attributor.provenance.fingerprints import DEFAULT_METRIC, fingerprinter_names

__all__ = ["evaluate_zoo", "pair_auc", "best_threshold_accuracy", "EVAL_TYPES"]

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
        return self.select(lambda a, b: a.family != b.family)

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
    }
    return out


def evaluate_zoo(zoo: str | Path, out: str | Path, *, methods: dict[str, dict[str, Any]] | None = None,
                 metrics: dict[str, str] | None = None, progress: bool = True,
                 log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Fingerprint every zoo model, score every pair, write ``metrics.json`` and ``results.md`` to ``out``."""
    zoo, out = Path(zoo), Path(out)
    info = zoo / "model_info.json" if zoo.is_dir() else zoo
    if not info.is_file():
        raise DataError(f"{zoo} holds no model_info.json; build a zoo with `attributor provenance zoo --out {zoo}`")
    models = read_model_info(info)
    methods = methods or {name: {} for name in fingerprinter_names()}
    metrics = {name: (metrics or {}).get(name, DEFAULT_METRIC.get(name, "cosine")) for name in methods}
    config = ProvenanceConfig(model_info=info, methods=methods, metrics=sorted(set(metrics.values())), output_dir=out)
    result = run_experiment(config, progress=progress, log=log)
    report = {name: {"metric": metrics[name], **method_metrics(result.matrices[name][metrics[name]], models)}
              for name in methods}
    write_json_files(out, {"metrics.json": report, "results.md": render_markdown(report, models, zoo)})
    return report


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


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
    lines += ["", "| method | pairs: positive / unrelated | incomparable pairs | AUC all related pairs (no Distilled) |",
              "|---|---|---|---|"]
    for name, row in report.items():
        lines.append(f"| {name} | {row['n_positive']} / {row['n_negative']} | {row['n_incomparable']} | {_fmt(row['related_auc'])} |")
    return "\n".join(lines) + "\n"
