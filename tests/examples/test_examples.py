"""Every example in examples/ runs as its README says, on tiny models built from a config.

Each example folder is copied to a temporary directory, its ``prepare.py`` makes the
inputs a user would already have (data files, a model folder, checkpoints), then the CLI
runs the example's config. The numbers checked are ones a user relies on: flipped labels
found by self-influence beside chance, a generated answer's source document found beside
chance, and the user's own model and checkpoints used as they are.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from attributor.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def prepared(name: str, tmp_path: Path):
    folder = shutil.copytree(EXAMPLES / name, tmp_path / name)
    spec = importlib.util.spec_from_file_location(f"example_{name}", folder / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
        module.main()
    finally:
        sys.path.remove(str(folder))
    return folder, module


def cli(*args) -> int:
    return main([str(a) for a in args])


def test_tabular_csv_with_the_users_model_and_checkpoints(tmp_path, capsys):
    folder, _ = prepared("tabular_csv", tmp_path)
    out = tmp_path / "run"
    assert cli("run", "--config", folder / "config.yaml", "--out", out, "--quiet") == 0
    assert "test accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9  # the user's trained Tanh model, not an untrained built-in one
    assert not (out / "checkpoints").exists()  # the user's checkpoints are used in place, never retrained
    meta = json.loads((out / "metadata.json").read_text())
    assert [Path(p).name for p in meta["checkpoints"]] == ["epoch_100.pt", "epoch_200.pt", "epoch_300.pt"]
    assert meta["model"]["class"] == "TanhClassifier" and meta["data"]["corruptions"] == []
    assert meta["data"]["classes"] == ["benign", "malignant"]
    assert {f["sha256"] for f in meta["data"]["files"]} and meta["data"]["split"] == {"kind": "files"}


def test_hf_text_classifier_finds_flipped_labels_exact_and_factored(tmp_path):
    folder, _ = prepared("hf_text_classifier", tmp_path)
    aucs = {}
    for projection in ("gaussian", "factored"):
        out = tmp_path / projection
        assert cli("run", "--config", folder / "config.yaml", "--out", out, "--quiet",
                   "--set", f"featurize.projection={projection}") == 0
        metrics = json.loads((out / "metrics.json").read_text())
        aucs[projection] = (metrics["mislabel_auc"], metrics["mislabel_auc_random"])
    for auc, chance in aucs.values():
        assert auc > 0.8 and abs(chance - 0.5) < 0.1, aucs


def test_causal_lm_traces_generated_answers_to_their_documents(tmp_path):
    folder, module = prepared("causal_lm", tmp_path)
    results = {}
    for projection in ("gaussian", "factored"):
        out = tmp_path / projection
        assert cli("run", "--config", folder / "config.yaml", "--out", out, "--quiet",
                   "--set", f"featurize.projection={projection}") == 0
        results[projection] = module.evaluate(out, folder / "work")
    for result in results.values():
        assert result["mrr"] > 3 * result["chance_mrr"], results
    texts = [json.loads(line)["text"] for line in (folder / "work" / "answers.jsonl").read_text().splitlines()]
    data = np.load(tmp_path / "gaussian" / "data.npz")
    assert list(data["texts_test"][:2]) == [f"{json.loads(line)['prompt']} | {t}" for line, t in
                                             zip((folder / "work" / "answers.jsonl").read_text().splitlines()[:2], texts[:2])]
