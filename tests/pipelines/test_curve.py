"""``attributor bench --curve`` and the independently trained ensemble it rests on (small grids)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from attributor.cli import main
from attributor.errors import ConfigError
from attributor.evaluation.ensemble import train_models
from attributor.models import load_checkpoint
from attributor.pipelines.bench_tasks import BenchTask, Suite, prepare
from attributor.pipelines.curve import CURVE_COLUMNS, CurveGrid, run_curve


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _state(task_or_recipe, path):
    return load_checkpoint(task_or_recipe.build(), path).state_dict()


def test_independent_models_are_seeded_cached_and_member_zero_is_the_bench_model(tmp_path):
    task = BenchTask("tiny-mlp", "digits", "mlp", hidden=(8,), epochs=3, checkpoint_epochs=(3,), max_train=60, n_queries=5)
    prepared = prepare(task, "clean", tmp_path / "tasks")
    recipe = task.recipe(prepared.data)
    paths, seconds = train_models(recipe, 3, tmp_path / "models")
    assert len(paths) == len(set(paths)) == 3 and all(s > 0 for s in seconds)
    states = [_state(recipe, p) for p in paths]
    for name, value in _state(recipe, prepared.checkpoints[-1]).items():  # member 0: the bench's full model, bit for bit
        assert torch.equal(states[0][name], value)
    assert not torch.allclose(states[0]["net.0.weight"], states[1]["net.0.weight"])  # other seeds: other models
    stamp = [p.stat().st_mtime_ns for p in paths]
    again, seconds_again = train_models(recipe, 3, tmp_path / "models")
    assert again == paths and seconds_again == seconds and [p.stat().st_mtime_ns for p in paths] == stamp  # nothing retrained
    with pytest.raises(ConfigError, match="n_models"):
        train_models(recipe, 0, tmp_path / "models")


def test_curve_rows_costs_and_outputs_on_a_tiny_task(tmp_path):
    pytest.importorskip("trak")
    task = BenchTask("tiny-mlp", "digits", "mlp", hidden=(8,), epochs=4, checkpoint_epochs=(2, 4), max_train=80, n_queries=8)
    suite = Suite(tasks=(task,), n_subsets=8, proj_dim=256)
    # k above traker's block of 100: traker 0.3.2 frees a one-block projection matrix after featurizing and then fails
    grid = CurveGrid(models=(2, 1), dims=(256, 128), methods=("trak", "if-ekfac"), peers=("traker-trak",), peer_grid="cross")
    rows = run_curve(suite, tmp_path, grid=grid, progress=False)
    table = _rows(tmp_path / "curve" / "curve.csv")
    assert list(table[0]) == CURVE_COLUMNS and len(table) == len(rows)
    keys = {(r["method"], r["setting"], r["models"], r["k"]) for r in rows}
    expected = {("trak", "independent", m, k) for m in (1, 2) for k in (128, 256)} | {("trak", "trajectory", None, k) for k in (128, 256)}
    expected |= {("if-ekfac", "independent", m, None) for m in (1, 2)}
    # cross grid: the peer on the M-curve at the suite's k (256) and the k-curve at M = 1, and on the trajectory
    expected |= {("traker-trak", "independent", 1, 128), ("traker-trak", "independent", 1, 256), ("traker-trak", "independent", 2, 256)}
    expected |= {("traker-trak", "trajectory", None, k) for k in (128, 256)}
    assert keys == expected
    by = {(r["method"], r["setting"], r["models"], r["k"]): r for r in rows}
    for row in rows:
        assert np.isfinite(row["lds"]) and row["lds_low"] <= row["lds"] <= row["lds_high"]
        assert row["total_s"] == pytest.approx(row["train_s"] + (row["featurize_s"] or 0) + row["score_s"])
    assert by["trak", "independent", 1, 256]["train_s"] == 0 < by["trak", "independent", 2, 256]["train_s"]
    assert by["trak", "trajectory", None, 256]["checkpoints"] == 2 and by["trak", "independent", 2, 256]["checkpoints"] == 2
    assert by["trak", "trajectory", None, 256]["train_s"] == 0
    # EK-FAC's 2-model ensemble costs both models' scoring
    assert by["if-ekfac", "independent", 2, None]["score_s"] > by["if-ekfac", "independent", 1, None]["score_s"]
    # the LDS ground truth is the bench's: its retrain cache is shared (one folder per recipe)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    md = (tmp_path / "curve" / "curve.md").read_text()
    assert "## tiny-mlp" in md and "| trak | M=2 |" in md and "k=128" in md
    assert (tmp_path / "curve" / "curve.html").stat().st_size > 100_000  # plotly embedded: opens offline
    if (tmp_path / "curve" / "curve.png").exists():
        assert (tmp_path / "curve" / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_cli_curve_option(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--suite", "quick", "--task", "digits-logreg", "--curve", "--curve-models", "1", "--curve-dims", "32",
            "--methods", "trak", "--out", str(out), "-q"]
    assert main(args) == 0
    rows = _rows(out / "curve" / "curve.csv")
    assert {(r["method"], r["setting"], r["k"]) for r in rows} == {("trak", "independent", "32"), ("trak", "trajectory", "32")}
    assert float(rows[0]["lds"]) > float(rows[0]["lds_random"]) + 0.2
    assert main(["bench", "--curve", "--curve-dims", "big", "--out", str(out), "-q"]) == 2
    assert "--curve-dims takes comma-separated integers" in capsys.readouterr().err


def test_curve_grid_checks_its_arguments():
    with pytest.raises(ConfigError, match="models"):
        CurveGrid(models=(0,))
    with pytest.raises(ConfigError, match="the curve runs"):
        CurveGrid(methods=("grad-dot",))
    with pytest.raises(ConfigError, match="peer_grid"):
        CurveGrid(peer_grid="some")
    assert dataclasses.replace(CurveGrid(), dims=(512, 256)).dims == (256, 512)
