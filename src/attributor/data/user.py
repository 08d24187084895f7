"""The user's own data, encoded for the user's task: files or an entry point -> DatasetSplits.

Flow (``data.*`` of a run config, :class:`~attributor.config.DataArgs`)::

    files (CSV / TSV / JSONL / Parquet / NPZ / HF datasets folder)   or   entry point -> torch Datasets
      -> train and test tables: the user's split (separate files, a split column, a
         datasets folder with 'train' and 'test') or a seeded random one (test_fraction)
      -> inputs: numeric feature columns (n, d) float32, or text columns tokenised by the
         model's tokenizer into input_ids / attention_mask (/ token_type_ids), padded on
         the right to the longest example (at most max_length)
      -> targets: class indices (integers kept as they are, so they still index the user's
         model outputs; strings mapped through the model's label2id or sorted), float
         targets (regression), or per-token LM labels with -100 on prompt and padding
      -> corruptions, only when configured (label_noise), recorded with everything else in
         ``DatasetSplits.source``: files, their sha256, columns used, split, mapping.

Nothing is changed silently: no standardisation unless ``data.standardize`` is set, no
label noise unless ``data.label_noise`` is set, and every row is kept (``max_train`` keeps
the first N training rows when asked).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from attributor.data.datasets import DatasetSplits, standardized
from attributor.data.noise import flip_labels
from attributor.data.tables import Table, read_table
from attributor.errors import ConfigError, DataError

__all__ = ["load_user_data", "target_kind_of", "TARGET_CANDIDATES"]

#: the target column used when data.target is not set: the first of these that exists
TARGET_CANDIDATES = ("label", "labels", "y", "target")
_CLASS_TASKS = ("classification", "sequence-classification")


def target_kind_of(task_name: str) -> str | None:
    """"class", "value" or "none" for the built-in tasks; None (decided by the data) otherwise."""
    return {"classification": "class", "sequence-classification": "class", "regression": "value",
            "causal-lm": "none"}.get(task_name)


def load_user_data(args: Any, *, task_name: str, tokenizer: Any = None, label2id: dict[str, int] | None = None) -> DatasetSplits:
    """Read, split and encode the data ``args`` (a DataArgs) names; see the module docstring."""
    if args.source is not None:
        return _from_entry_point(args, task_name)
    train, test, split = _tables(args)
    for table, which in ((train, "train"), (test, "test")):
        if table.n_rows == 0:
            how = (f"no row of column {args.split_column!r} says {which!r}" if split["kind"] == "column"
                   else "the file has no data rows")
            raise DataError(f"{Path(table.source['path']).name}: the {which} split is empty ({how}); both splits need examples")
    kind = target_kind_of(task_name)
    name = Path(args.path or args.train).name
    files = {(t.source["path"], t.source.get("split")): t.source for t in (train, test)}
    source: dict[str, Any] = {"files": list(files.values()),
                              "split": split, "preprocessing": [], "corruptions": []}
    target = None if kind == "none" else _target_column(train, args.target)
    if target is not None and kind is None:
        kind = "value" if train.column(target).dtype.kind == "f" else "class"
    kind = kind or "none"
    used = [c for c in (target, args.split_column) if c]
    if args.text:
        inputs_key = "input_ids"
        encoded = _tokenize(args, task_name, tokenizer, train, test)
        X_train, X_test = encoded["train"].pop("input_ids"), encoded["test"].pop("input_ids")
        extra_train, extra_test = encoded["train"], encoded["test"]
        texts_train, texts_test = _display_text(train, args), _display_text(test, args)
        source["columns"] = {"text": args.text, **({"prompt": args.prompt} if args.prompt else {})}
        source["tokenizer"] = {"name": getattr(tokenizer, "name_or_path", None), "max_length": args.max_length, "padding": "right"}
    else:
        if task_name == "causal-lm":
            raise ConfigError("task causal-lm reads text: set data.text (and optionally data.prompt)")
        inputs_key, extra_train, extra_test, texts_train, texts_test = None, {}, {}, None, None
        features = args.features if args.features is not None else _numeric_columns(train, exclude=used)
        if not features:
            raise DataError(f"{name} has no numeric feature columns besides {used}; name them in data.features or set data.text")
        X_train, X_test = _features(train, features), _features(test, features)
        source["columns"] = {"features": features}
        if args.standardize:
            X_train, X_test = standardized(X_train, X_test)
            source["preprocessing"].append("standardize")
        X_train, X_test = X_train.astype(np.float32), X_test.astype(np.float32)
    classes = None
    if kind == "class":
        y_train, y_test, classes = _class_labels(train.column(target), test.column(target), target, label2id)
        n_classes = len(classes)
    elif kind == "value":
        y_train, y_test = (_values(t, target).astype(np.float32) for t in (train, test))
        n_classes = 0
    else:
        y_train, y_test, n_classes = np.full(train.n_rows, -1, np.int64), np.full(test.n_rows, -1, np.int64), 0
    if target is not None:
        source["columns"]["target"] = target
    if classes is not None:
        source["classes"] = classes
    data = DatasetSplits(name=name, X_train=X_train, y_train=y_train, y_train_clean=y_train.copy(),
                         flipped=np.zeros(len(y_train), dtype=bool), X_test=X_test, y_test=y_test, n_classes=n_classes,
                         target_kind=kind, inputs_key=inputs_key, extra_train=extra_train, extra_test=extra_test,
                         texts_train=texts_train, texts_test=texts_test, classes=classes, source=source)
    return _finish(data, args, task_name)


def _finish(data: DatasetSplits, args: Any, task_name: str) -> DatasetSplits:
    """max_train, then the configured corruption (label noise), both recorded in ``source``."""
    if args.max_train is not None and args.max_train < len(data.y_train):
        keep = slice(0, args.max_train)
        data.X_train, data.y_train, data.y_train_clean, data.flipped = (
            data.X_train[keep], data.y_train[keep], data.y_train_clean[keep], data.flipped[keep])
        data.extra_train = {k: v[keep] for k, v in data.extra_train.items()}
        if data.texts_train is not None:
            data.texts_train = data.texts_train[keep]
        data.source["max_train"] = args.max_train
    if len(data.y_train) < 2 or len(data.y_test) < 1:
        raise DataError(f"{data.name}: needs at least 2 training and 1 test example, got {len(data.y_train)} and {len(data.y_test)}")
    if args.label_noise > 0:
        if data.target_kind != "class" or data.n_classes < 2:
            raise ConfigError(f"data.label_noise flips class labels; task {task_name!r} on this data has none")
        noisy, flipped = flip_labels(data.y_train, args.label_noise, data.n_classes, seed=args.seed + 1)
        data.y_train, data.flipped = noisy.astype(np.int64), flipped
        data.source["corruptions"].append({"kind": "label_noise", "fraction": args.label_noise, "seed": args.seed + 1,
                                           "n_flipped": int(flipped.sum())})
    return data


# -- tables and splits ------------------------------------------------------------------------
def _tables(args: Any) -> tuple[Table, Table, dict[str, Any]]:
    if args.train is not None:
        return read_table(args.train, args.format), read_table(args.test, args.format), {"kind": "files"}
    path = Path(args.path)
    splits = _dataset_dict_splits(path)
    if splits is not None and args.split_column is None:
        if {"train", "test"} <= set(splits):
            return (read_table(path, args.format, split="train"), read_table(path, args.format, split="test"),
                    {"kind": "datasets splits", "train": "train", "test": "test"})
        if len(splits) != 1:
            raise DataError(f"{path} holds the splits {sorted(splits)}; name them 'train' and 'test', or set data.split_column")
    table = read_table(path, args.format, split=splits[0] if splits and len(splits) == 1 else None)
    if args.split_column is not None:
        values = table.column(args.split_column).astype(str)
        bad = sorted(set(np.unique(values)) - {"train", "test"})
        if bad:
            rows = np.flatnonzero(~np.isin(values, ["train", "test"]))[:3].tolist()
            raise DataError(f"column {args.split_column!r} of {path.name} must hold 'train' or 'test'; found {bad[:5]} (rows {rows})")
        return (table.select(values == "train"), table.select(values == "test"),
                {"kind": "column", "column": args.split_column})
    fraction = 0.25 if args.test_fraction is None else args.test_fraction
    train_rows, test_rows = _random_split(table, args, fraction)
    return table.select(train_rows), table.select(test_rows), {"kind": "random", "test_fraction": fraction, "seed": args.seed}


def _dataset_dict_splits(path: Path) -> list[str] | None:
    """The split names of a Hugging Face DatasetDict folder, else None."""
    manifest = path / "dataset_dict.json"
    if not (path.is_dir() and manifest.is_file()):
        return None
    try:
        return list(json.loads(manifest.read_text())["splits"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{manifest} is not a readable datasets manifest") from None


def _random_split(table: Table, args: Any, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split; stratified by the target when it is a class column with >= 2 of each class."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(table.n_rows)
    stratify = None
    target = args.target or next((c for c in TARGET_CANDIDATES if c in table.names), None)
    if target is not None and target in table.names:
        column = table.column(target)
        if column.ndim == 1 and column.dtype.kind in "iubU":
            _, counts = np.unique(column, return_counts=True)
            stratify = column if len(counts) > 1 and counts.min() >= 2 else None
    try:
        train, test = train_test_split(rows, test_size=fraction, random_state=args.seed, stratify=stratify)
    except ValueError as err:
        raise DataError(f"cannot split {table.n_rows} rows with test_fraction={fraction}: {err}") from None
    return np.sort(train), np.sort(test)


# -- columns ----------------------------------------------------------------------------------
def _target_column(table: Table, name: str | None) -> str:
    if name is not None:
        table.column(name)  # a clear error when it is missing
        return name
    for candidate in TARGET_CANDIDATES:
        if candidate in table.names:
            return candidate
    raise ConfigError(f"set data.target to the label column of {Path(table.source['path']).name} "
                      f"(it has: {', '.join(table.names)})")


def _numeric_columns(table: Table, exclude: list[str]) -> list[str]:
    return [c for c in table.names if c not in exclude and table.column(c).dtype.kind in "iufb"]


def _features(table: Table, names: list[str]) -> np.ndarray:
    blocks = []
    for name in names:
        column = table.column(name)
        if column.dtype.kind not in "iufb":
            raise DataError(f"feature column {name!r} of {Path(table.source['path']).name} is not numeric "
                            f"(dtype {column.dtype}); drop it from data.features or read it as data.text")
        column = column.astype(np.float64).reshape(len(column), -1)
        bad = ~np.isfinite(column)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"feature column {name!r} of {Path(table.source['path']).name} has a missing, NaN or inf "
                            f"value at row {_file_row(table, row)}; fill or drop those rows")
        blocks.append(column)
    return np.concatenate(blocks, axis=1)


def _values(table: Table, name: str) -> np.ndarray:
    column = table.column(name)
    if column.dtype.kind not in "iuf" or column.ndim != 1:
        raise DataError(f"regression target {name!r} must be one number per row, got dtype {column.dtype} shape {column.shape}")
    bad = ~np.isfinite(column.astype(np.float64))
    if bad.any():
        raise DataError(f"target column {name!r} has a missing or NaN value at row {_file_row(table, int(np.flatnonzero(bad)[0]))}")
    return column.astype(np.float64)


def _class_labels(train: np.ndarray, test: np.ndarray, name: str, label2id: dict[str, int] | None):
    """Class indices of both splits and the class names, without renumbering integer labels."""
    if train.ndim != 1:
        raise DataError(f"label column {name!r} must hold one label per row, got shape {train.shape}")
    both = np.concatenate([train, test])
    if both.dtype.kind == "f":
        if not np.isfinite(both).all():
            raise DataError(f"label column {name!r} has missing values; fill or drop those rows")
        both = _whole_numbers(both, f"label column {name!r}")
    if both.dtype.kind == "b":
        both = both.astype(np.int64)
    if both.dtype.kind in "iu":
        if both.min() < 0:
            raise DataError(f"label column {name!r} has negative labels ({int(both.min())}); classes must be 0..C-1")
        n_classes = int(both.max()) + 1
        classes = [str(c) for c in range(n_classes)]
        if label2id:
            by_id = {int(v): k for k, v in label2id.items()}
            classes = [by_id.get(c, str(c)) for c in range(max(n_classes, len(by_id)))]
        indices = both
    else:
        text = both.astype(str)
        if label2id and not all(k.startswith("LABEL_") for k in label2id):
            unknown = sorted(set(np.unique(text)) - set(label2id))
            if unknown:
                raise DataError(f"labels {unknown[:5]} of column {name!r} are not in the model's label2id {sorted(label2id)}")
            by_id = {int(v): k for k, v in label2id.items()}
            classes = [by_id[i] for i in range(len(by_id))]
            indices = np.array([label2id[t] for t in text], dtype=np.int64)
        else:
            classes, indices = np.unique(text, return_inverse=True)
            classes = [str(c) for c in classes]
    indices = np.asarray(indices, dtype=np.int64)
    if len(classes) < 2:
        raise DataError(f"label column {name!r} has a single class; classification needs at least two")
    return indices[: len(train)], indices[len(train):], classes


def _whole_numbers(labels: np.ndarray, what: str) -> np.ndarray:
    """Float class labels as int64 when every one is a whole number; else a DataError naming ``what`` and a value."""
    fractional = np.flatnonzero(labels != np.round(labels))
    if fractional.size:
        raise DataError(f"{what} holds non-integer numbers (e.g. {labels[fractional[0]]:g}); a classification task needs class "
                        "labels (integers or strings); for numeric targets set task.name: regression")
    return labels.astype(np.int64)


def _file_row(table: Table, row: int) -> int:
    """The row's index in the file it was read from (0 = the first data row)."""
    return int(table.file_rows[row]) if table.file_rows is not None else row


# -- text ---------------------------------------------------------------------------------------
def _text_column(table: Table, name: str) -> list[str]:
    column = table.column(name)
    if column.dtype.kind != "U":
        raise DataError(f"text column {name!r} of {Path(table.source['path']).name} holds {column.dtype}, not text")
    return [str(t) for t in column]


def _display_text(table: Table, args: Any) -> np.ndarray:
    parts = ([args.prompt] if args.prompt in table.names else []) + list(args.text)
    texts = [_text_column(table, c) for c in parts]
    return np.array([" | ".join(row) for row in zip(*texts)], dtype=str)


def _tokenize(args: Any, task_name: str, tokenizer: Any, train: Table, test: Table) -> dict[str, dict[str, np.ndarray]]:
    if tokenizer is None:
        raise ConfigError("data.text needs a tokenizer: set model.hf_path or model.tokenizer")
    if len(args.text) > 2:
        raise ConfigError(f"data.text takes one column or a pair, got {len(args.text)}")
    if task_name == "causal-lm":
        if len(args.text) != 1:
            raise ConfigError("causal-lm reads one data.text column (and data.prompt for the context)")
        if args.prompt and args.prompt not in train.names and args.prompt not in test.names:
            train.column(args.prompt)  # missing everywhere: a typo, say so
        rows = {split: _lm_rows(tokenizer, table, args) for split, table in (("train", train), ("test", test))}
    else:
        rows = {}
        for split, table in (("train", train), ("test", test)):
            columns = [_text_column(table, c) for c in args.text]
            encoded = tokenizer(*columns, truncation=True, max_length=args.max_length)
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
            rows[split] = [{k: list(encoded[k][i]) for k in keys} for i in range(table.n_rows)]
    length = max(len(r["input_ids"]) for split in rows.values() for r in split)
    pad = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "labels": -100}
    return {split: {k: np.array([r[k] + [pad[k]] * (length - len(r[k])) for r in split_rows], dtype=np.int64)
                    for k in split_rows[0]} for split, split_rows in rows.items()}


def _lm_rows(tokenizer: Any, table: Table, args: Any) -> list[dict[str, list[int]]]:
    """input_ids, attention_mask and labels (-100 on prompt tokens) per row, truncated on the right."""
    texts = _text_column(table, args.text[0])
    # a split without the prompt column (fine-tuning documents) is scored in full
    prompts = _text_column(table, args.prompt) if args.prompt in table.names else [""] * len(texts)
    rows, empty = [], []
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        context = tokenizer(prompt)["input_ids"] if prompt else []
        target = tokenizer(text, add_special_tokens=not prompt)["input_ids"]
        ids = (context + target)[: args.max_length]
        labels = ([-100] * len(context) + target)[: args.max_length]
        if all(t == -100 for t in labels[1:]):  # the first token is never predicted
            empty.append(i)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    if empty:
        raise DataError(f"rows {empty[:5]} have no text tokens left to score after the prompt (max_length={args.max_length}); "
                        "raise data.max_length or shorten the prompts")
    return rows


# -- entry points ---------------------------------------------------------------------------------
def _from_entry_point(args: Any, task_name: str) -> DatasetSplits:
    """Datasets from ``data.source``, collated into arrays (items: (x, y) pairs or flat dicts of tensors)."""
    from attributor.models.loading import load_entry_point

    function = load_entry_point(args.source, "data.source")
    try:
        made = function(**args.source_args)
    except (ConfigError, DataError):
        raise
    except Exception as err:
        raise DataError(f"data.source {args.source} failed: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
    if isinstance(made, dict):
        missing = {"train", "test"} - set(made)
        if missing:
            raise DataError(f"data.source {args.source} returned a mapping without {sorted(missing)}; return {{'train': ..., 'test': ...}}")
        parts, split = (made["train"], made["test"]), {"kind": "source"}
    elif isinstance(made, (tuple, list)) and len(made) == 2 and all(isinstance(p, Dataset) for p in made):
        parts, split = tuple(made), {"kind": "source"}
    elif isinstance(made, Dataset):
        fraction = 0.25 if args.test_fraction is None else args.test_fraction
        order = np.random.default_rng(args.seed).permutation(len(made))
        n_test = max(1, int(round(fraction * len(made))))
        parts = (torch.utils.data.Subset(made, np.sort(order[n_test:]).tolist()), torch.utils.data.Subset(made, np.sort(order[:n_test]).tolist()))
        split = {"kind": "random", "test_fraction": fraction, "seed": args.seed}
    else:
        raise DataError(f"data.source {args.source} returned {type(made).__name__}; return a torch Dataset, a (train, test) "
                        "pair or a {'train': ..., 'test': ...} mapping")
    (train, test) = (_collate_all(p, args.source) for p in parts)
    kind = target_kind_of(task_name)
    if isinstance(train, dict):
        inputs_key = "input_ids" if "input_ids" in train else next(k for k in train if k != "labels")
        labels_scalar = "labels" in train and train["labels"].ndim == 1 and kind != "none"
        y_train, y_test = (t.pop("labels") if labels_scalar else None for t in (train, test))
        X_train, X_test = train.pop(inputs_key), test.pop(inputs_key)
        extra_train, extra_test = train, test
    else:
        inputs_key, (X_train, y_train), (X_test, y_test), extra_train, extra_test = None, train, test, {}, {}
    if y_train is None:
        kind = "none"
        y_train, y_test = np.full(len(X_train), -1, np.int64), np.full(len(X_test), -1, np.int64)
    kind = kind or ("value" if y_train.dtype.kind == "f" else "class")
    if kind == "class":
        y_train, y_test = (_source_class_labels(y, args.source) for y in (y_train, y_test))
    n_classes = int(max(y_train.max(), y_test.max())) + 1 if kind == "class" else 0
    data = DatasetSplits(name=args.source, X_train=X_train, y_train=y_train, y_train_clean=y_train.copy(),
                         flipped=np.zeros(len(y_train), dtype=bool), X_test=X_test, y_test=y_test, n_classes=n_classes,
                         target_kind=kind, inputs_key=inputs_key, extra_train=extra_train, extra_test=extra_test,
                         classes=[str(c) for c in range(n_classes)] if kind == "class" else None,
                         source={"entry_point": args.source, "source_args": args.source_args, "split": split,
                                 "preprocessing": [], "corruptions": []})
    return _finish(data, args, task_name)


def _source_class_labels(labels: np.ndarray, source: str) -> np.ndarray:
    """The labels of a data.source as class indices (int64), refused when they are not."""
    what = f"the labels of data.source {source}"
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            raise DataError(f"{what} have NaN or inf values; fill or drop those examples")
        labels = _whole_numbers(labels, what)
    elif labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise DataError(f"{what} must be class indices (integers), got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataError(f"{what} have negative labels ({int(labels.min())}); classes must be 0..C-1")
    return labels.astype(np.int64)


def _collate_all(dataset: Dataset, name: str):
    """All items of ``dataset`` stacked: ``(X, y)`` arrays or a dict of arrays."""
    n = len(dataset)
    if n == 0:
        raise DataError(f"data.source {name} returned an empty dataset")
    try:
        batch = default_collate([dataset[i] for i in range(n)])
    except Exception as err:
        raise DataError(f"data.source {name}: items cannot be stacked ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        "return tensors of one shape per field (pad sequences)") from None
    if isinstance(batch, dict) and all(isinstance(v, torch.Tensor) for v in batch.values()):
        return {k: v.numpy() for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and len(batch) == 2 and all(isinstance(v, torch.Tensor) for v in batch):
        return batch[0].numpy(), batch[1].numpy()
    raise DataError(f"data.source {name}: items must be (inputs, label) tensor pairs or flat dicts of tensors; "
                    "nested items need the Python API (featurize(model, task, dataset, ...))")
