"""Labels and sizes that used to slip through or end in a torch error (issue 19, item 11)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from zoo import classification_data, mlp, train_and_save

from attributor.config import load_config
from attributor.data.datasets import load_dataset
from attributor.data.user import load_user_data
from attributor.errors import DataError
from attributor.features import featurize, make_projector
from attributor.methods import get_method
from attributor.models import load_checkpoint
from attributor.models.training import train
from attributor.tasks import ClassificationTask

SOURCE = '''
import torch
from torch.utils.data import TensorDataset

def make(labels):
    x = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor(labels)
    return {"train": TensorDataset(x[:-4], y[:-4]), "test": TensorDataset(x[-4:], y[-4:])}
'''


def _user_data(tmp_path, *sets):
    config = load_config(None, list(sets))
    return load_user_data(config.data, task_name=config.task.name)


def test_float_class_labels_from_a_source_are_refused(tmp_path):
    (tmp_path / "src.py").write_text(SOURCE)
    entry = f"data.source={tmp_path / 'src.py'}:make"
    with pytest.raises(DataError, match=r"labels.*non-integer.*e\.g\. 0\.5.*regression"):
        _user_data(tmp_path, entry, 'data.source_args={"labels": [0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 0.5, 1.5]}',
                   "task.name=classification")
    data = _user_data(tmp_path, entry, 'data.source_args={"labels": [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0]}',
                      "task.name=classification")
    assert data.y_train.dtype == np.int64 and data.n_classes == 3  # whole floats are class indices


def test_float_class_labels_in_a_csv_name_the_column_and_a_value(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("f1,f2,label\n" + "".join(f"{i},{i % 3},{0.5 + i % 2}\n" for i in range(12)))
    with pytest.raises(DataError, match=r"label column 'label' holds non-integer numbers \(e\.g\. (0\.5|1\.5)"):
        _user_data(tmp_path, f"data.path={path}", "task.name=classification")


def test_float_labels_of_a_builtin_npz_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.random.default_rng(0).normal(size=(20, 3)), y=np.tile([0.5, 1.5], 10))
    with pytest.raises(DataError, match=r"dataset 'npz'.*y holds non-integer.*e\.g\. 0\.5"):
        load_dataset("npz", path=path)


def test_an_empty_builtin_npz_says_it_is_empty(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((0, 3)), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match=r"dataset 'npz'.*d\.npz.*is empty") as caught:
        load_dataset("npz", path=path)
    assert "two classes" not in str(caught.value)


def test_an_empty_training_split_says_which_split(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("f1,f2,label,split\n1,2,0,test\n2,3,1,test\n3,1,0,test\n")
    with pytest.raises(DataError, match=r"f\.csv.*train split.*empty.*split"):
        _user_data(tmp_path, f"data.path={path}", "data.split_column=split", "task.name=classification")


@pytest.fixture
def problem(tmp_path):
    inputs, labels = classification_data(100, d=6, n_classes=3, seed=0, dtype=torch.float32)
    model = mlp(d=6, n_classes=3, dtype=torch.float32)
    return model, inputs, labels, train_and_save(model, inputs, labels, tmp_path / "ckpts", n_checkpoints=1)


def test_featurize_refuses_an_empty_dataset_before_writing(tmp_path, problem):
    model, inputs, labels, checkpoints = problem
    with pytest.raises(DataError, match="split 'train' of the dataset is empty"):
        featurize(model, ClassificationTask(), TensorDataset(inputs[:0], labels[:0]), checkpoints, tmp_path / "store",
                  make_projector("gaussian", 8, seed=0), progress=False)
    assert not (tmp_path / "store").exists()


def test_fit_on_an_empty_split_is_a_clear_error(tmp_path, problem):
    model, inputs, labels, checkpoints = problem
    projector = make_projector("gaussian", 8, seed=0)
    store = featurize(model, ClassificationTask(), TensorDataset(inputs[:10], labels[:10]), checkpoints, tmp_path / "store",
                      projector, split="test", progress=False)
    store.add_split("train", 0, None)  # an empty split, as an older version wrote it
    for name in ("trak", "grad-dot", "tracin"):
        with pytest.raises(DataError, match=r"split 'train' is empty"):
            get_method(name).fit(store)


def test_labels_out_of_range_in_a_later_batch(tmp_path, problem):
    model, inputs, labels, checkpoints = problem
    bad = labels.clone()
    bad[70] = 7  # not in the first batch of its chunk
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\).*\[7\]"):
        featurize(model, ClassificationTask(), TensorDataset(inputs, bad), checkpoints, tmp_path / "store",
                  make_projector("gaussian", 8, seed=0), batch_size=16, progress=False)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\).*\[7\]"):
        train(mlp(d=6, n_classes=3, dtype=torch.float32), ClassificationTask(), TensorDataset(inputs, bad),
              epochs=1, batch_size=16, progress=False)


def test_a_refused_pickle_checkpoint_prints_no_torch_warning(tmp_path):
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"w": torch.zeros(2)}, handle, protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match="never unpickles code"):
            load_checkpoint(mlp(), path)
    assert [str(w.message) for w in caught] == []
