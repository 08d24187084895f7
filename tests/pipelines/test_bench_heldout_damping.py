"""Ridges chosen on held-out training rows (issue 20, item 2): the validation task reads
nothing of the test split, the choice is the held-out curve's best, and the bench runs
every method (and the matching peers) at the chosen ridge."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from attributor.cli import main
from attributor.data import load_dataset
from attributor.errors import ConfigError
from attributor.evaluation.lds import lds
from attributor.pipelines.bench import (attribute, lds_ground_truth, load_variant, peer_damping, run_bench,
                                        select_damping_heldout, validation_task)
from attributor.pipelines.bench_tasks import BenchTask, Suite, hold_out, load_task_data, prepare

WINE = BenchTask("wine-logreg", "wine", "logreg", trainer="lbfgs", n_queries=10, dtype="float64")


def _suite(*tasks: BenchTask) -> Suite:
    return Suite(tasks=tasks, n_subsets=6, proj_dim=32, n_loo=2, brittleness_queries=0, brittleness_ks=(5,))


def test_hold_out_moves_training_rows_into_the_test_split():
    data = load_dataset("wine", seed=0)
    held = hold_out(data, 13, seed=3)
    assert len(held.y_train) == len(data.y_train) - 13 and len(held.y_test) == 13
    rows = {tuple(x) for x in data.X_train}
    assert all(tuple(x) in rows for x in held.X_test)  # every query is a former training row ...
    assert not {tuple(x) for x in held.X_test} & {tuple(x) for x in held.X_train}  # ... no longer trained on
    assert not {tuple(x) for x in held.X_test} & {tuple(x) for x in data.X_test}  # and the test split is not read
    again = hold_out(data, 13, seed=3)
    np.testing.assert_array_equal(held.X_test, again.X_test)
    assert not np.array_equal(held.X_test, hold_out(data, 13, seed=4).X_test)
    for bad in (0, len(data.y_train)):
        with pytest.raises(ConfigError, match="cannot hold out"):
            hold_out(data, bad)


def test_validation_task_is_cut_from_the_training_set(tmp_path):
    task = validation_task(WINE)
    n_train = len(load_task_data(WINE).y_train)
    assert task.name == "wine-logreg-heldout" and task.holdout == task.n_queries == max(10, round(0.1 * n_train))
    prepared = prepare(task, "clean", tmp_path)
    assert len(prepared.data.y_train) == n_train - task.n_queries
    # a task without a holdout keeps its folder's model: the setting is only recorded when used
    marker = prepare(WINE, "clean", tmp_path).folder / "checkpoints" / "recipe.json"
    assert '"holdout"' not in marker.read_text()


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    out = tmp_path_factory.mktemp("heldout")
    suite = _suite(WINE)
    choice = select_damping_heldout(["trak", "if-explicit"], WINE, suite, out, retrains=6, grid=(0.01, 1.0, 100.0))
    return out, suite, choice


def test_the_selected_ridge_is_the_held_out_curves_best(selected):
    """The curve is recomputed by hand on the validation task: the LDS of the held-out rows
    against its own retrains at each damping; the choice is its argmax."""
    out, suite, choice = selected
    task = validation_task(WINE)
    variant = load_variant(task, "clean", out, Suite(tasks=(task,), n_subsets=6, proj_dim=32))
    masks, actual = lds_ground_truth(task, variant, Suite(tasks=(task,), n_subsets=6, proj_dim=32), out)
    assert masks.shape == (6, len(variant.prepared.data.y_train))
    for name in ("trak", "if-explicit"):
        selection = choice[name]
        assert selection.grid == (0.01, 1.0, 100.0) and selection.n_retrains == 6 and selection.n_queries == task.n_queries
        by_hand = [lds(attribute(name, task, variant, suite, out, damping=d).scores, masks, actual, seed=WINE.seed)["lds"]
                   for d in selection.grid]
        np.testing.assert_allclose(selection.lds, by_hand, atol=1e-12)
        assert selection.damping == selection.grid[int(np.argmax(by_hand))]
    # the ridge matters on this task: the curve is not flat
    assert np.ptp(choice["if-explicit"].lds) > 0.05


def test_a_ridge_passed_to_attribute_reaches_ours_and_the_peers_units(selected):
    out, suite, _ = selected
    clean = load_variant(WINE, "clean", out, suite)
    store = clean.store
    p, k = int(store.settings["n_params"]), store.dim
    trace = float((store.features("train", 0).astype(np.float64) ** 2).sum())
    # on a convex task dattri's IF keeps l2 / n unless a ridge is given: then it gets ours, converted
    n = store.split_size("train")
    assert peer_damping("dattri-if", WINE, clean) == pytest.approx(WINE.l2 / n)
    assert peer_damping("dattri-if", WINE, clean, 3.0) != pytest.approx(WINE.l2 / n)
    assert peer_damping("dattri-trak", WINE, clean, 3.0) == pytest.approx(3.0 * trace / (p * k), rel=1e-9)
    low = attribute("trak", WINE, clean, suite, out, damping=1e-3).scores
    high = attribute("trak", WINE, clean, suite, out, damping=1e3).scores
    assert low.shape == high.shape and not np.allclose(low / np.abs(low).max(), high / np.abs(high).max())


def test_run_bench_heldout_writes_the_curve_and_runs_at_the_choice(tmp_path):
    rows = run_bench(_suite(WINE), tmp_path, methods=["trak", "grad-dot"], peers=False, progress=False,
                     damping="heldout", heldout_retrains=4)
    assert {r["method"] for r in rows} == {"trak", "grad-dot"}
    with open(tmp_path / "damping.csv", newline="") as handle:
        curve = list(csv.DictReader(handle))
    assert {r["method"] for r in curve} == {"trak"} and len(curve) == 9  # grad-dot has no ridge
    chosen = [r for r in curve if r["selected"] == "True"]
    assert len(chosen) == 1 and float(chosen[0]["lds_heldout"]) == max(float(r["lds_heldout"]) for r in curve)
    notes = (tmp_path / "results.md").read_text()
    selected = float(re.search(r"wine-logreg / trak: damping_selected ([0-9.e+-]+)", notes).group(1))
    used = float(re.search(r"wine-logreg / trak: damping_used ([0-9.e+-]+)", notes).group(1))
    assert selected == pytest.approx(float(chosen[0]["damping"]), rel=1e-3) and used == pytest.approx(selected, rel=1e-5)


def test_if_cg_and_the_peers_take_the_matching_selection(tmp_path):
    """if-cg solves if-explicit's system, so it runs at if-explicit's choice without a sweep of its own."""
    run_bench(_suite(WINE), tmp_path, methods=["if-explicit", "if-cg"], peers=False, progress=False,
              damping="heldout", heldout_retrains=3)
    with open(tmp_path / "damping.csv", newline="") as handle:
        curve = list(csv.DictReader(handle))
    assert {r["method"] for r in curve} == {"if-explicit"}
    chosen = next(float(r["damping"]) for r in curve if r["selected"] == "True")
    notes = (tmp_path / "results.md").read_text()
    taken = float(re.search(r"wine-logreg / if-cg: runs at if-explicit's held-out ridge, relative damping ([0-9.e+-]+)", notes).group(1))
    assert taken == pytest.approx(chosen, rel=1e-3)


def test_unknown_damping_mode_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="bench damping"):
        run_bench(_suite(WINE), tmp_path / "x", methods=["trak"], peers=False, progress=False, damping="gcv")
    assert not (tmp_path / "x").exists()
    assert main(["bench", "--suite", "quick", "--damping", "nope", "--out", str(tmp_path / "b"), "-q"]) == 2
    assert "nope" in capsys.readouterr().err
