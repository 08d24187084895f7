"""The user's own data, model and checkpoints through the CLI: read as given, never altered.

Every test here failed on the release before this one: the CLI could only train its own
MLP on a built-in dataset, flipped 10% of any labels by default, and ignored data.path
without data.name=npz.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from attributor.cli import main
from attributor.data import DatasetSplits

MODEL_FILE = '''
import torch
from torch import nn

def build(n_features, n_classes, hidden=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_classes))

def build_relu(n_features, n_classes, hidden=8):
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

def wide(n_features, n_classes):
    return nn.Sequential(nn.Linear(n_features, 16), nn.Tanh(), nn.Linear(16, n_classes))

def datasets(n=60):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return {"train": torch.utils.data.TensorDataset(x[:40], y[:40]), "test": torch.utils.data.TensorDataset(x[40:], y[40:])}
'''


def write_csv(path: Path, rows: list[list], header: list[str]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    """A CSV with raw (unstandardised) features, string labels and a split column."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        label = ["cat", "dog", "emu"][i % 3]
        x = rng.normal(size=3) * 10 + 100 + 5 * (i % 3)
        rows.append([f"{v:.5f}" for v in x] + [label, "test" if i % 4 == 0 else "train"])
    return write_csv(tmp_path / "animals.csv", rows, ["a", "b", "c", "species", "part"])


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def config(tmp_path: Path, body: dict, name: str = "config.yaml") -> Path:
    base = {"train": {"epochs": 3, "checkpoint_epochs": [3]}, "featurize": {"proj_dim": 32}, "score": {"topk": 3}}
    for key, value in body.items():
        base[key] = {**base.get(key, {}), **value}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    return path


def test_user_csv_is_used_as_given(tmp_path, table, capsys):
    cfg = config(tmp_path, {"data": {"path": "animals.csv", "target": "species", "split_column": "part"}})
    out = tmp_path / "run"
    code, _, err = run(capsys, "score", "--config", cfg, "--out", out, "--quiet")
    assert code == 0, err
    data = DatasetSplits.load(out / "data.npz")
    raw = np.genfromtxt(table, delimiter=",", skip_header=1, usecols=(0, 1, 2))
    part = np.genfromtxt(table, delimiter=",", skip_header=1, usecols=4, dtype=str)
    np.testing.assert_allclose(data.X_train, raw[part == "train"], rtol=1e-6)  # not standardised, not digits
    assert data.classes == ["cat", "dog", "emu"] and not data.flipped.any()
    labels = np.genfromtxt(table, delimiter=",", skip_header=1, usecols=3, dtype=str)[part == "train"]
    assert [data.classes[i] for i in data.y_train] == list(labels)  # no label flipped by default
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["data"]["corruptions"] == [] and meta["data"]["split"] == {"kind": "column", "column": "part"}
    (file,) = meta["data"]["files"]
    import hashlib

    assert file["sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()


def test_label_noise_only_when_asked_and_recorded(tmp_path, table, capsys):
    cfg = config(tmp_path, {"data": {"path": str(table), "target": "species", "label_noise": 0.2}})
    out = tmp_path / "run"
    assert run(capsys, "score", "--config", cfg, "--out", out, "--quiet")[0] == 0
    data = DatasetSplits.load(out / "data.npz")
    (corruption,) = json.loads((out / "metadata.json").read_text())["data"]["corruptions"]
    assert corruption["kind"] == "label_noise" and corruption["n_flipped"] == int(data.flipped.sum()) > 0
    assert (data.y_train != data.y_train_clean).sum() == data.flipped.sum()


def test_data_flag_without_name_reads_the_file(tmp_path, table, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "featurize", "--data", table, "--set", "data.target=species", "--set", "train.epochs=2",
                       "--set", "train.checkpoint_epochs=[2]", "--set", "featurize.proj_dim=16", "--out", out, "--quiet")
    assert code == 0, err
    assert DatasetSplits.load(out / "data.npz").X_train.shape[1] == 3  # the CSV's 3 features, not digits' 64


def test_own_entry_point_and_checkpoints_are_used_in_place(tmp_path, table, capsys):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    import importlib.util

    spec = importlib.util.spec_from_file_location("mymodel_for_test", tmp_path / "mymodel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build(3, 3)
    (tmp_path / "ckpts").mkdir()
    for epoch in (2, 10):  # natural order: epoch_2 before epoch_10
        torch.nn.init.normal_(model[0].weight, std=0.1 * epoch)
        torch.save(model.state_dict(), tmp_path / "ckpts" / f"epoch_{epoch}.pt")
    cfg = config(tmp_path, {"data": {"path": "animals.csv", "target": "species", "split_column": "part"},
                            "model": {"entry_point": "mymodel.py:build", "checkpoints": ["ckpts/epoch_*.pt"]}})
    out = tmp_path / "run"
    code, _, err = run(capsys, "score", "--config", cfg, "--out", out, "--quiet")
    assert code == 0, err
    assert not (out / "checkpoints").exists()
    meta = json.loads((out / "metadata.json").read_text())
    assert [Path(p).name for p in meta["checkpoints"]] == ["epoch_2.pt", "epoch_10.pt"]
    assert meta["model"]["class"] == "Sequential" and meta["model"]["trained_here"] is False

    # the same features as the Python API on the user's model: the CLI did not swap the architecture
    from attributor import featurize, make_projector
    from attributor.tasks import ClassificationTask

    data = DatasetSplits.load(out / "data.npz")
    store = featurize(module.build(3, 3), ClassificationTask(), data.train(), sorted((tmp_path / "ckpts").glob("*.pt"), key=lambda p: int(p.stem.split("_")[1])),
                      tmp_path / "api-store", make_projector("gaussian", 32, seed=0), progress=False)
    from attributor.features import FeatureStore

    cli_store = FeatureStore.open(out / "store")
    for c in range(2):
        np.testing.assert_array_equal(store.features("train", c), cli_store.features("train", c))


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path, table, capsys):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    torch.save({"0.weight": torch.zeros(16, 3), "0.bias": torch.zeros(16), "2.weight": torch.zeros(3, 16), "2.bias": torch.zeros(3)},
               tmp_path / "wide.pt")
    cfg = config(tmp_path, {"data": {"path": "animals.csv", "target": "species"},
                            "model": {"entry_point": "mymodel.py:build", "checkpoints": ["wide.pt"]}})
    code, _, err = run(capsys, "featurize", "--config", cfg, "--out", tmp_path / "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "wide.pt" in err and "0.weight" in err and "16" in err  # the mis-shaped key with its shapes


def test_separate_files_regression_and_own_split(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for split, n in (("train", 50), ("test", 10)):
        x = rng.normal(size=(n, 2))
        write_csv(tmp_path / f"{split}.csv", [[f"{a:.4f}", f"{b:.4f}", f"{2 * a - b:.4f}"] for a, b in x], ["u", "v", "price"])
    cfg = config(tmp_path, {"data": {"train": "train.csv", "test": "test.csv", "target": "price"},
                            "task": {"name": "regression"}, "train": {"epochs": 20, "checkpoint_epochs": [20], "lr": 0.01}})
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "run", "--config", cfg, "--out", out, "--quiet")
    assert code == 0, err
    data = DatasetSplits.load(out / "data.npz")
    assert data.target_kind == "value" and len(data.y_train) == 50 and len(data.y_test) == 10
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test_mse" in metrics and "mislabel_auc" not in metrics and "test mse" in stdout


def test_entry_point_data_source(tmp_path, capsys):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    cfg = config(tmp_path, {"data": {"source": "mymodel.py:datasets"}, "model": {"entry_point": "mymodel.py:build"}})
    out = tmp_path / "run"
    code, _, err = run(capsys, "score", "--config", cfg, "--out", out, "--quiet")
    assert code == 0, err
    data = DatasetSplits.load(out / "data.npz")
    assert data.X_train.shape == (40, 4) and data.n_classes == 2


def test_hf_datasets_folder_with_its_own_splits(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    parts = {s: datasets.Dataset.from_dict({"x": rng.normal(size=(n, 3)).tolist(), "label": rng.integers(0, 2, n).tolist()})
             for s, n in (("train", 30), ("test", 8))}
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "hf"))
    out = tmp_path / "run"
    code, _, err = run(capsys, "featurize", "--data", tmp_path / "hf", "--set", "train.epochs=1", "--set", "train.checkpoint_epochs=[1]",
                       "--set", "featurize.proj_dim=8", "--out", out, "--quiet")
    assert code == 0, err
    data = DatasetSplits.load(out / "data.npz")
    assert data.X_train.shape == (30, 3) and len(data.y_test) == 8


@pytest.mark.parametrize("settings, words", [
    ({"data": {"name": "digits", "path": "x.csv"}}, "conflicts with data.path"),
    ({"data": {"test": "t.csv"}}, "data.test needs data.train"),
    ({"data": {"path": "x.csv", "split_column": "s", "test_fraction": 0.2}}, "conflicts with your own split"),
    ({"data": {"path": "x.csv", "text": "t"}}, "needs a tokenizer"),
    ({"data": {"path": "x.csv", "label_noise": 0.1}, "task": {"name": "regression"}}, "has none"),
    ({"model": {"name": "mlp", "entry_point": "m.py:f"}}, "give one of"),
    ({"task": {"name": "nope"}}, "unknown task 'nope'"),
])
def test_inconsistent_settings_are_refused_in_one_line(tmp_path, capsys, settings, words):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(settings))
    code, _, err = run(capsys, "featurize", "--config", path, "--out", tmp_path / "run")
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "data.npz").exists()


def test_csv_named_as_npz_gets_the_right_advice(tmp_path, table, capsys):
    fake = tmp_path / "data.npz"
    fake.write_bytes(table.read_bytes())
    code, _, err = run(capsys, "featurize", "--data", fake, "--out", tmp_path / "run")
    assert code == 2 and "CSV" in err and "format" in err and "pickle" not in err


def test_a_failed_first_attempt_does_not_lock_the_run_directory(tmp_path, table, capsys):
    out = tmp_path / "run"
    code, _, _ = run(capsys, "featurize", "--data", table, "--set", "data.target=nope", "--out", out)
    assert code == 2
    code, _, err = run(capsys, "featurize", "--data", table, "--set", "data.target=species", "--set", "train.epochs=1",
                       "--set", "train.checkpoint_epochs=[1]", "--set", "featurize.proj_dim=8", "--out", out, "--quiet")
    assert code == 0, err


def test_checkpoints_placed_in_the_run_directory_are_used_and_never_deleted(tmp_path, table, capsys):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    import importlib.util

    spec = importlib.util.spec_from_file_location("mymodel_for_test2", tmp_path / "mymodel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.build(3, 3).state_dict(), out / "checkpoints" / "mine.pt")
    cfg = config(tmp_path, {"data": {"path": "animals.csv", "target": "species"},
                            "model": {"entry_point": "mymodel.py:build", "checkpoints": [str(out / "checkpoints" / "mine.pt")]}})
    code, _, err = run(capsys, "featurize", "--config", cfg, "--out", out, "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "featurize", "--config", cfg, "--set", "data.seed=1", "--overwrite", "--out", out, "--quiet")
    assert code == 0, err
    assert (out / "checkpoints" / "mine.pt").is_file()


def test_a_failed_checkpoint_does_not_lock_the_store(tmp_path, table, capsys):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    import importlib.util

    spec = importlib.util.spec_from_file_location("mymodel_for_test3", tmp_path / "mymodel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    good = tmp_path / "ckpt.pt"
    torch.save({"0.weight": torch.zeros(16, 3)}, good)  # the wrong file at first
    cfg = config(tmp_path, {"data": {"path": "animals.csv", "target": "species"},
                            "model": {"entry_point": "mymodel.py:build", "checkpoints": [str(good)]}})
    out = tmp_path / "run"
    assert run(capsys, "featurize", "--config", cfg, "--out", out, "--quiet")[0] == 2
    torch.save(module.build(3, 3).state_dict(), good)  # the user puts the right file in place
    code, _, err = run(capsys, "featurize", "--config", cfg, "--out", out, "--quiet")
    assert code == 0, err
