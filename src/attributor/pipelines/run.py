"""A run directory: one experiment's config and the artifacts of each stage.

Stages, in order (each reads the ones before it)::

    data       data.npz                    prepared splits, labels, corrupted flags
    train      checkpoints/epoch_*.pt      the checkpoint ensemble
    featurize  store/                      FeatureStore, splits "train" and "test"
    score      scores/, topk.csv, self_influence.csv, metadata.json
    report     plots/, report.html, results.md, metrics.json

``config.json`` holds the resolved :class:`~attributor.config.RunConfig`. Reopening the
directory with a different config is refused unless ``overwrite`` is given; then every
stage from the first one whose settings changed is recomputed, and nothing earlier. A
stage whose artifacts exist is not recomputed, so each command picks up where the last
one stopped (featurize even inside a stage, chunk by chunk).

With ``lock=True`` (what every CLI command that writes asks for) the run holds an
exclusive ``flock`` of ``OUT/.lock`` from before it reads ``config.json`` until
:meth:`Run.close` (or the end of a ``with Run(...)`` block): a second process on the same
directory is refused at once, in one line, instead of racing on the stages' files.
Executor tasks open the run without the lock: the driver that started them holds it.
"""

from __future__ import annotations

import csv
import fcntl
import inspect
import io
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from attributor._compare import differences
from attributor._io import atomic_save_npy, atomic_write_json, atomic_write_text
from attributor.config import RunConfig
from attributor.data import DatasetSplits, data_id, load_dataset
from attributor.errors import ConfigError, StoreError, StoreMismatchError, UnknownNameError
from attributor.features import FeatureStore, featurize, make_projector
from attributor.methods import TrainingContext, get_method
from attributor.models import build_model, load_checkpoint
from attributor.models.training import evaluate, train
from attributor.scores import Scores
from attributor.tasks import Task, get_task

__all__ = ["Run", "STAGES"]

STAGES = ("data", "train", "featurize", "score", "report")
#: config section -> the first stage it affects
SECTION_STAGE = {"data": "data", "task": "data", "model": "data", "train": "train", "featurize": "featurize", "score": "score", "report": "report"}
#: config sections that do not change any artifact (where the work runs): never a reason to recompute
RESULT_NEUTRAL = ("executor",)
#: marks a checkpoints/ folder a run trained itself (only such a folder is ever deleted)
TRAINED_MARK = ".trained-by-attributor"
STAGE_ARTIFACTS = {
    "data": ["data.npz"],
    "train": ["checkpoints"],
    "featurize": ["store"],
    "score": ["scores", "topk.csv", "self_influence.csv", "metadata.json"],
    "report": ["plots", "report.html", "results.md", "metrics.json"],
}


class Run:
    """Open (or create) the run directory ``out`` for ``config``.

    Example:
        >>> run = Run("runs/quick", RunConfig())          # doctest: +SKIP
        >>> scores, self_influence = run.scores()         # trains and featurizes as needed
    """

    def __init__(self, out: str | os.PathLike[str], config: RunConfig, *, overwrite: bool = False, progress: bool = True,
                 lock: bool = False):
        self.out = Path(out)
        self.config = config
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._data: DatasetSplits | None = None
        self._model: Any = None
        self._lock_handle: Any = None
        # refuse an unknown task or bad method arguments before anything is written
        self.task: Task = self._build_task()
        args = config.score
        build_method(args.method, args.method_args, damping=args.damping, checkpoints=args.checkpoints)
        try:
            self._open(overwrite, lock)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run directory's lock (if this object holds it)."""
        handle, self._lock_handle = self._lock_handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _build_task(self) -> Task:
        args, model = self.config.task, self.config.model
        try:
            Task.lookup(args.name)
        except UnknownNameError:
            if model.entry_point is None:
                raise
            from attributor.models.loading import load_entry_point

            load_entry_point(model.entry_point)  # its module may define (and so register) the task
        try:
            return get_task(args.name, **args.args)
        except TypeError as err:
            raise ConfigError(f"task.args do not fit task {args.name!r}: {err}") from None

    # -- directory and config ---------------------------------------------------------
    def _open(self, overwrite: bool, lock: bool) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise StoreError(f"--out {self.out} is a file, not a run directory; choose a folder for --out")
        config_file = self.out / "config.json"
        if not config_file.is_file():
            self._refuse_foreign()  # before a lock file is put into someone's folder
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # e.g. a parent of --out is a file
            raise StoreError(f"cannot create the run directory {self.out}: {err.strerror}; choose another --out") from None
        if lock:
            self._lock()
        if config_file.is_file():
            try:
                saved = RunConfig.model_validate(json.loads(config_file.read_text()))
            except Exception:
                raise StoreError(f"{config_file} is unreadable; delete the run directory or use another --out") from None
            changed = differences(saved.model_dump(mode="json"), self.config.model_dump(mode="json"))
            changed = [(key, change) for key, change in changed if key.split(".")[0] not in RESULT_NEUTRAL]
            started = any((self.out / name).exists() for names in STAGE_ARTIFACTS.values() for name in names)
            report_only = all(key.split(".")[0] == "report" for key, _ in changed)  # the report is rewritten anyway
            if changed and not overwrite and started and not report_only:
                shown = "; ".join(f"{key}: {change}" for key, change in changed[:4])
                raise StoreMismatchError(
                    f"the run in {self.out} was made with other settings ({shown}); "
                    "use another --out or pass --overwrite to recompute from the first changed stage"
                )
            if changed:
                first = min(STAGES.index(SECTION_STAGE[key.split(".")[0]]) for key, _ in changed)
                for stage in STAGES[first:]:
                    self._remove(stage)
        else:
            self._refuse_foreign()
        atomic_write_json(config_file, self.config.model_dump(mode="json"))

    def _refuse_foreign(self) -> None:
        """A folder holding only inputs the config names (the user's checkpoints, say) becomes the run directory;
        anything else in it might be precious: refuse."""
        if not self.out.is_dir():
            return
        inputs = [Path(p).resolve() for p in self._input_paths()]
        entries = list(self.out.iterdir())  # one listing: another process may be creating the run meanwhile
        if any(p.name == "config.json" for p in entries):
            return  # a run directory (perhaps made by another process since the caller looked); the lock decides
        ours = {p for p in entries if p.name == ".lock" or (p.name.startswith(".") and p.name.endswith(".tmp"))}
        foreign = [p.name for p in entries  # the lock and another writer's temporary files are not foreign
                   if p not in ours and not any(i == p.resolve() or p.resolve() in i.parents for i in inputs)]
        if foreign:
            raise StoreError(f"{self.out} exists and is not an attributor run directory (it holds {', '.join(sorted(foreign)[:3])}); "
                             "choose another --out")

    def _lock(self) -> None:
        handle = open(self.out / ".lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(f"another process is writing the run in {self.out}; wait for it to finish or use another --out") from None
        self._lock_handle = handle

    def _input_paths(self) -> list[str]:
        """The files the config reads (data, model, checkpoints), globs expanded."""
        import glob

        data, model = self.config.data, self.config.model
        paths = [p for p in (data.path, data.train, data.test, model.hf_path, model.tokenizer, model.weights) if p]
        for entry in model.checkpoints or []:
            paths += glob.glob(entry) if glob.has_magic(entry) else [entry]
        return paths

    def _remove(self, stage: str) -> None:
        for name in STAGE_ARTIFACTS[stage]:
            path = self.out / name
            if name == "checkpoints" and not (path / TRAINED_MARK).is_file():
                continue  # not trained by a run: the user's own files are never deleted
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    # -- stages ---------------------------------------------------------------------
    def data(self) -> DatasetSplits:
        """Prepared splits (cached in data.npz): a built-in dataset or the user's data, encoded."""
        if self._data is None:
            path = self.out / "data.npz"
            if path.is_file():
                self._data = DatasetSplits.load(path)
            else:
                args = self.config.data
                if args.is_builtin:
                    self._data = load_dataset(args.dataset_name, test_fraction=args.test_fraction or 0.25,
                                              label_noise=args.label_noise, max_train=args.max_train, seed=args.seed,
                                              standardize=args.standardize is not False)
                else:
                    from attributor.data.user import load_user_data

                    if args.name == "npz" and args.format is None:
                        args = args.model_copy(update={"format": "npz"})
                    self._data = load_user_data(args, task_name=self.config.task.name, tokenizer=self._tokenizer(),
                                                label2id=self._label2id())
                self._data.save(path)
        return self._data

    def _tokenizer(self):
        if not self.config.data.text:
            return None
        from attributor.models.loading import load_tokenizer

        return load_tokenizer(self.config.model.tokenizer or self.config.model.hf_path)

    def _label2id(self) -> dict[str, int] | None:
        """The HF model's label2id (from its config.json), to encode string labels as the model does."""
        if self.config.model.hf_path is None:
            return None
        try:
            config = json.loads((Path(self.config.model.hf_path) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        mapping = config.get("label2id")
        return {str(k): int(v) for k, v in mapping.items()} if isinstance(mapping, dict) else None

    def model(self):
        """A fresh copy of the model with its initial weights (checkpoints load into it)."""
        if self._model is None:
            self._model = self._build_model()
        import copy

        return copy.deepcopy(self._model)

    def _build_model(self):
        data, args = self.data(), self.config.model
        n_features = int(np.prod(data.X_train.shape[1:])) if data.inputs_key is None else None
        n_outputs = data.n_classes if data.target_kind == "class" else 1
        if args.builtin is not None:
            if n_features is None:
                raise ConfigError(f"the built-in model {args.builtin!r} reads numeric features; for text set model.hf_path or model.entry_point")
            kwargs = {"mlp": {"hidden": args.hidden}, "cnn": {"channels": args.channels}}.get(args.builtin, {})
            model = build_model(args.builtin, n_features, n_outputs, seed=args.seed, **kwargs)
        elif args.entry_point is not None:
            from attributor.models.loading import build_from_entry_point

            model = build_from_entry_point(args.entry_point, args.kwargs, seed=args.seed, n_features=n_features,
                                           n_classes=n_outputs)
        else:
            from attributor.models.loading import load_hf_model

            model = load_hf_model(args.hf_path, args.hf_class, task_name=self.config.task.name,
                                  attn_implementation=args.attn_implementation)
            tokenizer = self._tokenizer()
            if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
                model.config.pad_token_id = tokenizer.pad_token_id  # sequence classifiers find the last real token by it
        if args.weights is not None:
            load_checkpoint(model, args.weights)
        return model.eval()

    def checkpoints(self) -> list[Path]:
        """The checkpoint files: the user's (used in place), or trained here first if needed."""
        if self.config.model.checkpoints is not None:
            from attributor.models.loading import resolve_checkpoints

            return resolve_checkpoints(self.config.model.checkpoints)
        args = self.config.train
        folder = self.out / "checkpoints"
        paths = [folder / f"epoch_{e:04d}.pt" for e in sorted(args.checkpoint_epochs)]
        if all(p.is_file() for p in paths):
            return paths
        start = time.perf_counter()
        if folder.exists() and not (folder / TRAINED_MARK).is_file():
            raise StoreError(f"{folder} holds files a run did not write; move them (and name them in model.checkpoints to use them)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / TRAINED_MARK).write_text("checkpoints trained by attributor; removed when the train settings change\n")
        train(self.model(), self.task, self.data().train(), folder, epochs=args.epochs,
              checkpoint_epochs=args.checkpoint_epochs, lr=args.lr, weight_decay=args.weight_decay,
              batch_size=args.batch_size, seed=args.seed, progress=self.progress)
        self.timings["train_s"] = time.perf_counter() - start
        return paths

    def store(self, shard: tuple[int, int] | None = None) -> FeatureStore:
        """The feature store with splits ``train`` and ``test`` complete.

        With ``shard=(i, n)``, only shard i of n (a contiguous range of each split's chunks)
        is featurized, into ``store-shard-<i>-of-<n>/`` beside ``store/``; join the shards
        with ``attributor store merge`` (:func:`attributor.features.merge.merge_stores`)
        into ``store/``. A shard store left from other settings is replaced: the run's
        config.json, already checked, is the authority.
        """
        data, checkpoints, args = self.data(), self.checkpoints(), self.config.featurize
        projector = make_projector(args.projection, args.proj_dim, seed=args.seed)
        path = self.out / ("store" if shard is None else f"store-shard-{shard[0]}-of-{shard[1]}")
        finished = FeatureStore.exists(path) and _complete(FeatureStore.open(path), ("train", "test"))
        start = time.perf_counter()
        model = self.model()
        for split, dataset in (("train", data.train()), ("test", data.test())):
            # featurize also checks that a finished store matches these settings and data
            store = featurize(model, self.task, dataset, checkpoints, path, projector,
                              split=split, data_id=data_id(*data.arrays(split)), dtype=args.dtype, chunk_size=args.chunk_size,
                              batch_size=args.batch_size, progress=self.progress, shard=shard,
                              overwrite=shard is not None)
        if not finished and shard is None:
            self.timings["featurize_s"] = time.perf_counter() - start
        return store

    def scores(self) -> tuple[Scores, np.ndarray]:
        """``(scores of test vs train, self-influence of train)``, computed once and saved."""
        folder = self.out / "scores"
        if Scores.exists(folder) and (folder / "self_influence.npy").is_file() and (self.out / "metadata.json").is_file():
            return Scores.load(folder), np.load(folder / "self_influence.npy", allow_pickle=False)
        args = self.config.score
        method = build_method(args.method, args.method_args, damping=args.damping, checkpoints=args.checkpoints)
        store = self.store() if method.requires_features or method.uses_store_folder else None
        start = time.perf_counter()
        method.fit(store, "train", self.context())
        scores = method.score("test", topk=args.topk, dense=args.dense, progress=self.progress)
        self_influence = method.self_influence()
        self.timings["score_s"] = time.perf_counter() - start
        scores.save(folder)
        atomic_save_npy(folder / "self_influence.npy", self_influence)
        data = self.data()
        write_topk_csv(self.out / "topk.csv", scores, data)
        write_self_influence_csv(self.out / "self_influence.csv", self_influence, data)
        atomic_write_json(self.out / "metadata.json", self._metadata(store, method.spec(), scores))
        return scores, self_influence

    def context(self) -> TrainingContext:
        """The model, task, datasets and checkpoints, for methods that need more than features."""
        data = self.data()
        checkpoints = self.checkpoints()
        return TrainingContext(model=self.model(), task=self.task, datasets={"train": data.train(), "test": data.test()},
                               checkpoints=checkpoints, learning_rates=[self.config.train.lr] * len(checkpoints))

    def report(self) -> dict[str, Any]:
        """Plots, report.html, results.md and metrics.json; returns the metrics."""
        from attributor.pipelines.reporting import write_report

        scores, self_influence = self.scores()
        return write_report(self, scores, self_influence)

    def final_accuracy(self) -> float | None:
        """Test accuracy of the last checkpoint (None when the task has no classes)."""
        return self.test_metrics().get("accuracy")

    def test_metrics(self) -> dict[str, float]:
        """The last checkpoint on the test split: accuracy (classes), mse (regression), mean task loss."""
        if not hasattr(self, "_test_metrics"):
            model = self.model()
            load_checkpoint(model, self.checkpoints()[-1])
            data = self.data()
            self._test_metrics = evaluate(model, self.task, data.test(), data.target_kind)
        return self._test_metrics

    def _model_summary(self) -> dict[str, Any]:
        args, model = self.config.model, self.model()
        source = ({"builtin": args.builtin} if args.builtin else {"entry_point": args.entry_point} if args.entry_point
                  else {"hf_path": args.hf_path, "hf_class": type(model).__name__})
        return {**source, "class": type(model).__name__, "n_parameters": int(sum(p.numel() for p in model.parameters())),
                "weights": args.weights, "trained_here": args.checkpoints is None}

    def _metadata(self, store: FeatureStore | None, method_spec: dict[str, Any], scores: Scores) -> dict[str, Any]:
        import torch

        import attributor

        data = self.data()
        return {
            "config": self.config.model_dump(mode="json"),
            "data": {**data.source, "content_ids": {split: data_id(*data.arrays(split)) for split in ("train", "test")}},
            "task": self.task.spec(),
            "model": self._model_summary(),
            "checkpoints": [str(p) for p in self.checkpoints()],
            "method": method_spec,
            "store": {key: store.settings[key] for key in ("checkpoints", "projector", "dtype", "n_params", "dim")} if store else None,
            "n_train": int(scores.meta["n_train"]),
            "n_test": int(scores.n_queries),
            "topk": int(scores.top_indices.shape[1]),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "versions": {"attributor": attributor.__version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }


def label_text(data: DatasetSplits, label: Any) -> str:
    """A label as shown in CSV files: the class index, a regression target, or empty (no target)."""
    if data.target_kind == "class":
        return str(int(label))
    return f"{float(label):.6g}" if data.target_kind == "value" else ""


def write_topk_csv(path: Path, scores: Scores, data: DatasetSplits) -> None:
    """Long-format top-k: one row per (query, kind, rank); the training text too for text data."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    texts = data.texts_train is not None
    writer.writerow(["query", "query_label", "kind", "rank", "train_index", "score", "train_label"] + (["train_text"] if texts else []))
    for kind, indices, values in (("proponent", scores.top_indices, scores.top_values),
                                  ("opponent", scores.bottom_indices, scores.bottom_values)):
        for q in range(scores.n_queries):
            for rank, (j, v) in enumerate(zip(indices[q], values[q]), start=1):
                row = [q, label_text(data, data.y_test[q]), kind, rank, int(j), f"{v:.8g}", label_text(data, data.y_train[j])]
                writer.writerow(row + ([str(data.texts_train[j])] if texts else []))
    atomic_write_text(path, buffer.getvalue())


def write_self_influence_csv(path: Path, self_influence: np.ndarray, data: DatasetSplits) -> None:
    """Training examples ranked by self-influence, most suspicious first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    texts = data.texts_train is not None
    writer.writerow(["rank", "train_index", "self_influence", "label", "original_label", "flipped"] + (["text"] if texts else []))
    for rank, j in enumerate(np.argsort(-self_influence, kind="stable"), start=1):
        row = [rank, int(j), f"{self_influence[j]:.8g}", label_text(data, data.y_train[j]), label_text(data, data.y_train_clean[j]),
               int(data.flipped[j])]
        writer.writerow(row + ([str(data.texts_train[j])] if texts else []))
    atomic_write_text(path, buffer.getvalue())


def _complete(store: FeatureStore, splits: tuple[str, ...]) -> bool:
    return all(split in store.splits and store.is_complete(split) for split in splits)


def build_method(name: str, method_args: dict[str, Any], **generic: Any):
    """Build method ``name`` from its own ``method_args`` plus the generic score arguments
    (damping, checkpoints) that its constructor takes; unknown method_args are refused.

    ``checkpoints`` reaches TRAK and TracIn as is; the influence functions take one
    ``checkpoint`` (default: the last), so a list given there becomes that index (one
    entry) or the ensemble over the listed checkpoints, unless method_args sets it."""
    from attributor.methods import Method

    params = inspect.signature(Method.lookup(name).__init__).parameters
    unknown = sorted(set(method_args) - set(params))
    if unknown:
        accepted = ", ".join(p for p in params if p != "self") or "none"
        raise ConfigError(f"score.method_args {unknown} are not arguments of method {name!r} (it takes: {accepted})")
    kwargs = {k: v for k, v in generic.items() if k in params}
    listed = generic.get("checkpoints")
    if listed is not None and "checkpoint" in params and "checkpoints" not in params:
        kwargs["checkpoint"] = int(listed[0]) if len(listed) == 1 else [int(c) for c in listed]
    return get_method(name, **{**kwargs, **method_args})

