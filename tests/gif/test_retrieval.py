"""Fingerprint stores (resume), embedding retrieval of a planted source, refinement within candidates."""

import numpy as np
import pytest
import torch

from attributor.data.synthetic import fact_paraphrases
from attributor.errors import StoreMismatchError
from attributor.features.store import FeatureStore
from attributor.gif import EmbeddingFingerprinter, GifRetriever, TrakRefiner, write_fingerprints
from attributor.gif.store import ExactIndex
from attributor.methods.trak import TRAK

PLANTED = "The lighthouse keeper Quentavius polished the brass lamp at midnight."


@pytest.fixture(scope="module")
def docs():
    statements, _ = fact_paraphrases(4, attributes=2, paraphrases=3, seed=1)
    texts = [s["text"] for s in statements]
    return texts[:10] + [PLANTED] + texts[10:]


@pytest.fixture(scope="module")
def embedder(docs):
    return EmbeddingFingerprinter().fit(docs)


class _Dies(EmbeddingFingerprinter):
    """Fails on its third chunk, as a killed run would."""

    calls = 0

    def _transform(self, items, timing, labels=None):
        type(self).calls += 1
        if type(self).calls == 3:
            raise RuntimeError("killed")
        return super()._transform(items, timing, labels)


def test_store_resumes_to_the_uninterrupted_rows(tmp_path, docs, embedder):
    full = write_fingerprints(embedder, docs, tmp_path / "full", chunk_size=4)
    dying = _Dies().fit(docs)
    with pytest.raises(RuntimeError):
        write_fingerprints(dying, docs, tmp_path / "resumed", chunk_size=4)
    partial = FeatureStore.open(tmp_path / "resumed")
    assert partial.done_mask("train", 0).sum() == 8 and not partial.is_complete("train")
    resumed = write_fingerprints(embedder, docs, tmp_path / "resumed", chunk_size=4)
    np.testing.assert_array_equal(resumed.features("train", 0), full.features("train", 0))
    assert resumed.settings["fingerprinter"]["kind"] == "embedding"
    resumed.verify()
    with pytest.raises(StoreMismatchError):
        write_fingerprints(embedder, docs, tmp_path / "resumed", chunk_size=8)


def test_planted_source_is_retrieved_first(tmp_path, docs, embedder):
    store = write_fingerprints(embedder, docs, tmp_path / "store")
    hits = GifRetriever(embedder, store).fit().query(["Who polished the brass lamp at midnight? Quentavius"], k=3)
    assert hits[0].ids[0] == docs.index(PLANTED)
    assert set(hits[0].latency_ms) == {"embed", "gradient", "search", "refine", "total"}
    assert hits[0].latency_ms["embed"] > 0 and np.all(np.diff(hits[0].scores) <= 0)


class _ById:
    """A refiner that prefers the largest row id."""

    def refine(self, items, candidates, timing):
        timing["refine"] += 1.0
        return candidates.astype(float)


def test_refinement_reranks_only_within_candidates(tmp_path, docs, embedder):
    store = write_fingerprints(embedder, docs, tmp_path / "store")
    query = ["Where was someone born?"]
    plain = GifRetriever(embedder, store).fit().query(query, k=len(docs))[0]
    refined = GifRetriever(embedder, store, refiner=_ById(), candidates=5).fit().query(query, k=3)[0]
    top5 = plain.ids[:5]
    np.testing.assert_array_equal(refined.ids, np.sort(top5)[::-1][:3])
    np.testing.assert_allclose(refined.ann_scores, plain.scores[[list(plain.ids).index(i) for i in refined.ids]], rtol=1e-6)


def test_trak_refiner_equals_exhaustive_trak_columns(tmp_path):
    rng = np.random.default_rng(0)
    store = FeatureStore.create(tmp_path / "g", {"checkpoints": ["x"], "dtype": "float64", "chunk_size": 8, "dim": 4})
    store.add_split("train", 20)
    store.add_split("queries", 3)
    with store.writing():
        for split, n in (("train", 20), ("queries", 3)):
            for index, start, stop in store.chunk_bounds(split):
                store.write_chunk(split, 0, index, rng.normal(size=(stop - start, 4)), rng.uniform(0.5, 1, stop - start))
    trak = TRAK(damping=0.1).fit(store)
    exhaustive = trak.score("queries", dense=True).values
    candidates = np.array([[3, 0, 19], [5, 6, 7], [1, 2, 3]])
    refined = TrakRefiner(trak).fit().score_features(store.features("queries", 0), candidates)
    np.testing.assert_allclose(refined, np.take_along_axis(exhaustive, candidates, 1), rtol=1e-9)


def test_exact_index_orders_by_score():
    rows = np.eye(4, dtype=np.float32)
    scores, ids = ExactIndex(rows).search(np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32), 3)
    assert ids.tolist() == [[1, 2, 0]] and np.all(np.diff(scores) <= 0)


def test_flat_ann_index_agrees_with_exact_search(tmp_path, docs, embedder):
    pytest.importorskip("faiss")
    pytest.importorskip("attributor.index")
    store = write_fingerprints(embedder, docs, tmp_path / "store")
    queries = ["Who polished the brass lamp at midnight? Quentavius", "Where was someone born?"]
    exact = GifRetriever(embedder, store).fit().query(queries, k=5)
    flat = GifRetriever(embedder, store, index_kind="flat").fit().query(queries, k=5)
    for a, b in zip(exact, flat):
        assert a.ids[0] == b.ids[0]
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-5)


def test_trace_ranker_fine_tunes_the_top_layer_only(docs):
    from attributor.gif.trace import TraceRanker

    texts = docs[8:14]  # the planted text among five others
    ranker = TraceRanker(epochs=1, trainable_layers=1, sources_per_batch=3).fit(texts, [0, 0, 1, 1, 2, 2])
    trainable = [name for name, p in ranker.encoder_.named_parameters() if p.requires_grad]
    assert trainable and all(".layer.5." in name for name in trainable)
    ids = ranker.rank([PLANTED], 3)
    assert ids.shape == (1, 3) and texts[ids[0, 0]] == PLANTED


def test_mix_blends_standardised_scores_and_zero_keeps_the_index_order(tmp_path, docs, embedder):
    store = write_fingerprints(embedder, docs, tmp_path / "store")
    query = ["Where was someone born?"]
    plain = GifRetriever(embedder, store).fit().query(query, k=5)[0]
    kept = GifRetriever(embedder, store, refiner=_ById(), candidates=5, mix=0.0).fit().query(query, k=5)[0]
    np.testing.assert_array_equal(kept.ids, plain.ids)
    half = GifRetriever(embedder, store, refiner=_ById(), candidates=5, mix=0.5).fit().query(query, k=5)[0]
    ann, ids = plain.scores.astype(float), plain.ids.astype(float)
    expected = 0.5 * (ann - ann.mean()) / ann.std() + 0.5 * (ids - ids.mean()) / ids.std()
    np.testing.assert_allclose(np.sort(half.scores)[::-1], np.sort(expected)[::-1], rtol=1e-5)
    assert set(half.ids) == set(plain.ids)


@pytest.mark.parametrize("name", ["datainf", "if-explicit"])
def test_influence_refiner_equals_exhaustive_influence_columns(tmp_path, name):
    """Refining candidates by an influence method gives exactly its exhaustive scores at those rows (float64)."""
    from zoo import classification_data, dataset, mlp, train_and_save

    from attributor.gif.retriever import InfluenceRefiner
    from attributor.methods import get_method
    from attributor.methods.base import TrainingContext
    from attributor.tasks import get_task

    x, y = classification_data(30)
    xq, yq = classification_data(4, seed=1)
    model = mlp()
    checkpoints = train_and_save(model, x, y, tmp_path, n_checkpoints=1)
    context = TrainingContext(model=model, task=get_task("classification"),
                              datasets={"train": dataset(x, y), "queries": dataset(xq, yq)}, checkpoints=checkpoints)
    method = get_method(name).fit(split="train", context=context)
    exhaustive = method.score("queries", dense=True).values
    candidates = np.array([[3, 0, 29], [5, 6, 7], [1, 2, 3], [9, 9, 8]])
    refiner = InfluenceRefiner(method, lambda items: (xq[items], yq[items])).fit()
    refined = refiner.score_items([0, 1, 2, 3], candidates)
    np.testing.assert_allclose(refined, np.take_along_axis(exhaustive, candidates, 1), rtol=1e-9, atol=1e-12)
    refiner.cached_ = None  # the same scores from gradients of the candidate rows only
    np.testing.assert_allclose(refiner.score_items([0, 1, 2, 3], candidates), refined, rtol=1e-9, atol=1e-12)
    with pytest.raises(Exception, match="influence-function method"):
        InfluenceRefiner(TRAK(), lambda items: None).fit()
