"""The report stage of a run: metrics (each beside its chance baseline), plots, HTML, Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attributor._io import atomic_write_json
from attributor.errors import StoreError
from attributor.evaluation import detection_auc, label_agreement, recall_at_fractions
from attributor.reports import (
    Section,
    Table,
    plot_run_comparison,
    plot_score_distribution_by_class,
    plot_self_influence_by_group,
    plot_top_influential,
    write_html_report,
    write_markdown_report,
)
from attributor.scores import Scores

if TYPE_CHECKING:
    from attributor.pipelines.run import Run

__all__ = ["compute_metrics", "write_report"]


def compute_metrics(run: "Run", scores: Scores, self_influence: np.ndarray, single: np.ndarray | None = None) -> dict[str, Any]:
    """Everything metrics.json holds. Mislabel metrics only when labels were corrupted.

    ``single`` is the self-influence from the last checkpoint alone, if that ablation applies.
    """
    data = run.data()
    metrics: dict[str, Any] = {
        "n_train": int(len(data.y_train)),
        "n_test": int(len(data.y_test)),
        "n_flipped": int(data.flipped.sum()),
        "method": run.config.score.method,
        "topk": int(scores.top_indices.shape[1]),
    }
    test = run.test_metrics()
    metrics.update({f"test_{key}": value for key, value in test.items()})
    if data.has_classes:
        agreement = label_agreement(scores.top_indices, data.y_test, data.y_train)
        metrics["topk_label_agreement"] = agreement["agreement"]
        metrics["topk_label_agreement_random"] = agreement["agreement_random"]
    if data.flipped.any():
        auc = detection_auc(self_influence, data.flipped)
        metrics["mislabel_auc"] = auc["auc"]
        metrics["mislabel_auc_random"] = auc["auc_random"]
        metrics["mislabel_auc_random_std"] = auc["auc_random_std"]
        for key, value in recall_at_fractions(self_influence, data.flipped).items():
            metrics[f"mislabel_{key}"] = value
            metrics[f"mislabel_{key}_random"] = float(key.split("@")[1].rstrip("%")) / 100
        if single is not None:
            metrics["mislabel_auc_last_checkpoint"] = detection_auc(single, data.flipped)["auc"]
    return metrics


def write_report(run: "Run", scores: Scores, self_influence: np.ndarray) -> dict[str, Any]:
    """Write RUN/plots/*, report.html, results.md and (last) metrics.json; return the metrics."""
    out, data, args = run.out, run.data(), run.config.report
    single = _last_checkpoint_self_influence(run)
    metrics = compute_metrics(run, scores, self_influence, single)
    plots = out / "plots"
    groups = np.where(data.flipped, "flipped", "clean") if data.flipped.any() else np.array(["train"] * len(self_influence))
    figures = {
        "self_influence": plot_self_influence_by_group(self_influence, list(groups), plots / "self_influence_by_group.png",
                                                       title="Self-influence of clean and flipped training examples"),
    }
    if data.inputs_key is None and data.has_classes:  # numeric inputs drawn with their classes; text is listed in a table
        figures["top"] = plot_top_influential(data.X_test, data.y_test, data.X_train, data.y_train, scores.top_indices,
                                              scores.top_values, scores.bottom_indices, scores.bottom_values,
                                              plots / "top_influential.png", image_shape=data.image_shape,
                                              n_queries=min(args.n_queries, scores.n_queries),
                                              k=min(args.k, scores.top_indices.shape[1]), flipped=data.flipped)
    if scores.values is not None and data.has_classes:
        figures["distribution"] = plot_score_distribution_by_class(np.asarray(scores.values), data.y_test, data.y_train,
                                                                   plots / "score_distribution_by_class.png")
    comparisons = []
    if single is not None:
        comparisons.append(plot_run_comparison(single, self_influence, "last checkpoint only", "checkpoint ensemble",
                                               plots / "compare_last_vs_ensemble.png",
                                               title="Self-influence: one checkpoint vs the ensemble"))
    if args.compare:
        other = _other_self_influence(Path(args.compare), len(self_influence))
        comparisons.append(plot_run_comparison(other, self_influence, f"run {args.compare}", f"run {out}",
                                               plots / "compare_runs.png", title="Self-influence of two runs"))
    sections = _sections(run, metrics, scores, self_influence, figures, comparisons)
    title = f"attributor: {run.config.score.method.upper()} attribution on {data.name}"
    write_html_report(out / "report.html", title, sections)
    write_markdown_report(out / "results.md", title, sections)
    atomic_write_json(out / "metrics.json", _rounded(metrics))
    return metrics


def _sections(run, metrics, scores, self_influence, figures, comparisons) -> list[Section]:
    data, config = run.data(), run.config
    rows = []
    if "mislabel_auc" in metrics:
        rows.append(["mislabel detection AUC (self-influence)", metrics["mislabel_auc"], metrics["mislabel_auc_random"]])
        if "mislabel_auc_last_checkpoint" in metrics:
            rows.append(["mislabel detection AUC, last checkpoint only", metrics["mislabel_auc_last_checkpoint"],
                         metrics["mislabel_auc_random"]])
        rows += [[f"flipped labels found in the top {key.split('@')[1]}", metrics[f"mislabel_{key}"],
                  metrics[f"mislabel_{key}_random"]] for key in ("recall@5%", "recall@10%", "recall@20%")]
    if "topk_label_agreement" in metrics:
        rows.append([f"top-{metrics['topk']} proponents sharing the query's label", metrics["topk_label_agreement"],
                     metrics["topk_label_agreement_random"]])
    for key, name in (("test_accuracy", "test accuracy"), ("test_mse", "test mean squared error"), ("test_loss", "test loss (mean per example)")):
        if key in metrics:
            rows.append([f"{name} (final checkpoint)", metrics[key], ""])
    n_checkpoints = len(run.checkpoints())
    model = config.model.builtin or config.model.entry_point or config.model.hf_path
    corrupted = f" ({metrics['n_flipped']} training labels flipped at random)" if metrics["n_flipped"] else ""
    summary = Section(
        "Summary",
        text=(f"{config.score.method.upper()} scores of {metrics['n_test']} test queries against {metrics['n_train']} "
              f"training examples of {data.name}{corrupted}, task {config.task.name}, from {n_checkpoints} checkpoint(s) of "
              f"the model {model}, gradients projected to {config.featurize.proj_dim} dimensions ({config.featurize.projection}).\n\n"
              "Positive scores mark proponents: training examples that push the query's measured output up. Every metric "
              "is shown beside the same metric for a random ranking."),
        tables=[Table("Metrics", ["metric", "value", "random baseline"], rows)],
    )
    from attributor.pipelines.run import label_text

    order = np.argsort(-self_influence, kind="stable")[:20]
    texts = data.texts_train is not None
    suspicious = Table("The 20 most self-influential training examples",
                       ["rank", "train index", "self-influence", "label", "original label", "flipped"] + (["text"] if texts else []),
                       [[r + 1, int(j), float(self_influence[j]), label_text(data, data.y_train[j]), label_text(data, data.y_train_clean[j]),
                         "yes" if data.flipped[j] else "no"] + ([_short(data.texts_train[j])] if texts else []) for r, j in enumerate(order)])
    neighbours = [_text_neighbours(data, scores, min(config.report.n_queries, metrics["n_test"]), config.report.k)] if texts else []
    influential = Section("Most influential training examples",
                          text="For the first test queries: the query, its strongest proponents and its strongest opponents "
                               "(flipped training labels in red).",
                          images=[figures[key] for key in ("top", "distribution") if key in figures], tables=neighbours)
    sections = [
        summary,
        Section("Mislabel detection by self-influence" if metrics["n_flipped"] else "Self-influence",
                text="Examples whose label was flipped should have large self-influence: the model needs them to "
                     "explain themselves." if metrics["n_flipped"] else
                     "Large self-influence marks atypical training examples (and mislabelled ones, where labels exist).",
                images=[figures["self_influence"]], tables=[suspicious]),
        influential,
    ]
    if comparisons:
        sections.append(Section("Comparisons", text="Each point is one training example.", images=comparisons))
    settings = [[f"{section}.{key}", json.dumps(value)] for section, values in config.model_dump(mode="json").items()
                for key, value in values.items()]
    sections.append(Section("Settings", tables=[Table("Resolved configuration", ["key", "value"], settings)]))
    return sections


def _short(text: Any, limit: int = 160) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _text_neighbours(data, scores: Scores, n_queries: int, k: int) -> Table:
    """Per query: its text, then its strongest proponents and opponents with their texts."""
    from attributor.pipelines.run import label_text

    rows = []
    for q in range(n_queries):
        rows.append([q, "query", "", "", label_text(data, data.y_test[q]), _short(data.texts_test[q])])
        for kind, indices, values in (("proponent", scores.top_indices, scores.top_values),
                                      ("opponent", scores.bottom_indices, scores.bottom_values)):
            for rank, (j, v) in enumerate(zip(indices[q][:k], values[q][:k]), start=1):
                rows.append([q, f"{kind} {rank}", int(j), float(v), label_text(data, data.y_train[j]), _short(data.texts_train[j])])
    return Table("Queries and their most influential training texts", ["query", "kind", "train index", "score", "label", "text"], rows)


def _last_checkpoint_self_influence(run: "Run") -> np.ndarray | None:
    """Self-influence from the last checkpoint alone (an ablation of the ensemble), if it applies."""
    import inspect

    from attributor.methods import Method
    from attributor.pipelines.run import build_method

    args = run.config.score
    last = len(run.checkpoints()) - 1
    takes_checkpoints = "checkpoints" in inspect.signature(Method.lookup(args.method).__init__).parameters
    if last < 1 or not takes_checkpoints or args.checkpoints == [last]:
        return None
    method = build_method(args.method, args.method_args, damping=args.damping, checkpoints=[last])
    store = run.store() if method.requires_features or method.uses_store_folder else None
    return method.fit(store, "train", run.context()).self_influence()


def _other_self_influence(folder: Path, n: int) -> np.ndarray:
    path = folder / "scores" / "self_influence.npy"
    if not path.is_file():
        raise StoreError(f"report.compare: {folder} has no scores/self_influence.npy (run `attributor score` there first)")
    values = np.load(path, allow_pickle=False)
    if values.shape != (n,):
        raise StoreError(f"report.compare: {folder} has {values.shape[0]} training examples, this run has {n}")
    return values


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
