"""PNG plots of attribution results, each with the data behind it as CSV.

Every function writes a PNG at ``path`` (parent folders are created) and a CSV with the
same stem next to it, both atomically, and returns the PNG path. Inputs are checked
first: wrong shapes or NaN/inf raise :class:`attributor.errors.DataError`.

Sign convention (see :mod:`attributor.scores`): a positive score means the training
example pushes the query's measured output up (a proponent), a negative one an opponent.
matplotlib is imported lazily, inside the functions, with the Agg backend.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from attributor.errors import DataError
from attributor.reports._figures import (
    as_array, as_indices, as_labels, csv_text, fmt, pyplot, save_figure, subsample,
)

__all__ = [
    "plot_self_influence_by_group",
    "plot_score_distribution_by_class",
    "plot_top_influential",
    "plot_run_comparison",
]

PathLike = str | os.PathLike[str]
_RELATIONS = ("same-class", "other-class")


def plot_self_influence_by_group(
    values: np.ndarray, groups: Sequence[str], path: PathLike, title: str = "Self-influence by group",
    xlabel: str = "self-influence",
) -> Path:
    """Overlaid, density-normalised histograms of self-influence per group.

    Args:
        values: (n,) self-influence of each training example.
        groups: (n,) a string label per example, e.g. "clean" / "flipped".
        path: where the PNG goes; ``<stem>.csv`` (columns index, group, value) goes beside it.

    Bins are shared by all groups and log-spaced when every value is positive; each
    group's histogram integrates to 1 over the drawn axis (log10 units when log-spaced).
    """
    values = as_array("values", values, ndim=1)
    groups = [str(g) for g in groups]
    if len(groups) != values.shape[0]:
        raise DataError(f"groups has {len(groups)} labels but values has {values.shape[0]} entries")
    names = list(dict.fromkeys(groups))  # first-appearance order
    labels = np.asarray(groups, dtype=object)
    log = bool(values.min() > 0 and values.max() > values.min())
    edges = (np.geomspace(values.min(), values.max(), 41) if log
             else np.histogram_bin_edges(values, bins=40))

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        part = values[labels == name]
        counts, _ = np.histogram(part, bins=edges)
        widths = np.diff(np.log10(edges)) if log else np.diff(edges)
        density = counts / (part.size * widths)  # integrates to 1 over the drawn x axis
        ax.stairs(density, edges, fill=True, alpha=0.4, color=colors(i % 10))
        ax.stairs(density, edges, color=colors(i % 10), linewidth=1.2, label=f"{name} (n={part.size})")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
    ax.set_ylabel("density" + (" per log10 unit" if log else ""))
    ax.set_title(title)
    ax.legend(frameon=False)
    rows = ((i, g, fmt(v)) for i, (g, v) in enumerate(zip(groups, values)))
    return save_figure(fig, path, csv_text(("index", "group", "value"), rows))


def plot_score_distribution_by_class(
    scores: np.ndarray,
    query_labels: np.ndarray,
    train_labels: np.ndarray,
    path: PathLike,
    title: str = "Attribution scores: same-class vs other-class training examples",
    max_points: int = 200_000,
    seed: int = 0,
) -> Path:
    """Box plots of scores per query class, split by the training example's class.

    Args:
        scores: (n_query, n_train) dense attribution scores.
        query_labels: (n_query,) integer class of each query.
        train_labels: (n_train,) integer class of each training example.
        path: where the PNG goes; ``<stem>.csv`` holds one summary row per
            (query_class, relation) with columns query_class, relation, count, mean,
            median, q05, q95, computed on all scores (pairs with count 0 are left out).
        max_points: the boxes are drawn from a seeded subsample of at most this many scores.

    Whiskers span the 5th to 95th percentile; a positive score is a proponent.
    """
    scores = as_array("scores", scores, ndim=2)
    n_query, n_train = scores.shape
    query_labels = as_labels("query_labels", query_labels, n_query)
    train_labels = as_labels("train_labels", train_labels, n_train)
    classes = np.unique(np.concatenate([query_labels, train_labels]))
    fraction = min(1.0, max_points / scores.size)

    summary, boxes, positions = [], [], []
    rng = np.random.default_rng(seed)
    for c in classes:
        rows = scores[query_labels == c]
        if rows.shape[0] == 0:
            continue
        same = train_labels == c
        for offset, relation, mask in ((-0.2, "same-class", same), (0.2, "other-class", ~same)):
            data = rows[:, mask].ravel()
            if data.size == 0:
                continue
            q05, median, q95 = np.quantile(data, [0.05, 0.5, 0.95])
            summary.append((int(c), relation, data.size, fmt(data.mean()), fmt(median), fmt(q05), fmt(q95)))
            take = max(1, int(round(data.size * fraction)))
            picked = data if take >= data.size else rng.choice(data, size=take, replace=False)
            boxes.append((relation, picked))
            positions.append(float(c) + offset)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(classes) + 2), 4.5))
    colors = {"same-class": "#1f77b4", "other-class": "#ff7f0e"}
    artists = ax.boxplot([b for _, b in boxes], positions=positions, widths=0.35, whis=(5, 95),
                         showfliers=False, patch_artist=True, medianprops={"color": "black"})
    for patch, (relation, _) in zip(artists["boxes"], boxes):
        patch.set_facecolor(colors[relation])
        patch.set_alpha(0.6)
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xticks([float(c) for c in classes], [str(int(c)) for c in classes])
    ax.set_xlim(float(classes.min()) - 0.7, float(classes.max()) + 0.7)
    ax.set_xlabel("query class")
    ax.set_ylabel("attribution score")
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[r], alpha=0.6) for r in _RELATIONS]
    ax.legend(handles, ["same class as query", "other class"], frameon=False)
    header = ("query_class", "relation", "count", "mean", "median", "q05", "q95")
    return save_figure(fig, path, csv_text(header, summary))


def _width(array: np.ndarray) -> int:
    """Number of columns of a 2-D array (-1 otherwise, so that the shape check fails)."""
    shape = np.shape(array)
    return shape[1] if len(shape) == 2 else -1


def _draw_example(ax, vector: np.ndarray, image_shape: tuple[int, int] | None) -> None:
    """Draw one example: a grayscale image if ``image_shape`` is given, else a bar plot."""
    if image_shape is not None:
        ax.imshow(vector.reshape(image_shape), cmap="gray_r", interpolation="nearest")
    else:
        ax.bar(np.arange(vector.size), vector, width=1.0, color="0.35")
        ax.set_xlim(-0.5, vector.size - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_top_influential(
    query_inputs: np.ndarray,
    query_labels: np.ndarray,
    train_inputs: np.ndarray,
    train_labels: np.ndarray,
    top_indices: np.ndarray,
    top_values: np.ndarray,
    bottom_indices: np.ndarray,
    bottom_values: np.ndarray,
    path: PathLike,
    image_shape: tuple[int, int] | None = None,
    n_queries: int = 6,
    k: int = 5,
    flipped: np.ndarray | None = None,
) -> Path:
    """A grid: per query, the query, its k strongest proponents, then k strongest opponents.

    Args:
        query_inputs: (n_query, d) or (n_query, *image_shape) query features.
        query_labels: (n_query,) query classes.
        train_inputs: (n_train, d) or (n_train, *image_shape) training features.
        train_labels: (n_train,) training labels as trained on (flipped ones included).
        top_indices, top_values: (n_query, k_top) proponents, largest score first.
        bottom_indices, bottom_values: (n_query, k_bottom) opponents, most negative first.
        path: where the PNG goes; ``<stem>.csv`` has one row per drawn cell with columns
            query, kind (proponent/opponent), rank, train_index, score, train_label.
        image_shape: (h, w) with h*w == d to draw images; None draws bar plots.
        n_queries: draw the first min(n_queries, n_query) queries.
        k: proponents and opponents per query; min(k, k_top, k_bottom) are drawn.
        flipped: (n_train,) bool, True where the training label was corrupted; those
            cells get red titles.
    """
    queries = as_array("query_inputs", query_inputs, min_size=1)
    train = as_array("train_inputs", train_inputs, min_size=1)
    n_query, n_train = queries.shape[0], train.shape[0]
    queries, train = queries.reshape(n_query, -1), train.reshape(n_train, -1)
    if queries.shape[1] != train.shape[1]:
        raise DataError(f"query_inputs have {queries.shape[1]} features but train_inputs have {train.shape[1]}")
    if image_shape is not None and int(np.prod(image_shape)) != queries.shape[1]:
        raise DataError(f"image_shape {tuple(image_shape)} does not hold {queries.shape[1]} features per example")
    query_labels = as_labels("query_labels", query_labels, n_query)
    train_labels = as_labels("train_labels", train_labels, n_train)
    top_i = as_indices("top_indices", top_indices, (n_query, _width(top_indices)), n_train)
    bot_i = as_indices("bottom_indices", bottom_indices, (n_query, _width(bottom_indices)), n_train)
    top_v = as_array("top_values", top_values, ndim=2)
    bot_v = as_array("bottom_values", bottom_values, ndim=2)
    if top_v.shape != top_i.shape or bot_v.shape != bot_i.shape:
        raise DataError(f"values and indices must match: top {top_v.shape} vs {top_i.shape}, "
                        f"bottom {bot_v.shape} vs {bot_i.shape}")
    if flipped is None:
        flipped = np.zeros(n_train, dtype=bool)
    flipped = np.asarray(flipped)
    if flipped.shape != (n_train,):
        raise DataError(f"flipped must have shape ({n_train},), got {flipped.shape}")
    flipped = flipped.astype(bool)
    if n_queries < 1 or k < 1:
        raise DataError(f"n_queries and k must be at least 1, got n_queries={n_queries}, k={k}")
    n_rows, k = min(n_queries, n_query), min(k, top_i.shape[1], bot_i.shape[1])
    if k == 0:
        raise DataError("top_indices and bottom_indices have no columns; nothing to draw")

    plt = pyplot()
    n_cols = 1 + 2 * k
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.55 * n_rows), squeeze=False)
    rows = []
    for q in range(n_rows):
        ax = axes[q, 0]
        _draw_example(ax, queries[q], image_shape)
        ax.set_title(f"query {q}\ny={query_labels[q]}", fontsize=8, fontweight="bold")
        for side, (kind, idx, val) in enumerate((("proponent", top_i, top_v), ("opponent", bot_i, bot_v))):
            for r in range(k):
                j, score = int(idx[q, r]), float(val[q, r])
                ax = axes[q, 1 + side * k + r]
                _draw_example(ax, train[j], image_shape)
                mark = " (flip)" if flipped[j] else ""
                ax.set_title(f"y={train_labels[j]}  {score:+.3g}{mark}", fontsize=7,
                             color="red" if flipped[j] else "black")
                for spine in ax.spines.values():
                    spine.set_edgecolor("#2ca02c" if kind == "proponent" else "#d62728")
                rows.append((q, kind, r, j, fmt(score), int(train_labels[j])))
    if n_rows:
        axes[0, 1].annotate("proponents (+) \u2192", (0, 1.45), xycoords="axes fraction", fontsize=8, color="#2ca02c")
        axes[0, 1 + k].annotate("opponents (\u2212) \u2192", (0, 1.45), xycoords="axes fraction", fontsize=8, color="#d62728")
    fig.suptitle("Most influential training examples (red: flipped label)", fontsize=10, y=1.0)
    fig.tight_layout()
    header = ("query", "kind", "rank", "train_index", "score", "train_label")
    return save_figure(fig, path, csv_text(header, rows))


def _correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Spearman, Pearson) of two 1-D arrays; NaN where undefined (constant input)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            from scipy import stats

            return float(stats.spearmanr(a, b)[0]), float(stats.pearsonr(a, b)[0])
        except ImportError:
            def ranks(x: np.ndarray) -> np.ndarray:  # average ranks for ties
                order = np.argsort(x, kind="stable")
                _, inverse, counts = np.unique(x[order], return_inverse=True, return_counts=True)
                mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
                out = np.empty(x.size)
                out[order] = mean_rank[inverse]
                return out

            return float(np.corrcoef(ranks(a), ranks(b))[0, 1]), float(np.corrcoef(a, b)[0, 1])


def plot_run_comparison(
    a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, path: PathLike,
    title: str = "Run comparison", max_points: int = 50_000, seed: int = 0,
) -> Path:
    """Scatter of two runs' values against each other with Spearman/Pearson in the title.

    Args:
        a, b: (n,) values of the same n items from two runs (e.g. self-influence, or
            flattened (n_query * n_train) scores), n >= 2.
        name_a, name_b: axis labels and CSV column headers.
        path: where the PNG goes; ``<stem>.csv`` holds all n points (index, name_a, name_b).
        max_points: the scatter draws a seeded subsample of at most this many points;
            correlations and the least-squares line use all points.
    """
    a = as_array(f"a ({name_a})", a, min_size=2)
    b = as_array(f"b ({name_b})", b, min_size=2)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"a ({name_a}) and b ({name_b}) must be 1-D arrays of the same length, "
                        f"got shapes {a.shape} and {b.shape}")
    spearman, pearson = _correlations(a, b)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    keep = subsample(a.size, max_points, seed)
    ax.scatter(a[keep], b[keep], s=6 if keep.size > 2000 else 12, alpha=0.4, linewidths=0)
    if np.ptp(a) > 0:
        slope, intercept = np.polyfit(a, b, 1)
        xs = np.array([a.min(), a.max()])
        ax.plot(xs, slope * xs + intercept, color="#d62728", linewidth=1.2,
                label=f"least squares: y = {slope:.3g} x {intercept:+.3g}")
        ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel(name_a)
    ax.set_ylabel(name_b)
    shown = "" if keep.size == a.size else f", {keep.size:,} of {a.size:,} shown"
    ax.set_title(f"{title}\nSpearman {spearman:.3f}, Pearson {pearson:.3f} (n={a.size:,}{shown})", fontsize=10)
    col_a, col_b = (name_a, name_b) if name_a != name_b else (f"{name_a} (a)", f"{name_b} (b)")
    lines = "".join(f"{i},{fmt(x)},{fmt(y)}\n" for i, (x, y) in enumerate(zip(a, b)))
    header = csv_text(("index", col_a, col_b), ())
    return save_figure(fig, path, header + lines)
