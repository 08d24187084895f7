"""Datasets as arrays: built-in scikit-learn sets (offline) and user ``.npz`` files.

A classification dataset is ``X`` of shape (n, d) float32 and ``y`` of shape (n,) int64
with classes 0..C-1. :func:`load_dataset` returns the train/test split, standardised with
the training statistics, with optional label noise on the training labels only.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from attributor._io import atomic_write_bytes
from attributor.data.noise import flip_labels
from attributor.errors import DataError, UnknownNameError

__all__ = ["ArrayDataset", "DatasetSplits", "load_dataset", "dataset_names", "data_id"]


class ArrayDataset(Dataset):
    """``dataset[i] == (x_i, y_i)`` as tensors, from arrays X (n, d) and y (n,)."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray):
        if len(inputs) != len(labels):
            raise DataError(f"inputs and labels differ in length: {len(inputs)} vs {len(labels)}")
        self.inputs = torch.as_tensor(np.ascontiguousarray(inputs))
        self.labels = torch.as_tensor(np.ascontiguousarray(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.labels[index]


@dataclass
class DatasetSplits:
    """A prepared classification experiment.

    ``y_train`` holds the (possibly corrupted) labels the model is trained on;
    ``y_train_clean`` the original ones and ``flipped`` which were corrupted.
    ``image_shape`` is set for image data (e.g. (8, 8) for digits).
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

    def train(self) -> ArrayDataset:
        return ArrayDataset(self.X_train, self.y_train)

    def test(self) -> ArrayDataset:
        return ArrayDataset(self.X_test, self.y_test)

    def save(self, path: str | os.PathLike[str]) -> None:
        buffer = io.BytesIO()
        np.savez(
            buffer, X_train=self.X_train, y_train=self.y_train, y_train_clean=self.y_train_clean,
            flipped=self.flipped, X_test=self.X_test, y_test=self.y_test,
            meta=np.array([self.name, str(self.n_classes), "x".join(map(str, self.image_shape or ()))]),
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DatasetSplits":
        arrays = _read_npz(Path(path), ["X_train", "y_train", "y_train_clean", "flipped", "X_test", "y_test", "meta"])
        name, n_classes, shape = (str(v) for v in arrays.pop("meta"))
        image_shape = tuple(int(s) for s in shape.split("x")) if shape else None
        return cls(name=name, n_classes=int(n_classes), image_shape=image_shape, **arrays)  # type: ignore[arg-type]


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


DATASETS: dict[str, Callable[[Path | None], tuple]] = {
    "mnist1d": _mnist1d,
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
) -> DatasetSplits:
    """Load, validate, split (stratified, seeded), standardise and optionally corrupt a dataset.

    Built-in names: digits, breast_cancer, wine, iris (scikit-learn, offline), mnist1d
    (generated locally), npz (``path`` to a file with arrays X and y).

    Standardisation uses training statistics only: per feature for tabular data, one
    mean and scale for image data.
    """
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise UnknownNameError("dataset", name, list(DATASETS))
    X, y, image_shape = DATASETS[name](Path(path) if path is not None else None)
    X, y = _validate(np.asarray(X), np.asarray(y), name)
    classes, y = np.unique(y, return_inverse=True)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_fraction, random_state=seed, stratify=y
        )
    except ValueError as err:
        raise DataError(f"cannot split dataset {name!r} with test_fraction={test_fraction}: {err}") from None
    if max_train is not None:
        X_train, y_train = X_train[:max_train], y_train[:max_train]
    # Tabular features are standardised one by one; image pixels share one scale so that
    # images still look like images.
    axis = None if image_shape is not None else 0
    mean, std = np.asarray(X_train.mean(axis=axis)), np.asarray(X_train.std(axis=axis))
    std[std == 0] = 1.0
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    noisy, flipped = flip_labels(y_train, label_noise, len(classes), seed=seed + 1) if label_noise > 0 else (
        y_train.copy(), np.zeros(len(y_train), dtype=bool))
    return DatasetSplits(
        name=name, X_train=X_train.astype(np.float32), y_train=noisy.astype(np.int64),
        y_train_clean=y_train.astype(np.int64), flipped=flipped, X_test=X_test.astype(np.float32),
        y_test=y_test.astype(np.int64), n_classes=len(classes), image_shape=image_shape,
    )


def data_id(*arrays: np.ndarray) -> str:
    """Content id of arrays (dtype, shape and bytes): first 16 hex digits of a sha256."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _validate(X: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    if X.ndim != 2:
        raise DataError(f"dataset {name!r}: X must have shape (n, d), got {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"dataset {name!r}: y must have shape ({len(X)},), got {y.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"dataset {name!r}: X must be numeric, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"dataset {name!r}: X contains NaN or inf (first at row {bad[0]}, column {bad[1]})")
    if len(np.unique(y)) < 2:
        raise DataError(f"dataset {name!r}: needs at least two classes")
    return X.astype(np.float64), y


def _read_npz(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks the arrays {missing} (it has {archive.files})")
            return {k: archive[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path} is not a readable .npz file: {err}") from None
