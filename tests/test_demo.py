"""The main job, as `make demo` runs it (default settings, about 10 s)."""

from __future__ import annotations

import json
import re

from attributor.cli import main


def test_demo_detects_flipped_labels_and_writes_everything(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert f"report: {(out / 'report.html').resolve()}" in stdout

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 1347 and metrics["n_flipped"] == 135
    assert metrics["mislabel_auc"] >= 0.85
    assert abs(metrics["mislabel_auc_random"] - 0.5) < 0.03
    assert metrics["topk_label_agreement"] > 2 * metrics["topk_label_agreement_random"]
    assert metrics["test_accuracy"] > 0.9

    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r"(src|href)=[\"']https?://", html), "the report must work offline"
    results = (out / "results.md").read_text()
    assert "mislabel detection AUC" in results and "plots/top_influential.png" in results
    for name in ("scores/scores.npy", "topk.csv", "self_influence.csv", "metadata.json", "config.json",
                 "plots/score_distribution_by_class.png", "plots/top_influential.png", "plots/self_influence_by_group.png"):
        assert (out / name).is_file(), name

    # A second run with the same settings reuses everything and gives the same numbers.
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
