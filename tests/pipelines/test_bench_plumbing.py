"""The bench's plumbing (issue 20): checks before any work, the task filter, the test split,
the peers' ridges in their own units, and a variant measured through public functions."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from attributor.cli import main
from attributor.errors import ConfigError
from attributor.evaluation.lds import lds
from attributor.pipelines.bench import (attribute, lds_ground_truth, load_variant, method_args, peer_damping, run_bench,
                                        select_tasks)
from attributor.pipelines.bench_tasks import BenchTask, Suite, prepare

IRIS = BenchTask("iris-logreg", "iris", "logreg", trainer="lbfgs", n_queries=10, dtype="float64")


def _suite(*tasks: BenchTask, **kwargs) -> Suite:
    return Suite(tasks=tasks, n_subsets=kwargs.pop("n_subsets", 6), proj_dim=kwargs.pop("proj_dim", 32), n_loo=2,
                 brittleness_queries=1, brittleness_ks=(5,), **kwargs)


def test_too_many_queries_fail_before_any_work(tmp_path):
    """iris has 38 test rows at test_fraction 0.25: 500 queries are refused with one clear
    error before anything is trained or written (it used to crash after every method ran)."""
    ok = BenchTask("ok", "iris", "logreg", trainer="lbfgs", n_queries=5)
    bad = BenchTask("too-many", "iris", "logreg", trainer="lbfgs", n_queries=500)
    with pytest.raises(ConfigError, match=r"n_queries=500 .* only 38 .*test_fraction=0.25"):
        run_bench(_suite(ok, bad), tmp_path / "out", methods=["random"], peers=False, progress=False)
    assert not (tmp_path / "out").exists()


def test_test_fraction_sets_the_test_split(tmp_path):
    half = prepare(BenchTask("iris-half", "iris", "logreg", trainer="lbfgs", n_queries=5, test_fraction=0.5), "clean", tmp_path)
    quarter = prepare(BenchTask("iris-quarter", "iris", "logreg", trainer="lbfgs", n_queries=5), "clean", tmp_path)
    assert (len(half.data.y_test), len(half.data.y_train)) == (75, 75)
    assert (len(quarter.data.y_test), len(quarter.data.y_train)) == (38, 112)


def test_task_filter(tmp_path, capsys):
    suite = select_tasks("full", ["cancer-logreg"])
    assert [t.name for t in suite.tasks] == ["cancer-logreg"] and suite.n_subsets == 50
    with pytest.raises(ConfigError, match="unknown bench tasks \\['nope'\\]"):
        select_tasks("quick", ["digits-mlp", "nope"])
    assert main(["bench", "--suite", "quick", "--task", "nope", "--out", str(tmp_path / "b"), "-q"]) == 2
    assert "unknown bench tasks ['nope']" in capsys.readouterr().err


def test_run_bench_runs_only_the_chosen_task(tmp_path):
    two = _suite(IRIS, BenchTask("other", "iris", "logreg", trainer="lbfgs", n_queries=5, seed=1))
    rows = run_bench(two, tmp_path, methods=["trak", "random"], peers=False, progress=False, tasks=["other"])
    assert {r["task"] for r in rows} == {"other"} and {r["method"] for r in rows} == {"trak", "random"}
    # every query's correlation is kept, so two methods can be compared paired by query
    with open(tmp_path / "lds_per_query.csv", newline="") as handle:
        per_query = list(csv.DictReader(handle))
    assert sorted((r["method"], int(r["query"])) for r in per_query) == sorted((m, q) for m in ("trak", "random") for q in range(5))
    trak = np.array([float(r["spearman"]) for r in per_query if r["method"] == "trak"])
    assert np.nanmean(trak) == pytest.approx(next(r["lds"] for r in rows if r["method"] == "trak"), abs=1e-4)


def test_a_task_can_skip_a_method_with_its_reason_in_the_notes(tmp_path):
    """The row stays (without numbers) and the reason is in the notes; the prepared data
    does not depend on the skip list, so adding one reuses the task's folder."""
    task = BenchTask("iris-skip", "iris", "logreg", trainer="lbfgs", n_queries=5,
                     skip_methods=(("trak", "too slow on this task, say"),))
    rows = run_bench(_suite(task), tmp_path, methods=["trak", "random"], peers=False, progress=False)
    by_method = {r["method"]: r for r in rows}
    assert by_method["trak"].get("lds") is None and by_method["random"].get("lds") is not None
    assert "iris-skip / trak: not run on this task: too slow on this task, say" in (tmp_path / "results.md").read_text()
    marker = tmp_path / "tasks" / "iris-skip" / "clean" / "checkpoints" / "recipe.json"
    before = marker.read_text()
    prepare(BenchTask("iris-skip", "iris", "logreg", trainer="lbfgs", n_queries=5), "clean", tmp_path / "tasks")
    assert marker.read_text() == before


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    suite = _suite(IRIS)
    return out, suite, load_variant(IRIS, "clean", out, suite), load_variant(IRIS, "noisy", out, suite)


def test_peer_ridges_in_each_peers_units(iris):
    """traker's features are sqrt(k/p) times ours, dattri's 1/sqrt(p) times ours (its projector
    divides by sqrt(k) and its TRAK by sqrt(p)): the same relative ridge d is d * trace / p and
    d * trace / (p k); dattri's IF damps the mean-loss Hessian, so on a convex task it gets l2 / n."""
    out, suite, clean, _ = iris
    store = clean.store
    p, k, n = int(store.settings["n_params"]), store.dim, store.split_size("train")
    trace = float((store.features("train", 0).astype(np.float64) ** 2).sum())
    d = 0.37
    assert peer_damping("traker-trak", IRIS, clean, d) == pytest.approx(d * trace / p, rel=1e-9)
    assert peer_damping("dattri-trak", IRIS, clean, d) == pytest.approx(d * trace / (p * k), rel=1e-9)
    assert peer_damping("dattri-if", IRIS, clean) == pytest.approx(IRIS.l2 / n, rel=1e-12)
    assert peer_damping("dattri-tracin", IRIS, clean) == 0.0
    # without an explicit d, TRAK peers get the relative damping our TRAK runs with on this task
    ours = method_args("trak", IRIS, clean).get("damping", 1e-2)
    ours = float(ours) if ours != "auto" else None
    if ours is not None:
        assert peer_damping("dattri-trak", IRIS, clean) == pytest.approx(ours * trace / (p * k), rel=1e-9)


def test_a_variant_measured_through_public_functions(iris):
    """LDS on the noisy-label model: its own retrains, with public functions only."""
    out, suite, clean, noisy = iris
    masks, actual = lds_ground_truth(IRIS, noisy, suite, out)
    clean_masks, clean_actual = lds_ground_truth(IRIS, clean, suite, out)
    assert masks.shape == (suite.n_subsets, len(noisy.prepared.data.y_train)) and actual.shape == (suite.n_subsets, IRIS.n_queries)
    np.testing.assert_array_equal(masks, clean_masks)
    assert not np.allclose(actual, clean_actual)  # retrained on the flipped labels
    result = attribute("if-explicit", IRIS, noisy, suite, out)
    assert result.scores.shape == (IRIS.n_queries, len(noisy.prepared.data.y_train))
    assert lds(result.scores, masks, actual)["lds"] > 0.3
    self_influence = attribute("trak", IRIS, noisy, suite, out, scores=False).self_influence
    assert self_influence.shape == (len(noisy.prepared.data.y_train),) and (self_influence >= 0).all()
