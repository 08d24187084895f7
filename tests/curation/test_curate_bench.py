"""``attributor curate bench --quick`` end to end: columns, every method at every budget, resume, refusals."""

from __future__ import annotations

import csv

import pytest

from attributor.cli import main
from attributor.curation.bench import COLUMNS, VARIANT_METHODS


def test_quick_bench_writes_every_method_and_resumes(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["curate", "bench", "--out", str(out), "--quick", "--quiet"]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert list(rows[0]) == COLUMNS
    accuracy = {(r["method"], float(r["budget"])): r for r in rows if r["metric"] == "accuracy"}
    assert set(accuracy) == {("full", 1.0)} | {(m, 0.5) for m in VARIANT_METHODS["classification"]}
    recall = {(r["method"], float(r["budget"])): r for r in rows if r["metric"] == "i2t_r1"}
    assert set(recall) == {("full", 1.0)} | {(m, 0.5) for m in VARIANT_METHODS["retrieval"]}
    assert {r["variant"] for r in rows} == {"classification", "retrieval"}
    # the CLIP-score filter drops mismatched pairs far more often than chance (half of them at 50% kept)
    assert float(recall[("alignment", 0.5)]["corrupted_removed"]) > 0.6
    for row in accuracy.values():
        assert float(row["low"]) <= float(row["mean"]) <= float(row["high"]) and 0 <= float(row["mean"]) <= 1
        assert 0 <= float(row["corrupted_removed"]) <= 1
    assert float(accuracy[("random", 0.5)]["diff_vs_random"]) == 0.0 == float(recall[("random", 0.5)]["diff_vs_random"])
    # loss-rank drops mislabelled examples far more often than chance (half of them at 50% kept)
    assert float(accuracy[("loss-rank", 0.5)]["corrupted_removed"]) > 0.7
    assert float(accuracy[("full", 1.0)]["corrupted_removed"]) == 0.0
    assert (out / "results.md").read_text().startswith("# Curation benchmark")
    # a rerun reads every retrain from the cache
    capsys.readouterr()
    assert main(["curate", "bench", "--out", str(out), "--quick"]) == 0
    assert "selections to retrain" not in capsys.readouterr().err
    assert main(["curate", "bench", "--out", str(out), "--quick", "--seeds", "3"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--budget", "1.5"], "budgets must be fractions"),
    (["--method", "magic"], "unknown curation method 'magic'"),
    (["--method", "loss-rank"], "needs the random method"),
    (["--seeds", "0"], "seeds must be a positive integer"),
    (["--variant", "audio"], "variants must be among"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, args, message):
    assert main(["curate", "bench", "--out", str(tmp_path / "b"), "--quick", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "b").exists()
