"""``attributor curate bench``: cluster-influence curation against curation baselines, honestly.

Classification variant (:mod:`attributor.curation.classification`): digits with label noise,
an off-target domain and a minority group; a clean validation set from the target
distribution and a separate test set. Per seed:

1. train the reference MLP on the whole pool (:func:`train_weighted`, weights 1);
2. embed the pool with that model's own penultimate features and cluster it (k-means,
   ``clusters``);
3. estimate the influence of every example and every cluster on the validation loss by
   DataInf and by EK-FAC (:mod:`attributor.curation.influence`);
4. select at each budget (fraction of the pool kept) by every method, retrain from scratch
   on the selection (same trainer, same seed) and measure test accuracy, worst-group
   accuracy and the gap between the groups.

Methods: ``random``; ``loss-rank`` (keep the lowest reference losses); ``k-center``
(diversity); ``semdedup``; ``influence`` (keep the examples with the largest DataInf
influence); ``cluster-datainf`` and ``cluster-ekfac`` (InfluenceSpace: keep whole clusters
by influence, within each class: a cluster is a (k-means cluster, label) pair and every
class keeps the budget's share, so no class is dropped whole); ``cluster-datainf+reweight``
(the same clusters, then up-weight helpful and down-weight harmful ones: weights exp(z),
cap 3, mean 1); ``cluster-datainf-global`` (whole k-means clusters ranked across classes,
as the method is usually described); and ``full`` (everything, budget 1).

Aggregation over seeds: mean with a 95% t-interval, and the paired difference to
``random`` at the same budget and seed with its t-interval. ``corrupted_removed`` is the
fraction of the label-noise examples a selection dropped (ground truth). Every (seed,
method, budget) result is cached in OUT/cache as it finishes, so an interrupted bench
resumes; other settings in the same OUT are refused unless ``overwrite``.

Writes OUT/results.csv (``COLUMNS``), OUT/results.md and OUT/config.json.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from attributor._io import atomic_write_json, atomic_write_text
from attributor.errors import ConfigError

__all__ = ["CurateBenchConfig", "run_curate_bench", "COLUMNS", "METHODS"]

COLUMNS = ["variant", "method", "budget", "metric", "mean", "low", "high", "diff_vs_random", "diff_low", "diff_high",
           "corrupted_removed", "seeds"]
METHODS = ("random", "loss-rank", "k-center", "semdedup", "influence", "cluster-datainf", "cluster-ekfac",
           "cluster-datainf+reweight", "cluster-datainf-global")
METRICS = ("accuracy", "worst_group_accuracy", "group_gap", "minority_removed", "domain_removed", "selection_seconds",
           "retrain_seconds")


@dataclass
class CurateBenchConfig:
    """Settings of one benchmark run (saved as OUT/config.json)."""

    seeds: int = 5
    budgets: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    clusters: int = 20
    noise: float = 0.25
    shift: float = 0.25
    minority: float = 0.15
    hidden: int = 64
    steps: int = 300
    lr: float = 1e-2
    max_pool: int | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("seeds", "clusters", "hidden", "steps", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"curate bench {name} must be a positive integer, got {value!r}")
        if not self.budgets or any(not (isinstance(b, (int, float)) and 0 < b < 1) for b in self.budgets):
            raise ConfigError(f"curate bench budgets must be fractions in (0, 1), got {self.budgets!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown curation method {unknown[0]!r}; known: {', '.join(METHODS)}")
        if "random" not in self.methods:
            raise ConfigError("curate bench needs the random method: every difference is measured against it")

    @classmethod
    def quick(cls, **overrides: Any) -> "CurateBenchConfig":
        return cls(**{"seeds": 2, "budgets": [0.5], "clusters": 8, "steps": 150, "max_pool": 400, **overrides})


def run_curate_bench(out: str | Path, config: CurateBenchConfig | None = None, *, overwrite: bool = False,
                     log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Run the benchmark into ``out``; returns the result rows (also in results.csv / results.md)."""
    config = config or CurateBenchConfig()
    out = Path(out)
    _claim(out, config, overwrite)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        per_seed = [_run_seed(out, config, seed, log) for seed in range(config.seeds)]
    finally:
        torch.set_num_threads(previous)
    rows = _aggregate(per_seed, config)
    _write(out, rows, config)
    return rows


def _run_seed(out: Path, config: CurateBenchConfig, seed: int, log: Callable[[str], None]) -> dict[tuple[str, float], dict]:
    """{(method, budget): {metric: value, "corrupted_removed": ...}} for one seed (cached per entry)."""
    from attributor.curation.classification import corrupted_digits, evaluate_groups, train_weighted

    cache = out / "cache" / f"seed{seed}"
    data = corrupted_digits(seed, noise=config.noise, shift=config.shift, minority=config.minority,
                            max_pool=config.max_pool)
    n = len(data.y_train)
    wanted = [("full", 1.0)] + [(m, b) for m in config.methods for b in config.budgets]
    results: dict[tuple[str, float], dict] = {}
    todo = []
    for method, budget in wanted:
        file = cache / f"{method}@{budget:g}.json"
        if file.is_file():
            results[(method, budget)] = json.loads(file.read_text())
        else:
            todo.append((method, budget))
    if not todo:
        return results
    log(f"seed {seed}: {n} training examples ({int(data.corrupted.sum())} mislabelled, {int(data.domain.sum())} off-target, "
        f"{int(data.train_group.sum())} minority); {len(todo)} selections to retrain")
    state = _SeedState(data, config, seed, cache)
    for method, budget in todo:
        start = time.perf_counter()
        weights = state.select(method, budget)
        selection_s = time.perf_counter() - start + state.shared_seconds(method)
        start = time.perf_counter()
        model = train_weighted(data.x_train, data.y_train, weights, data.n_classes, hidden=config.hidden,
                               steps=config.steps, lr=config.lr, seed=seed)
        retrain_s = time.perf_counter() - start
        result = evaluate_groups(model, data.x_test, data.y_test, data.test_group)
        removed = weights == 0
        result.update({"selection_seconds": selection_s, "retrain_seconds": retrain_s,
                       "corrupted_removed": float(removed[data.corrupted].mean()) if data.corrupted.any() else 0.0,
                       "domain_removed": float(removed[data.domain].mean()) if data.domain.any() else 0.0,
                       "minority_removed": float(removed[data.train_group == 1].mean()) if data.train_group.any() else 0.0,
                       "kept": float((weights > 0).mean())})
        atomic_write_json(cache / f"{method}@{budget:g}.json", result)
        results[(method, budget)] = result
    return results


class _SeedState:
    """What one seed's selections share: the reference model, embeddings, clusters, influence (computed once, lazily)."""

    def __init__(self, data: Any, config: CurateBenchConfig, seed: int, cache: Path):
        self.data, self.config, self.seed, self.cache = data, config, seed, cache
        self._seconds: dict[str, float] = {}
        self._values: dict[str, Any] = {}

    def _get(self, name: str, compute: Callable[[], Any]) -> Any:
        if name not in self._values:
            start = time.perf_counter()
            self._values[name] = compute()
            self._seconds[name] = time.perf_counter() - start
        return self._values[name]

    def shared_seconds(self, method: str) -> float:
        """Time of the shared steps a method needs (reference model, embedding, clustering, influence)."""
        needs = {"random": [], "loss-rank": ["reference"], "k-center": ["reference", "embedding"],
                 "semdedup": ["reference", "embedding", "clusters"], "influence": ["reference", "datainf"],
                 "cluster-datainf": ["reference", "embedding", "clusters", "datainf"],
                 "cluster-ekfac": ["reference", "embedding", "clusters", "if-ekfac"],
                 "cluster-datainf+reweight": ["reference", "embedding", "clusters", "datainf"],
                 "cluster-datainf-global": ["reference", "embedding", "clusters", "datainf"], "full": []}[method]
        return sum(self._seconds.get(name, 0.0) for name in needs)

    def reference(self) -> torch.nn.Module:
        from attributor.curation.classification import train_weighted

        d, c = self.data, self.config
        return self._get("reference", lambda: train_weighted(d.x_train, d.y_train, np.ones(len(d.y_train)), d.n_classes,
                                                              hidden=c.hidden, steps=c.steps, lr=c.lr, seed=self.seed))

    def embedding(self) -> np.ndarray:
        from attributor.curation.classification import penultimate

        return self._get("embedding", lambda: penultimate(self.reference(), self.data.x_train))

    def clusters(self) -> np.ndarray:
        from sklearn.cluster import KMeans

        return self._get("clusters", lambda: KMeans(self.config.clusters, n_init=3, random_state=self.seed)
                         .fit_predict(self.embedding()).astype(np.int64))

    def groups(self) -> np.ndarray:
        """One id per (cluster, label) pair: clusters that never straddle classes."""
        pairs = self.clusters() * self.data.n_classes + self.data.y_train
        return np.unique(pairs, return_inverse=True)[1].astype(np.int64)

    def influence(self, method: str) -> Any:
        from attributor.curation.influence import estimate_influence
        from attributor.data import ArrayDataset
        from attributor.models.checkpoints import save_checkpoint

        def compute() -> Any:
            d = self.data
            checkpoint = save_checkpoint(self.reference(), self.cache / "reference.pt")
            return estimate_influence(self.reference(), checkpoint, ArrayDataset(d.x_train, d.y_train),
                                      ArrayDataset(d.x_val, d.y_val), self.groups(), method)

        return self._get(method, compute)

    def select(self, method: str, budget: float) -> np.ndarray:
        from attributor.curation import select
        from attributor.curation.classification import per_example_loss

        n = len(self.data.y_train)
        if method == "full":
            mask = np.ones(n, dtype=bool)
        elif method == "random":
            mask = select.random_keep(n, budget, seed=self.seed)
        elif method == "loss-rank":
            mask = select.top_keep(-per_example_loss(self.reference(), self.data.x_train, self.data.y_train), budget)
        elif method == "k-center":
            mask = select.k_center_greedy(self.embedding(), budget, seed=self.seed)
        elif method == "semdedup":
            mask = select.semantic_dedup(self.embedding(), self.clusters(), budget)
        elif method == "influence":
            mask = select.top_keep(self.influence("datainf").examples, budget)
        elif method in ("cluster-datainf", "cluster-ekfac", "cluster-datainf+reweight"):
            estimate = self.influence("if-ekfac" if method == "cluster-ekfac" else "datainf")
            groups = self.groups()
            mask = select.cluster_keep(groups, estimate.clusters, estimate.examples, budget, strata=self.data.y_train)
            if method.endswith("+reweight"):
                return np.where(mask, select.reweight(groups, estimate.clusters), 0.0)
        elif method == "cluster-datainf-global":
            estimate = self.influence("datainf")
            clusters = self.clusters()
            # a cluster's influence is the sum of its members' (exact: the score is linear in the gradient)
            totals = np.bincount(clusters, weights=estimate.examples, minlength=self.config.clusters)
            mask = select.cluster_keep(clusters, totals, estimate.examples, budget)
        else:
            raise ConfigError(f"unknown curation method {method!r}")
        return mask.astype(np.float64)


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (a single seed: the mean as both ends)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2 or values.std() == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def _aggregate(per_seed: list[dict[tuple[str, float], dict]], config: CurateBenchConfig) -> list[dict[str, Any]]:
    rows = []
    keys = [("full", 1.0)] + [(m, b) for m in config.methods for b in config.budgets]
    for method, budget in keys:
        for metric in METRICS:
            values = np.array([seed[(method, budget)][metric] for seed in per_seed])
            mean, low, high = _interval(values)
            if method == "full":
                diff = (float("nan"),) * 3
            else:
                diff = _interval(values - np.array([seed[("random", budget)][metric] for seed in per_seed]))
            removed = float(np.mean([seed[(method, budget)]["corrupted_removed"] for seed in per_seed]))
            rows.append({"variant": "classification", "method": method, "budget": budget, "metric": metric,
                         "mean": mean, "low": low, "high": high, "diff_vs_random": diff[0], "diff_low": diff[1],
                         "diff_high": diff[2], "corrupted_removed": removed, "seeds": len(per_seed)})
    return rows


def _claim(out: Path, config: CurateBenchConfig, overwrite: bool) -> None:
    saved = out / "config.json"
    settings = asdict(config)
    if saved.is_file():
        same = json.loads(saved.read_text()) == settings
        if not same and not overwrite:
            raise ConfigError(f"{out} holds a curate bench run with other settings; use another --out or pass --overwrite")
        if not same:
            shutil.rmtree(out / "cache", ignore_errors=True)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not a curate bench run; refusing to write into it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, settings)


def _write(out: Path, rows: list[dict[str, Any]], config: CurateBenchConfig) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    lines = ["# Curation benchmark", "",
             f"Classification variant: digits with {config.noise:.0%} label noise, {config.shift:.0%} off-target "
             f"(transposed) examples added, a {config.minority:.0%} minority style (inverted intensities); "
             f"{config.seeds} seeds; {config.clusters} k-means clusters of the reference model's penultimate features. "
             "Mean [95% t-interval] over seeds; diff = paired difference to random at the same budget and seed. "
             "removed = fraction of the mislabelled examples dropped.", ""]
    for metric in ("accuracy", "worst_group_accuracy", "group_gap"):
        lines += [f"## {metric.replace('_', ' ')}", "", "| method | " + " | ".join(f"kept {b:.0%}" for b in config.budgets) + " |",
                  "|---|" + "---|" * len(config.budgets)]
        full = next(r for r in rows if r["method"] == "full" and r["metric"] == metric)
        for method in config.methods:
            cells = []
            for budget in config.budgets:
                r = next(r for r in rows if r["method"] == method and r["budget"] == budget and r["metric"] == metric)
                cell = f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
                if method != "random":
                    cell += f" diff {r['diff_vs_random']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
                if metric == "accuracy":
                    cell += f" removed {r['corrupted_removed']:.2f}"
                cells.append(cell)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += ["", f"Full data: {full['mean']:.3f} [{full['low']:.3f}, {full['high']:.3f}].", ""]
    middle = config.budgets[len(config.budgets) // 2]
    lines += [f"## What each selection removed (kept {middle:.0%})", "",
              "| method | mislabelled | off-target | minority group |", "|---|---|---|---|"]
    for method in config.methods:
        cell = {m: next(r for r in rows if r["method"] == method and r["budget"] == middle and r["metric"] == m)
                for m in ("accuracy", "domain_removed", "minority_removed")}
        lines.append(f"| {method} | {cell['accuracy']['corrupted_removed']:.2f} | {cell['domain_removed']['mean']:.2f} | "
                     f"{cell['minority_removed']['mean']:.2f} |")
    lines.append("")
    timing = [r for r in rows if r["metric"] in ("selection_seconds", "retrain_seconds") and r["budget"] == config.budgets[0]]
    lines += ["## Cost (seconds, first budget)", "", "| method | selection | retrain |", "|---|---|---|"]
    for method in config.methods:
        sel = next(r for r in timing if r["method"] == method and r["metric"] == "selection_seconds")
        ret = next(r for r in timing if r["method"] == method and r["metric"] == "retrain_seconds")
        lines.append(f"| {method} | {sel['mean']:.2f} | {ret['mean']:.2f} |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
