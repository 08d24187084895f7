"""Datasets as arrays: built-in scikit-learn sets (offline), and the prepared splits of any run.

A built-in classification dataset is ``X`` of shape (n, d) float32 and ``y`` of shape (n,)
int64 with classes 0..C-1. :func:`load_dataset` returns the train/test split, standardised
with the training statistics, with optional label noise on the training labels only.

:class:`DatasetSplits` also holds the user's data once encoded
(:mod:`attributor.data.user`): numeric features, or token ids with their attention masks
(``extra_*`` arrays, batches as dicts), class labels, regression targets or none (causal LM),
the raw texts for reports, and ``source``: where the data came from, its checksum and every
corruption applied.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from attributor._io import atomic_write_bytes
from attributor.data.noise import flip_labels
from attributor.errors import DataError, UnknownNameError

__all__ = ["ArrayDataset", "DictDataset", "DatasetSplits", "load_dataset", "dataset_names", "data_id"]


class ArrayDataset(Dataset):
    """``dataset[i] == (x_i, y_i)`` as tensors, from arrays X (n, ...) and y (n, ...).

    Integer labels become int64 (class indices), floating ones float32 (regression targets).
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray):
        if len(inputs) != len(labels):
            raise DataError(f"inputs and labels differ in length: {len(inputs)} vs {len(labels)}")
        labels = np.ascontiguousarray(labels)
        self.inputs = torch.as_tensor(np.ascontiguousarray(inputs))
        self.labels = torch.as_tensor(labels, dtype=torch.float32 if labels.dtype.kind == "f" else torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.labels[index]


class DictDataset(Dataset):
    """``dataset[i] == {name: arrays[name][i]}`` as tensors (Hugging Face style batches).

    Example:
        >>> ds = DictDataset({"input_ids": np.zeros((3, 4), np.int64), "labels": np.arange(3)})
        >>> sorted(ds[1]), int(ds[1]["labels"])
        (['input_ids', 'labels'], 1)
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        lengths = {name: len(array) for name, array in arrays.items()}
        if not arrays or len(set(lengths.values())) != 1:
            raise DataError(f"a DictDataset needs arrays of one length, got {lengths}")
        self.tensors = {name: torch.as_tensor(np.ascontiguousarray(array)) for name, array in arrays.items()}
        self.n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: tensor[index] for name, tensor in self.tensors.items()}


@dataclass
class DatasetSplits:
    """A prepared experiment: train and test splits as arrays, with their provenance.

    ``X_*`` are the model inputs: features (n, d) or, for text, token ids (n, T).
    ``y_train`` holds the labels the model is trained on (possibly corrupted; class
    indices, or float targets for regression; -1 where a task has none),
    ``y_train_clean`` the original ones and ``flipped`` which were corrupted.
    ``image_shape`` is set for image data (e.g. (8, 8) for digits).

    With ``inputs_key`` set, an example is a dict ``{inputs_key: X[i], **extra[i]}`` plus
    ``"labels": y[i]`` when ``target_kind`` is not "none" (Hugging Face style); otherwise the
    pair ``(X[i], y[i])``. ``extra_*`` hold the other per-example arrays (attention_mask,
    token_type_ids, per-token LM labels). ``texts_*`` are the raw texts, for display.
    ``classes`` names each class index (the original label values). ``source`` records
    where the data came from: files and their sha256, columns used, corruptions applied.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    y_train_clean: np.ndarray
    flipped: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, int] | None = None
    target_kind: str = "class"
    inputs_key: str | None = None
    extra_train: dict[str, np.ndarray] = field(default_factory=dict)
    extra_test: dict[str, np.ndarray] = field(default_factory=dict)
    texts_train: np.ndarray | None = None
    texts_test: np.ndarray | None = None
    classes: list[str] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def has_classes(self) -> bool:
        return self.target_kind == "class"

    def train(self) -> Dataset:
        return self._dataset(self.X_train, self.y_train, self.extra_train)

    def test(self) -> Dataset:
        return self._dataset(self.X_test, self.y_test, self.extra_test)

    def _dataset(self, X: np.ndarray, y: np.ndarray, extra: dict[str, np.ndarray]) -> Dataset:
        if self.inputs_key is None:
            return ArrayDataset(X, y)
        arrays = {self.inputs_key: X, **extra}
        if self.target_kind != "none":
            arrays["labels"] = y.astype(np.float32) if self.target_kind == "value" else y.astype(np.int64)
        return DictDataset(arrays)

    def arrays(self, split: str) -> tuple[np.ndarray, ...]:
        """Every array of ``split`` ("train" or "test"), for content ids."""
        X, y, extra = (self.X_train, self.y_train, self.extra_train) if split == "train" else (self.X_test, self.y_test, self.extra_test)
        return (X, y, *(extra[k] for k in sorted(extra)))

    def save(self, path: str | os.PathLike[str]) -> None:
        meta = {"name": self.name, "n_classes": self.n_classes, "image_shape": list(self.image_shape) if self.image_shape else None,
                "target_kind": self.target_kind, "inputs_key": self.inputs_key, "classes": self.classes, "source": self.source}
        arrays = dict(X_train=self.X_train, y_train=self.y_train, y_train_clean=self.y_train_clean, flipped=self.flipped,
                      X_test=self.X_test, y_test=self.y_test, meta_json=np.array(json.dumps(meta)))
        arrays.update({f"extra_train__{k}": v for k, v in self.extra_train.items()})
        arrays.update({f"extra_test__{k}": v for k, v in self.extra_test.items()})
        if self.texts_train is not None and self.texts_test is not None:
            arrays.update(texts_train=self.texts_train, texts_test=self.texts_test)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DatasetSplits":
        path = Path(path)
        arrays = _read_npz(path, ["X_train", "y_train", "y_train_clean", "flipped", "X_test", "y_test"], optional=True)
        if "meta_json" not in arrays:  # written before version 0.2: meta = [name, n_classes, image shape]
            name, n_classes, shape = (str(v) for v in arrays.pop("meta"))
            image_shape = tuple(int(s) for s in shape.split("x")) if shape else None
            return cls(name=name, n_classes=int(n_classes), image_shape=image_shape, **arrays)  # type: ignore[arg-type]
        meta = json.loads(str(arrays.pop("meta_json")))
        extra = {split: {k.split("__", 1)[1]: arrays.pop(k) for k in list(arrays) if k.startswith(f"extra_{split}__")}
                 for split in ("train", "test")}
        return cls(name=meta["name"], n_classes=int(meta["n_classes"]),
                   image_shape=tuple(meta["image_shape"]) if meta["image_shape"] else None,
                   target_kind=meta["target_kind"], inputs_key=meta["inputs_key"], classes=meta["classes"], source=meta["source"],
                   extra_train=extra["train"], extra_test=extra["test"], texts_train=arrays.pop("texts_train", None),
                   texts_test=arrays.pop("texts_test", None), **arrays)  # type: ignore[arg-type]


def _sklearn(loader: str, image_shape: tuple[int, int] | None = None) -> Callable[[Path | None], tuple]:
    def load(path: Path | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)()
        return bunch.data, bunch.target, image_shape

    return load


def _npz(path: Path | None) -> tuple[np.ndarray, np.ndarray, None]:
    if path is None:
        raise DataError("dataset 'npz' needs data.path: a .npz file with arrays X (n, d) and y (n,)")
    arrays = _read_npz(path, ["X", "y"])
    return arrays["X"], arrays["y"], None


def _mnist1d(path: Path | None) -> tuple[np.ndarray, np.ndarray, None]:
    """MNIST-1D (Greydanus 2020), generated locally with the package's default arguments."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("dataset 'mnist1d' needs the mnist1d package: pip install 'attributor[bench]'") from None
    data = make_dataset(get_dataset_args())  # generates; never downloads or writes files
    return np.concatenate([data["x"], data["x_test"]]), np.concatenate([data["y"], data["y_test"]]), None


def _pydoc_minilm(path: Path | None) -> tuple[np.ndarray, np.ndarray, None]:
    """Paragraphs of Python's docs labelled by topic group, as frozen MiniLM embeddings (cached)."""
    from attributor.data.pydoc_text import embed_cached, pydoc_paragraphs

    if path is not None:
        raise DataError("dataset 'pydoc_minilm' is built in and takes no data.path (its embeddings are cached under $ATTRIBUTOR_CACHE)")
    texts, groups = pydoc_paragraphs()
    return embed_cached(texts), groups, None


DATASETS: dict[str, Callable[[Path | None], tuple]] = {
    "mnist1d": _mnist1d,
    "pydoc_minilm": _pydoc_minilm,
    "digits": _sklearn("load_digits", (8, 8)),
    "breast_cancer": _sklearn("load_breast_cancer"),
    "wine": _sklearn("load_wine"),
    "iris": _sklearn("load_iris"),
    "npz": _npz,
}


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.25,
    label_noise: float = 0.0,
    max_train: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> DatasetSplits:
    """Load, validate, split (stratified, seeded), standardise and optionally corrupt a dataset.

    Built-in names: digits, breast_cancer, wine, iris (scikit-learn, offline), mnist1d
    (generated locally), pydoc_minilm (Python's documentation paragraphs by topic group as
    MiniLM embeddings, :mod:`attributor.data.pydoc_text`), npz (``path`` to a file with arrays X and y).

    Standardisation uses training statistics only: per feature for tabular data, one
    mean and scale for image data.
    """
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise UnknownNameError("dataset", name, list(DATASETS))
    X, y, image_shape = DATASETS[name](Path(path) if path is not None else None)
    X, y = _validate(np.asarray(X), np.asarray(y), name, path)
    classes, y = np.unique(y, return_inverse=True)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_fraction, random_state=seed, stratify=y
        )
    except ValueError as err:
        raise DataError(f"cannot split dataset {name!r} with test_fraction={test_fraction}: {err}") from None
    if max_train is not None:
        X_train, y_train = X_train[:max_train], y_train[:max_train]
    if standardize:
        X_train, X_test = standardized(X_train, X_test, per_feature=image_shape is None)
    noisy, flipped = flip_labels(y_train, label_noise, len(classes), seed=seed + 1) if label_noise > 0 else (
        y_train.copy(), np.zeros(len(y_train), dtype=bool))
    source: dict[str, Any] = {"dataset": name, "n_rows": int(len(X)), "split": {"kind": "stratified random", "test_fraction": test_fraction, "seed": seed},
                              "preprocessing": ["standardize"] if standardize else [], "corruptions": []}
    if path is not None:
        source.update(path=str(Path(path).resolve()), sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest())
    if max_train is not None:
        source["max_train"] = max_train
    if label_noise > 0:
        source["corruptions"].append({"kind": "label_noise", "fraction": label_noise, "seed": seed + 1, "n_flipped": int(flipped.sum())})
    return DatasetSplits(
        name=name, X_train=X_train.astype(np.float32), y_train=noisy.astype(np.int64),
        y_train_clean=y_train.astype(np.int64), flipped=flipped, X_test=X_test.astype(np.float32),
        y_test=y_test.astype(np.int64), n_classes=len(classes), image_shape=image_shape,
        classes=[str(c) for c in classes], source=source,
    )


def standardized(X_train: np.ndarray, X_test: np.ndarray, per_feature: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Both splits shifted and scaled by the training mean and std: per feature (tabular
    data) or one for all (images, so that they still look like images)."""
    axis = 0 if per_feature else None
    mean, std = np.asarray(X_train.mean(axis=axis)), np.asarray(X_train.std(axis=axis))
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def data_id(*arrays: np.ndarray) -> str:
    """Content id of arrays (dtype, shape and bytes): first 16 hex digits of a sha256."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _validate(X: np.ndarray, y: np.ndarray, name: str, path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    if X.ndim != 2:
        raise DataError(f"dataset {name!r}: X must have shape (n, d), got {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"dataset {name!r}: y must have shape ({len(X)},), got {y.shape}")
    if len(X) == 0:
        where = f" ({path})" if path is not None else ""
        raise DataError(f"dataset {name!r}{where} is empty: X and y have 0 rows; give a file with examples")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"dataset {name!r}: X must be numeric, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"dataset {name!r}: X contains NaN or inf (first at row {bad[0]}, column {bad[1]})")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"dataset {name!r}: y has a NaN or inf label at row {int(np.flatnonzero(~np.isfinite(y))[0])}")
        fractional = np.flatnonzero(y != np.round(y))
        if fractional.size:
            raise DataError(f"dataset {name!r}: y holds non-integer numbers (e.g. {y[fractional[0]]:g} at row {int(fractional[0])}); "
                            "classification needs class labels: integers 0..C-1 (or strings)")
    if len(np.unique(y)) < 2:
        raise DataError(f"dataset {name!r}: needs at least two classes, y has only {np.unique(y).tolist()}")
    return X.astype(np.float64), y


def _read_npz(path: Path, keys: list[str], optional: bool = False) -> dict[str, np.ndarray]:
    """``keys`` of the archive at ``path`` (with ``optional``: every other array too)."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks the arrays {missing} (it has {archive.files})")
            return {k: archive[k] for k in (archive.files if optional else keys)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path} is not a readable .npz file: {err}") from None
