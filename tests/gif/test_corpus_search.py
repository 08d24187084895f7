"""A user's texts fingerprinted into a corpus folder, and text queries over it (API and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attributor.cli import main
from attributor.data.synthetic import fact_paraphrases
from attributor.errors import DataError, StoreCorruptedError, StoreMismatchError
from attributor.gif import Corpus, GifFingerprinter, Searcher, fingerprint_corpus, load_fingerprinter


@pytest.fixture(scope="module")
def facts():
    statements, queries = fact_paraphrases(6, attributes=2, paraphrases=3, seed=3)
    return statements, queries


@pytest.fixture(scope="module")
def corpus(facts, tmp_path_factory):
    statements, _ = facts
    out = tmp_path_factory.mktemp("corpus") / "facts"
    return fingerprint_corpus([s["text"] for s in statements], out, "gif", ids=[f"s{i}" for i in range(len(statements))],
                              meta=[{"person": s["entity"]} for s in statements], index="flat", beta=0.3)


def run(capsys, *args):
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_query_finds_the_statements_of_its_fact(corpus, facts):
    statements, queries = facts
    searcher = Searcher.open(corpus.path)
    items = [{"prompt": q["prompt"], "text": q["text"]} for q in queries]
    hits = searcher.query(items, k=3)
    # the gold statements of each fact are in the corpus: most queries get one of them first
    first_is_gold = [h.rows[0]["row"] in q["gold"] for h, q in zip(hits, queries)]
    assert np.mean(first_is_gold) >= 0.8
    row = hits[0].rows[0]
    assert row["id"] == f"s{row['row']}" and row["text"] == statements[row["row"]]["text"]
    assert row["meta"] == {"person": statements[row["row"]]["entity"]}
    assert set(hits[0].latency_ms) == {"embed", "gradient", "search", "refine", "total"}


def test_index_folder_and_corpus_folder_answer_alike(corpus):
    by_corpus = Searcher.open(corpus.path).query(["Which animal is kept at home?"], k=5)[0]
    by_index = Searcher.open(corpus.path / "index").query(["Which animal is kept at home?"], k=5)[0]
    assert [r["row"] for r in by_corpus.rows] == [r["row"] for r in by_index.rows]


def test_saved_fingerprinter_reproduces_its_rows(corpus, facts, tmp_path):
    statements, _ = facts
    texts = [s["text"] for s in statements]
    loaded = load_fingerprinter(corpus.path / "fingerprinter")
    assert isinstance(loaded, GifFingerprinter) and loaded.beta == 0.3
    from attributor.features.store import FeatureStore

    stored = FeatureStore.open(corpus.store_path).features("train", 0)
    np.testing.assert_allclose(loaded.transform(texts, loaded.labels_), stored, atol=1e-6)
    state = corpus.path / "fingerprinter" / "state.safetensors"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "fingerprinter.json").write_text((corpus.path / "fingerprinter" / "fingerprinter.json").read_text())
    (tmp_path / "broken" / "state.safetensors").write_bytes(state.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read"):
        load_fingerprinter(tmp_path / "broken")


def test_rerun_resumes_and_other_items_are_refused(corpus, facts):
    statements, _ = facts
    texts = [s["text"] for s in statements]
    state = corpus.path / "fingerprinter" / "state.safetensors"
    before = state.stat().st_mtime_ns
    again = fingerprint_corpus(texts, corpus.path, "gif", ids=[f"s{i}" for i in range(len(texts))],
                               meta=[{"person": s["entity"]} for s in statements], index="flat", beta=0.3)
    assert state.stat().st_mtime_ns == before and again.n == len(texts)  # reused, not refitted
    with pytest.raises(StoreMismatchError, match="other items or settings"):
        fingerprint_corpus(texts[:-1], corpus.path, "gif", beta=0.3)
    with pytest.raises(DataError, match="used by more than one row"):
        fingerprint_corpus(texts[:2], corpus.path.parent / "dup", ids=["a", "a"])


def test_rows_by_position_and_id(corpus):
    assert corpus.row(3)["id"] == "s3" and corpus.position("s3") == 3
    with pytest.raises(DataError, match="no training example with id"):
        corpus.position("nope")
    with pytest.raises(DataError, match="row must be in"):
        corpus.row(corpus.n)


def test_damaged_items_file_is_refused(corpus, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(corpus.path, copy)
    (copy / "items.jsonl").write_bytes(b"x" * 50)
    with pytest.raises(StoreCorruptedError):
        Corpus.open(copy).row(1)


def test_cli_fingerprint_then_query(facts, tmp_path, capsys):
    statements, queries = facts
    data = tmp_path / "facts.jsonl"
    data.write_text("".join(json.dumps({"uid": f"u{i}", "body": s["text"], "person": s["entity"]}) + "\n"
                            for i, s in enumerate(statements)))
    code, out, err = run(capsys, "gif", "fingerprint", "--data", data, "--text", "body", "--id", "uid", "--meta", "person",
                         "--fingerprinter", "embedding", "--index", "hnsw", "--out", tmp_path / "c", "--quiet")
    assert code == 0, err
    assert "hnsw index" in out and "attributor index query" in out
    q = queries[0]
    gold = {f"u{i}" for i in q["gold"]}
    code, out, err = run(capsys, "index", "query", "--index", tmp_path / "c", "--text", q["prompt"] + q["text"],
                         "--top", 3, "--json")
    assert code == 0, err
    answer = json.loads(out.splitlines()[0])
    assert answer["rows"][0]["id"] in gold and answer["rows"][0]["meta"]["person"] == statements[q["gold"][0]]["entity"]
    (tmp_path / "q.jsonl").write_text(json.dumps({"prompt": q["prompt"], "text": q["text"]}) + "\n" + json.dumps("free text") + "\n")
    code, out, err = run(capsys, "index", "query", "--index", tmp_path / "c" / "index", "--queries", tmp_path / "q.jsonl",
                         "--top", 2, "--csv", tmp_path / "top.csv", "--search", "ef_search=32")
    assert code == 0, err
    assert out.startswith("query 0: ") and "ms:" in out and (tmp_path / "top.csv").read_text().count("\n") == 5


@pytest.mark.parametrize("extra, message", [
    ([], "give the queries one way"),
    (["--text", "a", "--vectors", "x.npy"], "give the queries one way"),
    (["--queries", "missing.jsonl"], "no such file"),
])
def test_cli_query_refusals(corpus, extra, message, capsys):
    code, _, err = run(capsys, "index", "query", "--index", corpus.path, *extra)
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_text_query_on_a_gradient_index_is_refused(tmp_path, capsys):
    from attributor.features.store import FeatureStore
    from attributor.index import build_index

    store = FeatureStore.create(tmp_path / "store", {"kind": "features", "checkpoints": ["c"], "dtype": "float32",
                                                     "chunk_size": 8, "dim": 4})
    store.add_split("train", 8)
    with store.writing():
        store.write_chunk("train", 0, 0, np.eye(8, 4, dtype=np.float32), np.ones(8, np.float32))
    build_index(store, tmp_path / "idx", kind="flat", progress=False)
    code, _, err = run(capsys, "index", "query", "--index", tmp_path / "idx", "--text", "hello")
    assert code == 2 and "not a fingerprinted corpus" in err
    np.save(tmp_path / "q.npy", np.eye(4, dtype=np.float32)[:2])
    code, out, _ = run(capsys, "index", "query", "--index", tmp_path / "idx", "--vectors", tmp_path / "q.npy", "--top", 1)
    assert code == 0 and out.startswith("query 0: 0:")


def test_cli_fingerprint_refusals(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nhello world,1\n,0\n")
    code, _, err = run(capsys, "gif", "fingerprint", "--data", data, "--out", tmp_path / "c")
    assert code == 2 and "empty in 1 rows" in err
    code, _, err = run(capsys, "gif", "fingerprint", "--data", data, "--text", "txt", "--out", tmp_path / "c")
    assert code == 2 and "column 'txt'" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("extra, message", [
    (["--param", "dim=-3"], "dim must be a positive integer"),
    (["--param", "beta=-1"], "beta must be a finite number"),
    (["--index", "annoy"], "unknown index kind 'annoy'"),
])
def test_cli_bad_fingerprint_settings_write_nothing(tmp_path, capsys, extra, message):
    data = tmp_path / "d.csv"
    data.write_text("text\nhello world\nanother line\n")
    code, _, err = run(capsys, "gif", "fingerprint", "--data", data, "--out", tmp_path / "c", "-q", *extra)
    assert code == 2 and message in err
    assert not (tmp_path / "c").exists()
