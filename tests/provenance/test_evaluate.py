"""`attributor provenance eval`: pair metrics by hand, and the report on the tiny zoo."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from attributor.cli import main  # noqa: E402
from attributor.provenance.evaluate import best_threshold_accuracy, method_metrics, pair_auc  # noqa: E402
from attributor.provenance.experiment import ModelEntry  # noqa: E402


def test_pair_auc_counts_ties_as_half_and_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    assert pair_auc(np.array([0.9, 0.8]), np.array([0.1, 0.8])) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    rng = np.random.default_rng(0)
    pos, neg = rng.random(7).round(1), rng.random(11).round(1)
    expected = roc_auc_score(np.r_[np.ones(7), np.zeros(11)], np.r_[pos, neg])
    assert pair_auc(pos, neg) == pytest.approx(expected, abs=1e-12)
    assert pair_auc(np.array([]), neg) is None


def test_best_threshold_accuracy_and_its_chance_level():
    out = best_threshold_accuracy(np.array([0.9, 0.7]), np.array([0.8, 0.1, 0.2, 0.3]))
    assert out["accuracy"] == pytest.approx(5 / 6)  # threshold 0.9: 1 TP + 4 TN
    assert out["accuracy_chance"] == pytest.approx(4 / 6)
    assert out["balanced_accuracy"] == pytest.approx(0.875)  # threshold 0.7: TPR 1, TNR 3/4


def test_pairs_follow_families_and_types_and_incomparable_pairs_count_as_unrelated():
    models = [ModelEntry(model_id=i, path=i, family=f, model_type=t) for i, f, t in
              [("a", "A", "Base"), ("a-chat", "A", "Chat"), ("a-int8", "A", "Quantized"),
               ("b", "B", "Base"), ("b-chat", "B", "Chat")]]
    sim = np.array([[1.0, 0.9, 0.95, 0.2, 0.3],
                    [0.9, 1.0, 0.8, 0.3, np.nan],
                    [0.95, 0.8, 1.0, 0.1, 0.2],
                    [0.2, 0.3, 0.1, 1.0, 0.85],
                    [0.3, np.nan, 0.2, 0.85, 1.0]])
    out = method_metrics(sim, models)
    assert out["n_positive"] == 3 and out["n_negative"] == 6 and out["n_incomparable"] == 1
    assert out["auc"] == 1.0 and out["by_type"] == {"Chat": 1.0, "Quantized": 1.0}
    assert set(out["by_type_pair"]) == {"Base-Chat", "Base-Quantized", "Chat-Quantized"}
    assert out["by_type_pair"]["Chat-Quantized"] == 1.0


def test_eval_on_the_tiny_zoo_writes_the_report(tmp_path, tiny_zoo_build, capsys):
    zoo, entries, _ = tiny_zoo_build
    out = tmp_path / "eval"
    assert main(["provenance", "eval", "--zoo", str(zoo), "--out", str(out), "-m", "embedding_gram", "-m", "input_output", "-q"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert set(report) == {"embedding_gram", "input_output", "combined"}  # combined: their mean z-scored similarity
    assert report["combined"]["methods"] == ["embedding_gram", "input_output"]
    types = {e["model_type"] for e in entries} - {"Base"}
    for row in report.values():
        assert set(row["by_derivation"]) == types and row["by_derivation"]["Quantized"]["n"] == len({e["family"] for e in entries})
        assert 0 <= row["auc"] <= 1 and 0 <= row["accuracy"] <= 1 and set(row["by_type"]) == types
        assert row["accuracy_chance"] > 0.5 and row["n_positive"] == 4 * len({e["family"] for e in entries})
    # an int8 copy of a model is the easiest derived type: every weight fingerprint finds it
    assert report["embedding_gram"]["by_type"]["Quantized"] == 1.0
    table = (out / "results.md").read_text()
    assert "| embedding_gram | correlation |" in table and "Base-Quantized" in table
    assert "embedding_gram" in capsys.readouterr().out


def test_eval_passes_method_arguments_and_refuses_bad_ones(tmp_path, tiny_zoo_build, capsys):
    zoo, _, _ = tiny_zoo_build
    out = tmp_path / "eval"
    args = ["provenance", "eval", "--zoo", str(zoo), "--out", str(out), "-m", "input_output", "-q"]
    assert main(args + ["-a", "input_output.n0=7", "-a", "input_output.word_boundary=false"]) == 0
    assert json.loads((out / "metrics.json").read_text())["input_output"]["n_positive"] > 0
    capsys.readouterr()
    for bad, message in [(["-a", "input_output.n0"], "must look like key=value"),
                         (["-a", "n0=7"], "must name a method and an argument"),
                         (["-a", "next_token.seed=1"], "not evaluated here"),
                         (["-a", "input_output.n0=-3"], "n0"),
                         (["-a", "input_output.colour=1"], "unknown argument")]:
        assert main(args[:4] + ["--out", str(tmp_path / "bad")] + args[6:] + bad) == 2, bad
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (bad, err)
    assert not (tmp_path / "bad").exists()


def test_eval_without_a_zoo_says_how_to_build_one(tmp_path, capsys):
    assert main(["provenance", "eval", "--zoo", str(tmp_path), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "attributor provenance zoo" in capsys.readouterr().err
