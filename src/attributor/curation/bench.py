"""``attributor curate bench``: cluster-influence curation against curation baselines, honestly.

Two variants (``variants``), each at every budget and seed.

Retrieval variant (:mod:`attributor.curation.retrieval`): digits paired with templated
captions (MiniLM embeddings), a CLIP-style dual encoder trained with InfoNCE; mismatched
pairs, near-duplicates, an off-target domain and a minority group in the pool. Metrics:
image->text and text->image R@1/5/10, worst-group R@1 and the group gap. Besides the
methods below it has ``alignment`` (DataComp's CLIP-score filter: keep the pairs whose
image and caption agree most under the reference model); its clusters are k-means over
the joint [image ; caption] embedding, ranked across the whole set (captions have no
class).

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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from attributor._io import atomic_write_json, atomic_write_text
from attributor.errors import ConfigError
from attributor.evaluation.runs import claim_run_dir, t_interval, torch_threads

__all__ = ["CurateBenchConfig", "run_curate_bench", "COLUMNS", "METHODS"]

COLUMNS = ["variant", "method", "budget", "metric", "mean", "low", "high", "diff_vs_random", "diff_low", "diff_high",
           "corrupted_removed", "seeds"]
METHODS = ("random", "loss-rank", "alignment", "k-center", "semdedup", "influence", "cluster-datainf", "cluster-ekfac",
           "cluster-datainf+reweight", "cluster-datainf-global")
VARIANT_METHODS = {
    "classification": [m for m in METHODS if m != "alignment"],
    "retrieval": [m for m in METHODS if m != "cluster-datainf-global"],
}
_REMOVED = ("minority_removed", "domain_removed", "duplicate_removed", "selection_seconds", "retrain_seconds")
METRICS = {
    "classification": ("accuracy", "worst_group_accuracy", "group_gap") + _REMOVED,
    "retrieval": ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "worst_group_r1", "group_gap") + _REMOVED,
}
HEADLINE = {"classification": ("accuracy", "worst_group_accuracy", "group_gap"),
            "retrieval": ("i2t_r1", "t2i_r1", "worst_group_r1", "group_gap")}


@dataclass
class CurateBenchConfig:
    """Settings of one benchmark run (saved as OUT/config.json)."""

    seeds: int = 5
    variants: list[str] = field(default_factory=lambda: ["classification", "retrieval"])
    budgets: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    clusters: int = 20
    noise: float = 0.25
    shift: float = 0.25
    minority: float = 0.15
    mismatch: float = 0.25
    duplicates: float = 0.15
    hidden: int = 64
    steps: int = 300
    retrieval_steps: int = 200
    lr: float = 1e-2
    max_pool: int | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("seeds", "clusters", "hidden", "steps", "retrieval_steps", "threads"):
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
        bad = [v for v in self.variants if v not in VARIANT_METHODS]
        if bad or not self.variants:
            raise ConfigError(f"curate bench variants must be among {', '.join(VARIANT_METHODS)}, got {self.variants!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> "CurateBenchConfig":
        return cls(**{"seeds": 2, "budgets": [0.5], "clusters": 8, "steps": 150, "retrieval_steps": 100, "max_pool": 300,
                      **overrides})

    def variant_methods(self, variant: str) -> list[str]:
        return [m for m in self.methods if m in VARIANT_METHODS[variant]]


def run_curate_bench(out: str | Path, config: CurateBenchConfig | None = None, *, overwrite: bool = False,
                     log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Run the benchmark into ``out``; returns the result rows (also in results.csv / results.md)."""
    config = config or CurateBenchConfig()
    out = Path(out)
    _claim(out, config, overwrite)
    with torch_threads(config.threads):
        rows = []
        for variant in config.variants:
            per_seed = [_run_seed(out, config, variant, seed, log) for seed in range(config.seeds)]
            rows += _aggregate(per_seed, config, variant)
    _write(out, rows, config)
    return rows


def _run_seed(out: Path, config: CurateBenchConfig, variant: str, seed: int,
              log: Callable[[str], None]) -> dict[tuple[str, float], dict]:
    """{(method, budget): {metric: value, "corrupted_removed": ...}} for one seed (cached per entry)."""
    cache = out / "cache" / variant / f"seed{seed}"
    wanted = [("full", 1.0)] + [(m, b) for m in config.variant_methods(variant) for b in config.budgets]
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
    state = (_ClassificationState if variant == "classification" else _RetrievalState)(config, seed, cache)
    data = state.data
    log(f"{variant}, seed {seed}: {len(data.x_train)} training examples ({int(data.corrupted.sum())} corrupted, "
        f"{int(data.domain.sum())} off-target, {int(data.train_group.sum())} minority); {len(todo)} selections to retrain")
    for method, budget in todo:
        start = time.perf_counter()
        weights = state.select(method, budget)
        selection_s = time.perf_counter() - start + state.shared_seconds(method)
        start = time.perf_counter()
        result = state.evaluate(weights)
        retrain_s = time.perf_counter() - start
        removed = weights == 0

        def share(flags: np.ndarray) -> float:
            return float(removed[flags].mean()) if flags.any() else 0.0

        result.update({"selection_seconds": selection_s, "retrain_seconds": retrain_s,
                       "corrupted_removed": share(data.corrupted), "domain_removed": share(data.domain),
                       "minority_removed": share(data.train_group == 1),
                       "duplicate_removed": share(getattr(data, "duplicate", np.zeros(len(weights), bool))),
                       "kept": float((weights > 0).mean())})
        atomic_write_json(cache / f"{method}@{budget:g}.json", result)
        results[(method, budget)] = result
    return results


class _SeedState:
    """What one seed's selections share: the reference model, embeddings, clusters, influence (computed once, lazily)."""

    NEEDS = {"random": [], "full": [], "loss-rank": ["reference"], "alignment": ["reference"],
             "k-center": ["reference", "embedding"], "semdedup": ["reference", "embedding", "clusters"],
             "influence": ["reference", "datainf"], "cluster-datainf": ["reference", "embedding", "clusters", "datainf"],
             "cluster-ekfac": ["reference", "embedding", "clusters", "if-ekfac"],
             "cluster-datainf+reweight": ["reference", "embedding", "clusters", "datainf"],
             "cluster-datainf-global": ["reference", "embedding", "clusters", "datainf"]}
    strata: np.ndarray | None = None  # selections by cluster keep the budget within each stratum

    def __init__(self, config: CurateBenchConfig, seed: int, cache: Path):
        self.config, self.seed, self.cache = config, seed, cache
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
        return sum(self._seconds.get(name, 0.0) for name in self.NEEDS[method])

    # variant hooks
    def train(self, weights: np.ndarray) -> torch.nn.Module:
        raise NotImplementedError

    def evaluate(self, weights: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def _embedding(self) -> np.ndarray:
        raise NotImplementedError

    def _losses(self) -> np.ndarray:
        raise NotImplementedError

    def _influence(self, method: str, checkpoint: Path) -> Any:
        raise NotImplementedError

    def groups(self) -> np.ndarray:
        """The groups whose influence is estimated (the clusters, or finer)."""
        return self.clusters()

    # shared steps
    def reference(self) -> torch.nn.Module:
        return self._get("reference", lambda: self.train(np.ones(len(self.data.x_train))))

    def embedding(self) -> np.ndarray:
        return self._get("embedding", self._embedding)

    def clusters(self) -> np.ndarray:
        from sklearn.cluster import KMeans

        return self._get("clusters", lambda: KMeans(self.config.clusters, n_init=3, random_state=self.seed)
                         .fit_predict(self.embedding()).astype(np.int64))

    def influence(self, method: str) -> Any:
        from attributor.models.checkpoints import save_checkpoint

        return self._get(method, lambda: self._influence(method, save_checkpoint(self.reference(), self.cache / "reference.pt")))

    def select(self, method: str, budget: float) -> np.ndarray:
        from attributor.curation import select

        n = len(self.data.x_train)
        if method == "full":
            mask = np.ones(n, dtype=bool)
        elif method == "random":
            mask = select.random_keep(n, budget, seed=self.seed)
        elif method == "loss-rank":
            mask = select.top_keep(-self._get("losses", self._losses), budget)
        elif method == "alignment":
            mask = select.top_keep(self._get("alignment", self._alignment), budget)
        elif method == "k-center":
            mask = select.k_center_greedy(self.embedding(), budget, seed=self.seed)
        elif method == "semdedup":
            mask = select.semantic_dedup(self.embedding(), self.clusters(), budget)
        elif method == "influence":
            mask = select.top_keep(self.influence("datainf").examples, budget)
        elif method in ("cluster-datainf", "cluster-ekfac", "cluster-datainf+reweight"):
            estimate = self.influence("if-ekfac" if method == "cluster-ekfac" else "datainf")
            groups = self.groups()
            mask = select.cluster_keep(groups, estimate.clusters, estimate.examples, budget, strata=self.strata)
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

    def _alignment(self) -> np.ndarray:
        raise ConfigError("the alignment filter needs paired data (the retrieval variant)")


class _ClassificationState(_SeedState):
    def __init__(self, config: CurateBenchConfig, seed: int, cache: Path):
        from attributor.curation.classification import corrupted_digits

        super().__init__(config, seed, cache)
        self.data = corrupted_digits(seed, noise=config.noise, shift=config.shift, minority=config.minority,
                                     max_pool=config.max_pool)
        self.strata = self.data.y_train

    def train(self, weights: np.ndarray) -> torch.nn.Module:
        from attributor.curation.classification import train_weighted

        d, c = self.data, self.config
        return train_weighted(d.x_train, d.y_train, weights, d.n_classes, hidden=c.hidden, steps=c.steps, lr=c.lr,
                              seed=self.seed)

    def evaluate(self, weights: np.ndarray) -> dict[str, float]:
        from attributor.curation.classification import evaluate_groups

        return evaluate_groups(self.train(weights), self.data.x_test, self.data.y_test, self.data.test_group)

    def _embedding(self) -> np.ndarray:
        from attributor.curation.classification import penultimate

        return penultimate(self.reference(), self.data.x_train)

    def _losses(self) -> np.ndarray:
        from attributor.curation.classification import per_example_loss

        return per_example_loss(self.reference(), self.data.x_train, self.data.y_train)

    def groups(self) -> np.ndarray:
        """One id per (cluster, label) pair: clusters that never straddle classes."""
        pairs = self.clusters() * self.data.n_classes + self.data.y_train
        return np.unique(pairs, return_inverse=True)[1].astype(np.int64)

    def _influence(self, method: str, checkpoint: Path) -> Any:
        from attributor.curation.influence import estimate_influence
        from attributor.data import ArrayDataset

        d = self.data
        return estimate_influence(self.reference(), checkpoint, ArrayDataset(d.x_train, d.y_train),
                                  ArrayDataset(d.x_val, d.y_val), self.groups(), method)


class _RetrievalState(_SeedState):
    def __init__(self, config: CurateBenchConfig, seed: int, cache: Path):
        from attributor.curation.retrieval import paired_digits

        super().__init__(config, seed, cache)
        self.data = paired_digits(seed, mismatch=config.mismatch, duplicates=config.duplicates, shift=config.shift,
                                  minority=config.minority, max_pool=config.max_pool)

    def train(self, weights: np.ndarray) -> torch.nn.Module:
        from attributor.curation.retrieval import train_dual

        return train_dual(self.data, weights, hidden=self.config.hidden, steps=self.config.retrieval_steps, seed=self.seed)

    def evaluate(self, weights: np.ndarray) -> dict[str, float]:
        from attributor.curation.retrieval import retrieval_metrics

        d = self.data
        return retrieval_metrics(self.train(weights), d.x_test, d.t_test, d.y_test, d.test_group)

    def _embedding(self) -> np.ndarray:
        from attributor.curation.retrieval import joint_embedding

        return joint_embedding(self.reference(), self.data.x_train, self.data.t_train)

    def _losses(self) -> np.ndarray:
        from attributor.curation.retrieval import pair_loss

        return pair_loss(self.reference(), self.data)

    def _alignment(self) -> np.ndarray:
        from attributor.curation.retrieval import alignment

        return alignment(self.reference(), self.data.x_train, self.data.t_train)

    def _influence(self, method: str, checkpoint: Path) -> Any:
        from attributor.curation.influence import ContrastiveValidationLossTask, estimate_influence
        from attributor.curation.retrieval import pair_dataset

        d = self.data
        return estimate_influence(self.reference(), checkpoint, pair_dataset(d.x_train, d.t_train, d.negatives_train),
                                  pair_dataset(d.x_val, d.t_val, d.negatives_val), self.clusters(), method,
                                  ContrastiveValidationLossTask(0.1))


def _aggregate(per_seed: list[dict[tuple[str, float], dict]], config: CurateBenchConfig, variant: str) -> list[dict[str, Any]]:
    rows = []
    keys = [("full", 1.0)] + [(m, b) for m in config.variant_methods(variant) for b in config.budgets]
    for method, budget in keys:
        for metric in METRICS[variant]:
            values = np.array([seed[(method, budget)][metric] for seed in per_seed])
            mean, low, high = t_interval(values)
            if method == "full":
                diff = (float("nan"),) * 3
            else:
                diff = t_interval(values - np.array([seed[("random", budget)][metric] for seed in per_seed]))
            removed = float(np.mean([seed[(method, budget)]["corrupted_removed"] for seed in per_seed]))
            rows.append({"variant": variant, "method": method, "budget": budget, "metric": metric,
                         "mean": mean, "low": low, "high": high, "diff_vs_random": diff[0], "diff_low": diff[1],
                         "diff_high": diff[2], "corrupted_removed": removed, "seeds": len(per_seed)})
    return rows


def _claim(out: Path, config: CurateBenchConfig, overwrite: bool) -> None:
    claim_run_dir(out, asdict(config), "curate bench", overwrite, clear=["cache"])


def _write(out: Path, rows: list[dict[str, Any]], config: CurateBenchConfig) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    describe = {
        "classification": f"digits with {config.noise:.0%} label noise, {config.shift:.0%} off-target (transposed) "
                          f"examples added, a {config.minority:.0%} minority style (inverted intensities); clusters: "
                          f"{config.clusters} k-means clusters of the reference model's penultimate features, split by "
                          "label for the cluster methods (cluster-datainf-global: whole clusters across labels). "
                          "removed = fraction of the mislabelled examples dropped.",
        "retrieval": f"digits paired with templated captions (MiniLM), {config.mismatch:.0%} mismatched pairs, "
                     f"{config.duplicates:.0%} near-duplicates and {config.shift:.0%} off-target pairs added, a "
                     f"{config.minority:.0%} minority style; a dual encoder trained with InfoNCE; relevant = the same "
                     f"digit; clusters: {config.clusters} k-means clusters of the joint embedding. removed = fraction "
                     "of the mismatched pairs dropped.",
    }
    lines = ["# Curation benchmark", "",
             f"{config.seeds} seeds. Mean [95% t-interval] over seeds; diff = paired difference to random at the same "
             "budget and seed.", ""]
    for variant in config.variants:
        methods = config.variant_methods(variant)
        mine = [r for r in rows if r["variant"] == variant]
        lines += [f"## {variant.capitalize()} variant", "", describe[variant], ""]
        for metric in HEADLINE[variant]:
            lines += [f"### {metric.replace('_', ' ')}", "",
                      "| method | " + " | ".join(f"kept {b:.0%}" for b in config.budgets) + " |",
                      "|---|" + "---|" * len(config.budgets)]
            for method in methods:
                cells = []
                for budget in config.budgets:
                    r = next(r for r in mine if r["method"] == method and r["budget"] == budget and r["metric"] == metric)
                    cell = f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
                    if method != "random":
                        cell += f" diff {r['diff_vs_random']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
                    if metric == HEADLINE[variant][0]:
                        cell += f" removed {r['corrupted_removed']:.2f}"
                    cells.append(cell)
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            full = next(r for r in mine if r["method"] == "full" and r["metric"] == metric)
            lines += ["", f"Full data: {full['mean']:.3f} [{full['low']:.3f}, {full['high']:.3f}].", ""]
        middle = config.budgets[len(config.budgets) // 2]
        lines += [f"### What each selection removed (kept {middle:.0%})", "",
                  "| method | corrupted | off-target | near-duplicates | minority group | selection s | retrain s |",
                  "|---|---|---|---|---|---|---|"]
        for method in methods:
            cell = {m: next(r for r in mine if r["method"] == method and r["budget"] == middle and r["metric"] == m)
                    for m in _REMOVED}
            lines.append(f"| {method} | {cell['minority_removed']['corrupted_removed']:.2f} | "
                         f"{cell['domain_removed']['mean']:.2f} | {cell['duplicate_removed']['mean']:.2f} | "
                         f"{cell['minority_removed']['mean']:.2f} | {cell['selection_seconds']['mean']:.2f} | "
                         f"{cell['retrain_seconds']['mean']:.2f} |")
        lines.append("")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
