"""``attributor mirrored verify|leakage --quick``: through the pipeline functions and the CLI sub-app."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from attributor.commands import mirrored
from attributor.errors import StoreError, StoreMismatchError
from attributor.pipelines.mirrored import run_leakage, run_verify
from attributor.pipelines.mirrored_leakage import METHODS

VERIFY_KEYS = {"convex_pearson", "convex_spearman", "group_pearson", "group_spearman", "convex", "group"}


def finite(value) -> bool:
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.fixture(scope="module")
def verify_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "out"
    return out, run_verify(out, quick=True, progress=False)


@pytest.fixture(scope="module")
def leakage_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("leakage") / "out"
    return out, run_leakage(out, quick=True, progress=False)


def test_quick_verify_writes_the_metrics(verify_run):
    out, metrics = verify_run
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert VERIFY_KEYS <= set(metrics) and finite(metrics)
    assert set(metrics["convex"]) == {"digits", "breast_cancer"}
    # measured on the quick configuration: 0.933 (digits), 0.905 (breast cancer), groups 0.99
    assert metrics["convex_pearson"] >= 0.85 and metrics["convex_spearman"] >= 0.85
    assert metrics["convex"]["breast_cancer"]["pearson"] >= 0.8
    assert metrics["group_pearson"] >= 0.8 and metrics["group_spearman"] >= 0.8
    for convex in metrics["convex"].values():
        assert convex["max_grad_norm"] < 1e-9  # every retrain converged
        assert len(convex["points"]) == 3
    for name in ("results.md", "settings.json", "plots/convex_digits.png", "plots/convex_digits.csv",
                 "plots/group_loo_vs_dual.png", "plots/group_loo_vs_forward.csv"):
        assert (out / name).is_file(), name
    assert "Pearson" in (out / "results.md").read_text()
    assert not list(out.rglob("*.tmp"))


def test_quick_leakage_finds_planted_copies(leakage_run):
    out, metrics = leakage_run
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert finite(metrics)
    for name in METHODS:
        assert {"top1", "top5", "seconds_per_query"} <= set(metrics[name]), name
        assert 0 <= metrics[name]["top1"] <= metrics[name]["top5"] <= 1
        assert metrics[name]["seconds_per_query"] >= 0
    random = metrics["random"]
    assert random["top1"] == pytest.approx(1 / metrics["n_train"], rel=1e-5)
    # measured over seeds 0-2: tuned exact-copy top-1 0.29-0.44, margin 0.29-0.50; random 0.0007
    assert metrics["forward_inf_tuned"]["by_kind"]["exact"]["top1"] >= 100 * random["top1"]
    assert metrics["forward_inf_margin"]["by_kind"]["exact"]["top1"] >= 100 * random["top1"]
    assert metrics["forward_inf"]["top5"] >= 10 * random["top5"]
    assert metrics["nn_input"]["by_kind"]["exact"]["top1"] == 1.0  # an exact copy is at distance 0
    for name in ("results.md", "plots/leakage_hits.png", "plots/leakage_hits.csv", "plots/leakage_top1_by_kind.png"):
        assert (out / name).is_file(), name


def test_reusing_the_folder(leakage_run, tmp_path):
    out, _ = leakage_run
    with pytest.raises(StoreMismatchError, match="other settings"):
        run_leakage(out, quick=True, seed=3, progress=False)
    with pytest.raises(StoreMismatchError, match="mirrored leakage"):
        run_verify(out, quick=True, progress=False)
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not an `attributor mirrored verify` output"):
        run_verify(tmp_path, quick=True, progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_cli_sub_app(tmp_path):
    runner = CliRunner()
    result = runner.invoke(mirrored.app, ["leakage", "--out", str(tmp_path / "leak"), "--quick", "--seed", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "TRAK" in result.output and "ms/query" in result.output
    assert json.loads((tmp_path / "leak" / "settings.json").read_text())["settings"]["seed"] == 1

    result = runner.invoke(mirrored.app, ["verify", "--out", str(tmp_path / "verify"), "--quick", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "convex (digits): Pearson" in result.output
    assert VERIFY_KEYS <= set(json.loads((tmp_path / "verify" / "metrics.json").read_text()))

    # composed the way attributor.cli registers it
    root = typer.Typer()
    root.add_typer(mirrored.app, name="mirrored")
    root.command()(lambda: None)
    result = runner.invoke(root, ["mirrored", "leakage", "--out", str(tmp_path / "leak"), "--quick", "-q"])
    assert result.exit_code != 0 and isinstance(result.exception, StoreMismatchError)
    assert runner.invoke(root, ["mirrored", "--help"]).exit_code == 0


def test_quick_runs_are_reproducible(leakage_run, tmp_path):
    _, first = leakage_run
    second = run_leakage(Path(tmp_path) / "again", quick=True, progress=False)
    for name in METHODS:
        assert second[name]["top1"] == first[name]["top1"] and second[name]["top5"] == first[name]["top5"]
