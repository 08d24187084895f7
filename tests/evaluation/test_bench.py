"""`attributor bench --suite quick` end to end (a subset of the methods, to stay small)."""

from __future__ import annotations

import csv
import math

import pytest

from attributor.cli import main
from attributor.pipelines.bench import COLUMNS


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_quick_bench_writes_the_table_with_intervals_and_baselines(tmp_path, capsys):
    pytest.importorskip("trak")
    out = tmp_path / "bench"
    methods = "trak,if-explicit,random,traker-trak"
    assert main(["bench", "--suite", "quick", "--methods", methods, "--out", str(out), "-q"]) == 0
    with open(out / "results.csv", newline="") as handle:
        assert next(csv.reader(handle)) == COLUMNS
    rows = _rows(out / "results.csv")
    assert {(r["task"], r["method"]) for r in rows} == {(t, m) for t in ("digits-logreg", "digits-mlp") for m in methods.split(",")}
    for row in rows:
        lds, low, high, chance = (float(row[k]) for k in ("lds", "lds_low", "lds_high", "lds_random"))
        assert -1 <= low <= lds <= high <= 1 and abs(chance) < 0.3
        assert 0 <= float(row["auc"]) <= 1 and abs(float(row["auc_random"]) - 0.5) < 0.05
        assert float(row["score_s"]) >= 0 and float(row["peak_mb"]) >= 0
    by = {(r["task"], r["method"]): r for r in rows}
    for task in ("digits-logreg", "digits-mlp"):  # a real attribution beats random scores on both metrics
        assert float(by[task, "trak"]["lds"]) > float(by[task, "trak"]["lds_random"]) + 0.2
        assert float(by[task, "trak"]["auc"]) > 0.85 > float(by[task, "random"]["auc"])
    assert by["digits-logreg", "trak"]["featurize_s"] and not by["digits-logreg", "if-explicit"]["featurize_s"]
    loo = {r["method"]: r for r in _rows(out / "loo.csv")}
    assert float(loo["if-explicit"]["loo_pearson"]) > 0.75  # the exact Newton step on the convex task; measured 0.885
    assert math.isfinite(float(loo["random scores"]["loo_pearson"]))
    brittle = _rows(out / "brittleness.csv")
    assert {r["method"] for r in brittle} == set(methods.split(","))
    results = (out / "results.md").read_text()
    assert "| digits-mlp | trak |" in results and "lds_random" in results


def test_bench_refuses_unknown_methods_and_suites(tmp_path, capsys):
    assert main(["bench", "--suite", "quick", "--methods", "trak,nope", "--out", str(tmp_path / "b"), "-q"]) == 2
    assert "unknown methods ['nope']" in capsys.readouterr().err
    assert main(["bench", "--suite", "huge", "--out", str(tmp_path / "c"), "-q"]) == 2
    assert "unknown suite 'huge'" in capsys.readouterr().err
