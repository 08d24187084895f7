"""``attributor curate --config FILE --out DIR``: curate a user's own classification data.

Stages, one folder each under OUT, every folder written under a temporary name and
renamed into place when complete, with ``settings.json`` (its settings and the digests of
what it read) beside its outputs; a stage whose settings are unchanged is reused:

    data/        the arrays read from the user's files (features or MiniLM text embeddings)
    reference/   an MLP trained on the whole training set (weights, per-example losses)
    embed/       one vector per training example (the reference model's penultimate
                 features by default, the raw features, or MiniLM embeddings of the text)
    clusters/    k-means: each example's cluster, the centroids, the sizes
    influence/   influence of every example and every (cluster, label) group on the
                 validation loss (DataInf or EK-FAC; positive = helps the target)
    selection/   kept.csv (id, weight) for cluster influence, and one per baseline
    retrain/     each selection retrained from scratch and evaluated on the test set
                 (or the validation set when no test set is given)
    eval/        results.md, report.html, plots and their CSVs

Config (YAML or JSON; paths relative to the config file):

    data:    {train: FILE, validation: FILE, test: FILE?, format?, target: COL, text: COL | features: [COL...],
              id: COL?, group: COL?}
    curate:  {embed: model | features | text, clusters: 20, influence: datainf | if-ekfac, budget: 0.7,
              reweight: false, stratify: true, baselines: [random, loss-rank, k-center, semdedup],
              hidden: 64, steps: 300, lr: 0.01, seed: 0}
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from attributor._io import atomic_directory, atomic_write_text
from attributor.errors import ConfigError, DataError

__all__ = ["CurateConfig", "load_curate_config", "run_curation", "STAGES"]

STAGES = ("data", "reference", "embed", "clusters", "influence", "selection", "retrain", "eval")
BASELINES = ("random", "loss-rank", "k-center", "semdedup", "influence")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurateData(_Args):
    train: str = Field(..., description="the training set (CSV, TSV, JSONL, Parquet, npz or a datasets folder)")
    validation: str = Field(..., description="the target: a clean validation set whose loss curation lowers")
    test: Optional[str] = Field(None, description="a held-out test set for the retrained models (default: validation)")
    format: Optional[str] = None
    target: str = Field(..., description="the label column")
    text: Optional[str] = Field(None, description="a text column, embedded with the offline MiniLM")
    features: Optional[list[str]] = Field(None, description="numeric feature columns")
    id: Optional[str] = Field(None, description="a column of example ids (default: the row number)")
    group: Optional[str] = Field(None, description="a column of groups for per-group accuracy (fairness)")

    @model_validator(mode="after")
    def _inputs(self) -> "CurateData":
        if (self.text is None) == (self.features is None):
            raise ValueError("give exactly one of data.text or data.features")
        if self.features is not None and not self.features:
            raise ValueError("data.features is empty")
        return self


class CurateArgs(_Args):
    embed: Literal["model", "features", "text"] = "model"
    clusters: int = Field(20, ge=1)
    influence: Literal["datainf", "if-ekfac"] = "datainf"
    budget: float = Field(0.7, gt=0, lt=1)
    reweight: bool = False
    stratify: bool = True
    baselines: list[str] = Field(default_factory=lambda: ["random", "loss-rank", "k-center", "semdedup"])
    hidden: int = Field(64, ge=1)
    steps: int = Field(300, ge=1)
    lr: float = Field(1e-2, gt=0)
    seed: int = 0
    threads: int = Field(1, ge=1, description="torch threads (1 is fastest for these small models on a shared machine)")

    @model_validator(mode="after")
    def _known(self) -> "CurateArgs":
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline {unknown[0]!r}; known: {', '.join(BASELINES)}")
        return self


class CurateConfig(_Args):
    data: CurateData
    curate: CurateArgs = Field(default_factory=CurateArgs)

    @model_validator(mode="after")
    def _embed(self) -> "CurateConfig":
        if self.curate.embed == "text" and self.data.text is None:
            raise ValueError("curate.embed: text needs data.text")
        return self


def load_curate_config(path: str | os.PathLike[str]) -> CurateConfig:
    from attributor.config import _read_file, format_validation_error

    path = Path(path)
    raw = _read_file(path)
    data = raw.get("data")
    if isinstance(data, dict):  # relative paths are read beside the config file
        for key in ("train", "validation", "test"):
            if isinstance(data.get(key), str):
                value = os.path.expanduser(data[key])
                data[key] = value if os.path.isabs(value) else str(path.resolve().parent / value)
    try:
        return CurateConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, path)) from None


def run_curation(config: CurateConfig, out: str | os.PathLike[str], *, progress: bool = True,
                 log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Run every stage into ``out`` (reusing unchanged ones); returns the retrain metrics per selection."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ConfigError(f"{out} exists and is not a curation run; refusing to write into it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", config.model_dump_json(indent=2))
    from attributor.evaluation.runs import torch_threads

    run = _Run(config, out, log)
    with torch_threads(config.curate.threads):
        for stage in STAGES:
            run.stage(stage)
    return json.loads((out / "retrain" / "metrics.json").read_text())


class _Run:
    def __init__(self, config: CurateConfig, out: Path, log: Callable[[str], None]):
        self.config, self.out, self.log = config, out, log
        self.digests: dict[str, str] = {}

    # -- stage bookkeeping ---------------------------------------------------------------
    def stage(self, name: str) -> None:
        settings = {"stage": name, "inputs": dict(self.digests), **self._settings(name)}
        folder = self.out / name
        saved = folder / "settings.json"
        if saved.is_file() and json.loads(saved.read_text()) == settings:
            self.log(f"{name}: unchanged, reused")
        else:
            start = time.perf_counter()
            with atomic_directory(folder) as tmp:
                getattr(self, f"_{name}")(tmp)
                atomic_write_text(tmp / "settings.json", json.dumps(settings, indent=1, sort_keys=True))
            self.log(f"{name}: done in {time.perf_counter() - start:.1f} s")
        digest = hashlib.sha256()
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix in (".npz", ".npy", ".csv", ".pt", ".json") and file.name != "settings.json":
                digest.update(file.name.encode())
                digest.update(file.read_bytes())
        self.digests[name] = digest.hexdigest()[:16]

    def _settings(self, name: str) -> dict[str, Any]:
        c, d = self.config.curate, self.config.data
        return {
            "data": lambda: {**d.model_dump(), "sha256": {k: _path_digest(v) for k, v in
                                                          (("train", d.train), ("validation", d.validation),
                                                           ("test", d.test)) if v}},
            "reference": lambda: {"hidden": c.hidden, "steps": c.steps, "lr": c.lr, "seed": c.seed},
            "embed": lambda: {"embed": c.embed},
            "clusters": lambda: {"clusters": c.clusters, "seed": c.seed},
            "influence": lambda: {"influence": c.influence, "stratify": c.stratify},
            "selection": lambda: {"budget": c.budget, "reweight": c.reweight, "stratify": c.stratify,
                                  "baselines": c.baselines, "seed": c.seed},
            "retrain": lambda: {"hidden": c.hidden, "steps": c.steps, "lr": c.lr, "seed": c.seed},
            "eval": lambda: {},
        }[name]()

    def _arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.out / "data" / "arrays.npz", allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}

    # -- stages ----------------------------------------------------------------------------
    def _data(self, folder: Path) -> None:
        d = self.config.data
        train = _read(d.train, d)
        validation = _read(d.validation, d)
        test = _read(d.test, d) if d.test else None
        classes = sorted(set(train["labels"].tolist()))
        index = {label: i for i, label in enumerate(classes)}
        for name, part in (("validation", validation), ("test", test)):
            if part is not None:
                unknown = sorted(set(part["labels"].tolist()) - set(classes))
                if unknown:
                    raise DataError(f"the {name} set has labels the training set lacks: {unknown[:5]}")
        if len(classes) < 2:
            raise DataError(f"the training set has {len(classes)} class; curation needs at least two")
        arrays: dict[str, np.ndarray] = {}
        mean, std = train["x"].mean(0), train["x"].std(0)
        std = np.where(std > 0, std, 1.0)
        for name, part in (("train", train), ("val", validation), ("test", test or validation)):
            arrays[f"x_{name}"] = (part["x"] - mean) / std if d.features is not None else part["x"]
            arrays[f"y_{name}"] = np.array([index[v] for v in part["labels"].tolist()], dtype=np.int64)
            arrays[f"group_{name}"] = part["group"]
        arrays["ids"] = train["ids"]
        if d.text is not None:
            arrays["texts"] = train["texts"]
        np.savez(folder / "arrays.npz", **arrays)
        atomic_write_text(folder / "classes.json", json.dumps([str(c) for c in classes]))

    def _reference(self, folder: Path) -> None:
        import torch

        from attributor.curation.classification import per_example_loss, train_weighted
        from attributor.models.checkpoints import save_checkpoint

        a, c = self._arrays(), self.config.curate
        n_classes = len(json.loads((self.out / "data" / "classes.json").read_text()))
        model = train_weighted(a["x_train"], a["y_train"], np.ones(len(a["y_train"])), n_classes, hidden=c.hidden,
                               steps=c.steps, lr=c.lr, seed=c.seed)
        save_checkpoint(model, folder / "model.pt")
        np.save(folder / "losses.npy", per_example_loss(model, a["x_train"], a["y_train"]))
        del torch

    def _model(self) -> Any:
        from attributor.curation.classification import _mlp
        from attributor.models.checkpoints import load_checkpoint

        a, c = self._arrays(), self.config.curate
        n_classes = len(json.loads((self.out / "data" / "classes.json").read_text()))
        return load_checkpoint(_mlp(a["x_train"].shape[1], n_classes, c.hidden, c.seed), self.out / "reference" / "model.pt").eval()

    def _embed(self, folder: Path) -> None:
        from attributor.curation.classification import penultimate

        a = self._arrays()
        embed = self.config.curate.embed
        vectors = penultimate(self._model(), a["x_train"]) if embed == "model" else a["x_train"]
        np.save(folder / "embeddings.npy", np.asarray(vectors, dtype=np.float64))

    def _clusters(self, folder: Path) -> None:
        from sklearn.cluster import KMeans

        vectors = np.load(self.out / "embed" / "embeddings.npy")
        k = min(self.config.curate.clusters, len(vectors))
        model = KMeans(k, n_init=3, random_state=self.config.curate.seed).fit(vectors)
        np.save(folder / "centroids.npy", model.cluster_centers_)
        ids = self._arrays()["ids"]
        _write_csv(folder / "clusters.csv", ["id", "cluster"], zip(ids.tolist(), model.labels_.tolist()))

    def _assignments(self) -> np.ndarray:
        with (self.out / "clusters" / "clusters.csv").open() as handle:
            return np.array([int(row["cluster"]) for row in csv.DictReader(handle)], dtype=np.int64)

    def _groups(self) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Influence groups: (cluster, label) pairs when stratified, else clusters; and what each group is."""
        clusters, labels = self._assignments(), self._arrays()["y_train"]
        if not self.config.curate.stratify:
            return clusters, [(int(c), -1) for c in range(int(clusters.max()) + 1)]
        pairs, groups = np.unique(np.stack([clusters, labels], 1), axis=0, return_inverse=True)
        return groups.reshape(-1).astype(np.int64), [(int(c), int(y)) for c, y in pairs]

    def _influence(self, folder: Path) -> None:
        from attributor.curation.influence import estimate_influence
        from attributor.data import ArrayDataset

        a = self._arrays()
        groups, meaning = self._groups()
        estimate = estimate_influence(self._model(), self.out / "reference" / "model.pt",
                                      ArrayDataset(a["x_train"], a["y_train"]), ArrayDataset(a["x_val"], a["y_val"]),
                                      groups, self.config.curate.influence)
        clusters = self._assignments()
        _write_csv(folder / "examples.csv", ["id", "label", "cluster", "group", "influence"],
                   zip(a["ids"].tolist(), a["y_train"].tolist(), clusters.tolist(), groups.tolist(), estimate.examples.tolist()))
        sizes = np.bincount(groups, minlength=len(meaning))
        _write_csv(folder / "groups.csv", ["group", "cluster", "label", "size", "influence"],
                   ((g, c, y, int(sizes[g]), float(estimate.clusters[g])) for g, (c, y) in enumerate(meaning)))

    def _read_influence(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with (self.out / "influence" / "examples.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        with (self.out / "influence" / "groups.csv").open() as handle:
            totals = np.array([float(r["influence"]) for r in csv.DictReader(handle)])
        return (np.array([int(r["group"]) for r in rows]), np.array([float(r["influence"]) for r in rows]), totals)

    def _selection(self, folder: Path) -> None:
        from attributor.curation import select

        a, c = self._arrays(), self.config.curate
        n = len(a["y_train"])
        groups, examples, totals = self._read_influence()
        strata = a["y_train"] if c.stratify else None
        mask = select.cluster_keep(groups, totals, examples, c.budget, strata=strata)
        weights = np.where(mask, select.reweight(groups, totals), 0.0) if c.reweight else mask.astype(float)
        selections = {"cluster-influence": weights}
        for name in c.baselines:
            if name == "random":
                keep = select.random_keep(n, c.budget, seed=c.seed)
            elif name == "loss-rank":
                keep = select.top_keep(-np.load(self.out / "reference" / "losses.npy"), c.budget)
            elif name == "k-center":
                keep = select.k_center_greedy(np.load(self.out / "embed" / "embeddings.npy"), c.budget, seed=c.seed)
            elif name == "semdedup":
                keep = select.semantic_dedup(np.load(self.out / "embed" / "embeddings.npy"), self._assignments(), c.budget)
            else:  # influence: the examples with the largest influence
                keep = select.top_keep(examples, c.budget)
            selections[name] = keep.astype(float)
        for name, w in selections.items():
            _write_csv(folder / f"{name}.csv", ["id", "weight"], ((i, float(x)) for i, x in zip(a["ids"].tolist(), w) if x > 0))
        np.savez(folder / "weights.npz", **{name.replace("-", "_"): w for name, w in selections.items()})
        (folder / "kept.csv").write_bytes((folder / "cluster-influence.csv").read_bytes())

    def _retrain(self, folder: Path) -> None:
        from attributor.curation.classification import evaluate_groups, train_weighted

        a, c = self._arrays(), self.config.curate
        n_classes = len(json.loads((self.out / "data" / "classes.json").read_text()))
        with np.load(self.out / "selection" / "weights.npz") as archive:
            selections = {"full": np.ones(len(a["y_train"])), **{k.replace("_", "-"): archive[k] for k in archive.files}}
        metrics = {}
        for name, weights in selections.items():
            start = time.perf_counter()
            model = train_weighted(a["x_train"], a["y_train"], weights, n_classes, hidden=c.hidden, steps=c.steps,
                                   lr=c.lr, seed=c.seed)
            metrics[name] = {**evaluate_groups(model, a["x_test"], a["y_test"], a["group_test"]),
                             "kept": float((weights > 0).mean()), "retrain_seconds": time.perf_counter() - start}
        atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=1))

    def _eval(self, folder: Path) -> None:
        from attributor.reports.document import Section, Table
        from attributor.reports.html import write_html_report
        from attributor.reports.markdown import write_markdown_report

        metrics = json.loads((self.out / "retrain" / "metrics.json").read_text())
        c, d = self.config.curate, self.config.data
        a = self._arrays()
        groups, examples, totals = self._read_influence()
        with (self.out / "influence" / "groups.csv").open() as handle:
            group_rows = list(csv.DictReader(handle))
        classes = json.loads((self.out / "data" / "classes.json").read_text())
        plot = _plot_groups(folder / "influence_per_group.png", group_rows)
        evaluated = "test" if d.test else "validation (no test set was given)"
        results = Table(f"Retrained on each selection, evaluated on the {evaluated} set",
                        ["selection", "kept", "accuracy", "worst-group accuracy", "group gap"],
                        [[name, m["kept"], m["accuracy"], m["worst_group_accuracy"], m["group_gap"]]
                         for name, m in metrics.items()])
        order = np.argsort([float(r["influence"]) for r in group_rows])
        texts = a["texts"] if "texts" in a else None
        shown = []
        for g in list(order[:3]) + list(order[::-1][:3]):
            members = np.flatnonzero(groups == g)
            top = members[np.argsort(examples[members])[:3]]
            items = "; ".join((str(texts[i])[:80] if texts is not None else str(a["ids"][i])) for i in top)
            row = group_rows[g]
            label = classes[int(row["label"])] if int(row["label"]) >= 0 else "all"
            shown.append([g, row["cluster"], label, row["size"], float(row["influence"]), items])
        clusters = Table("The most harmful and the most helpful groups, with their least helpful members",
                         ["group", "cluster", "label", "size", "influence", "example items"], shown)
        full = metrics["full"]["accuracy"]
        best = max((m for m in metrics if m != "full"), key=lambda m: metrics[m]["accuracy"])
        text = (f"Cluster influence ({c.influence}, {'within each class' if c.stratify else 'across classes'}) kept "
                f"{c.budget:.0%} of the training set{' and reweighted it' if c.reweight else ''}. Full data: accuracy "
                f"{full:.3f}; cluster influence: {metrics['cluster-influence']['accuracy']:.3f}; best selection: {best} "
                f"({metrics[best]['accuracy']:.3f}). One seed: rerun with other curate.seed values before trusting a "
                "difference.")
        sections = [Section("Result", text, tables=[results]),
                    Section("Influence per group", "Positive influence lowers the validation loss (helps the target).",
                            images=[plot], tables=[clusters])]
        write_markdown_report(folder / "results.md", "Curation", sections)
        write_html_report(folder / "report.html", "Curation", sections)


def _read(path: str, d: CurateData) -> dict[str, Any]:
    from attributor.data.tables import read_table

    table = read_table(path, d.format)
    labels = table.column(d.target)
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise DataError(f"column {d.target!r} of {path} has missing labels")
    if d.text is not None:
        texts = table.column(d.text)
        if texts.dtype.kind != "U":
            raise DataError(f"column {d.text!r} of {path} must hold text")
        from attributor.gif.fingerprints import EmbeddingFingerprinter

        x = EmbeddingFingerprinter().embed([str(t) for t in texts]).astype(np.float64)
    else:
        columns = [table.column(name) for name in d.features]
        bad = [name for name, col in zip(d.features, columns) if col.dtype.kind not in "iuf"]
        if bad:
            raise DataError(f"feature column {bad[0]!r} of {path} is not numeric")
        x = np.stack([col.astype(np.float64) for col in columns], 1)
        if not np.isfinite(x).all():
            raise DataError(f"the features of {path} have missing or infinite values; fill or drop those rows")
        texts = None
    ids = np.array([str(v) for v in table.column(d.id)]) if d.id else np.array([str(i) for i in range(table.n_rows)])
    if len(set(ids.tolist())) != len(ids):
        raise DataError(f"column {d.id!r} of {path} has duplicate ids")
    group = table.column(d.group) if d.group else np.zeros(table.n_rows, dtype=np.int64)
    group = np.unique(group.astype(str), return_inverse=True)[1].reshape(-1).astype(np.int64)
    out = {"x": x, "labels": labels, "ids": ids, "group": group}
    if texts is not None:
        out["texts"] = np.array([str(t) for t in texts])
    return out


def _path_digest(path: str) -> str:
    from attributor.data.tables import file_sha256

    return file_sha256(path)[:16]


def _write_csv(path: Path, header: list[str], rows: Any) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _plot_groups(path: Path, rows: list[dict[str, str]]) -> Path:
    from attributor.reports._figures import csv_text, pyplot, save_figure

    plt = pyplot()
    sizes = np.array([int(r["size"]) for r in rows])
    influence = np.array([float(r["influence"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(sizes, influence, c=np.where(influence >= 0, "tab:green", "tab:red"), s=18)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("group size (examples)")
    ax.set_ylabel("influence on the validation loss")
    ax.set_title("Influence per group (positive = helps)")
    return save_figure(fig, path, csv_text(["group", "size", "influence"],
                                           [(i, int(s), float(v)) for i, (s, v) in enumerate(zip(sizes, influence))]))
