"""The query service over HTTP on a real server: every endpoint, the key scopes, bad requests and limits."""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import httpx
import numpy as np
import pytest

from attributor.cli import main
from attributor.errors import ConfigError


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response) -> str:
    """The one-line error of a JSON error answer (and never a traceback)."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


# -- queries -------------------------------------------------------------------------------
def test_text_query_ranks_the_statement_first_with_its_latency(server, keys, facts):
    statement = facts[4]
    response = httpx.post(f"{server.url}/v1/query", json={"text": statement["text"], "top_k": 5},
                          headers=bearer(keys["read"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["top_k"] == 5 and body["generation"] >= 1 and body["server_ms"] > 0
    (result,) = body["results"]
    hits = result["hits"]
    assert result["query"] == statement["text"] and len(hits) == 5
    assert hits[0]["id"] == "s4" and hits[0]["row"] == 4 and hits[0]["text"] == statement["text"]
    assert hits[0]["meta"] == {"person": statement["entity"]} and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
    assert set(result["latency_ms"]) == {"embed", "gradient", "search", "refine", "total"}
    assert result["latency_ms"]["embed"] > 0


def test_question_finds_a_statement_about_its_person(server, keys, facts):
    person = facts[0]["entity"]
    response = httpx.post(f"{server.url}/v1/query", headers={"X-API-Key": keys["read"]},
                          json={"texts": [f"What is the job of {person}?",
                                          {"prompt": f"What does {person} do for a living?", "text": " work"}],
                                "top_k": 3, "refine": "none"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2 and results[1]["query"]["prompt"].startswith("What does")
    assert all(r["hits"][0]["meta"]["person"] == person for r in results)


def test_vector_queries_find_their_own_rows(server, keys, corpus_dir):
    from attributor.features.store import FeatureStore

    rows = np.asarray(FeatureStore.open(corpus_dir / "store").features("train", 0))
    one = httpx.post(f"{server.url}/v1/query", json={"vector": rows[7].tolist(), "top_k": 2}, headers=bearer(keys["read"]))
    assert one.status_code == 200, one.text
    assert one.json()["results"][0]["hits"][0]["id"] == "s7" and one.json()["results"][0]["query"] is None
    batch = httpx.post(f"{server.url}/v1/query", json={"vectors": rows[[3, 9, 11]].tolist(), "top_k": 1},
                       headers=bearer(keys["read"]))
    assert [r["hits"][0]["id"] for r in batch.json()["results"]] == ["s3", "s9", "s11"]


def test_top_k_above_the_corpus_size_returns_every_row(open_server, facts):
    response = httpx.post(f"{open_server.url}/v1/query", json={"text": "weaver", "top_k": 50})
    assert response.status_code == 200 and len(response.json()["results"][0]["hits"]) == len(facts) < 50


# -- the other endpoints ---------------------------------------------------------------------
def test_example_by_id_and_unknown_id(server, keys, facts):
    found = httpx.get(f"{server.url}/v1/examples/s5", headers=bearer(keys["read"]))
    assert found.status_code == 200
    assert found.json() == {"row": 5, "id": "s5", "text": facts[5]["text"], "meta": {"person": facts[5]["entity"]}}
    missing = httpx.get(f"{server.url}/v1/examples/nope", headers=bearer(keys["read"]))
    assert missing.status_code == 404 and "nope" in error_of(missing)


def test_index_describes_what_is_served(server, keys, corpus_dir, facts):
    info = httpx.get(f"{server.url}/v1/index", headers=bearer(keys["read"])).json()
    assert info["rows"] == len(facts) and info["dim"] == 384 and info["path"] == str(corpus_dir.resolve())
    assert info["index"]["kind"] == "flat" and info["index"]["n"] == len(facts) and "build_seconds" in info["index"]
    assert info["corpus"]["fingerprinter"]["kind"] == "embedding" and info["refine"] == ["none"]
    assert info["limits"]["max_top_k"] == 20 and info["auth"] == "keys"


def test_health_and_readiness_need_no_key(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["status"] == "ready" and ready["rows"] == 36 and ready["generation"] >= 1


def test_metrics_count_requests_errors_and_stages(server, keys):
    httpx.post(f"{server.url}/v1/query", json={"text": "tanner", "top_k": 2}, headers=bearer(keys["read"]))
    httpx.post(f"{server.url}/v1/query", json={"text": "tanner", "top_k": 500}, headers=bearer(keys["read"]))
    response = httpx.get(f"{server.url}/metrics", headers=bearer(keys["read"]))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# TYPE attributor_requests_total counter" in text
    assert _sample(text, 'attributor_requests_total{method="POST",route="/v1/query",status="200"}') >= 1
    assert _sample(text, 'attributor_request_errors_total{route="/v1/query",status="422"}') >= 1
    assert _sample(text, 'attributor_request_duration_seconds_count{route="/v1/query"}') >= 2
    assert _sample(text, 'attributor_query_stage_seconds_bucket{stage="embed",le="+Inf"}') >= 1
    assert _sample(text, "attributor_index_rows") == 36 and _sample(text, "attributor_queries_total") >= 1
    for line in text.splitlines():  # every sample line: name{labels} value
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2 and float(line.rsplit(" ", 1)[1]) >= 0, line


def _sample(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.rsplit(" ", 1)[0] == name]
    assert len(values) == 1, (name, values)
    return values[0]


def test_openapi_documents_the_routes_and_both_key_headers(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/query", "/v1/examples/{item_id}", "/v1/index", "/v1/admin/reload", "/healthz", "/readyz",
            "/metrics"} <= set(schema["paths"])
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    assert "QueryRequest" in schema["components"]["schemas"]


# -- keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [("POST", "/v1/query"), ("GET", "/v1/examples/s1"), ("GET", "/v1/index"),
                                         ("GET", "/metrics"), ("POST", "/v1/admin/reload")])
def test_every_protected_route_answers_401_without_a_valid_key(server, method, path):
    body = {"text": "x"} if path == "/v1/query" else None
    for headers in ({}, bearer("atr_00000000_" + "x" * 43), {"X-API-Key": "not-a-key"}, {"Authorization": "Basic abc"}):
        response = httpx.request(method, f"{server.url}{path}", json=body, headers=headers)
        assert response.status_code == 401, (path, headers, response.text)
        assert "API key" in error_of(response) and response.headers["www-authenticate"] == "Bearer"


def test_read_key_cannot_reload_admin_key_can(server, keys):
    refused = httpx.post(f"{server.url}/v1/admin/reload", headers=bearer(keys["read"]))
    assert refused.status_code == 403 and "scope 'admin'" in error_of(refused)
    before = httpx.get(f"{server.url}/readyz").json()["generation"]
    done = httpx.post(f"{server.url}/v1/admin/reload", headers=bearer(keys["admin"]))
    assert done.status_code == 200, done.text
    assert done.json()["generation"] == before + 1 and done.json()["rows"] == 36
    assert httpx.post(f"{server.url}/v1/query", json={"text": "tanner"}, headers=bearer(keys["admin"])).status_code == 200


def test_keys_added_and_revoked_on_the_cli_take_effect_at_once(server, keys, capsys):
    assert main(["serve", "keys", "add", "temp", "--scope", "read", "--keys", str(keys["file"])]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("atr_") and token not in keys["file"].read_text()  # only its salted hash is stored
    assert stat.S_IMODE(os.stat(keys["file"]).st_mode) == 0o600
    assert httpx.get(f"{server.url}/v1/index", headers=bearer(token)).status_code == 200
    assert main(["serve", "keys", "list", "--keys", str(keys["file"])]) == 0
    listing = capsys.readouterr().out
    assert "temp" in listing and "reader" in listing and "operator" in listing and "atr_" not in listing
    assert main(["serve", "keys", "revoke", "temp", "--keys", str(keys["file"])]) == 0
    capsys.readouterr()
    revoked = httpx.get(f"{server.url}/v1/index", headers=bearer(token))
    assert revoked.status_code == 401 and "revoked" in error_of(revoked)
    assert main(["serve", "keys", "revoke", "temp", "--keys", str(keys["file"])]) == 2
    assert "no key named 'temp'" in capsys.readouterr().err
    assert main(["serve", "keys", "add", "x", "--scope", "root", "--keys", str(keys["file"])]) == 2
    assert "scope must be one of read, admin" in capsys.readouterr().err


def test_default_keys_file_is_beside_the_index_unless_the_environment_says(monkeypatch, tmp_path):
    from attributor.service import default_keys_path
    from attributor.service.keys import KEYS_ENV

    monkeypatch.delenv(KEYS_ENV, raising=False)
    assert default_keys_path(tmp_path / "corpus") == tmp_path / "corpus.keys.json"
    monkeypatch.setenv(KEYS_ENV, str(tmp_path / "elsewhere.json"))
    assert default_keys_path(tmp_path / "corpus") == tmp_path / "elsewhere.json"


def test_keys_file_readable_by_others_is_refused(corpus_dir, tmp_path):
    from attributor.service import KeyStore, create_app

    store = KeyStore(tmp_path / "keys.json")
    store.add("a", "read")
    os.chmod(store.path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        create_app(corpus_dir, store.path)


# -- bad requests and limits ----------------------------------------------------------------
BAD = [
    (b"{bad json", 400, "not valid JSON"),
    (b"[1, 2]", 422, "must be a JSON object"),
    (b"", 422, "needs a JSON body"),
    ({}, 422, "one way"),
    ({"text": "a", "vector": [1.0]}, 422, "one way"),
    ({"text": "a", "top_k": 0}, 422, "top_k"),
    ({"text": "a", "top_k": True}, 422, "top_k"),
    ({"text": "a", "top_k": "5"}, 422, "top_k"),
    ({"text": "a", "top_k": 21}, 422, "max_top_k 20"),
    ({"text": "a", "colour": "red"}, 422, "colour: unknown field"),
    ({"text": 7}, 422, "text"),
    ({"text": "   "}, 422, "empty"),
    ({"text": "a" * 2001}, 422, "max_text_chars"),
    ({"texts": []}, 422, "empty"),
    ({"texts": ["a"] * 9}, 422, "max_batch 8"),
    ({"text": "a", "refine": "trak"}, 422, "refine='trak' is not available"),
    ({"vector": [1.0, 2.0]}, 422, "shape (q, 384)"),
    ({"vector": ["1"] * 384}, 422, "vector"),
    ({"vectors": [[0.0] * 384, [0.0] * 383]}, 422, "same length"),
    (b'{"vector": [NaN' + b", 0.0" * 383 + b"]}", 422, "NaN"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[f"{i}-{s}" for i, (_, s, _) in enumerate(BAD)])
def test_bad_query_gets_4xx_with_a_json_error(server, keys, body, status, message):
    headers = bearer(keys["read"]) | {"Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server.url}/v1/query", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert message in error_of(response)


def test_body_over_the_limit_gets_413_with_or_without_length(server, keys):
    big = json.dumps({"text": "a" * 70_000}).encode()
    response = httpx.post(f"{server.url}/v1/query", content=big, headers=bearer(keys["read"]))
    assert response.status_code == 413 and "max_body_bytes" in error_of(response)

    def chunks():
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    streamed = httpx.post(f"{server.url}/v1/query", content=chunks(), headers=bearer(keys["read"]))
    assert "content-length" not in streamed.request.headers  # chunked: the server counts what arrives
    assert streamed.status_code == 413 and "max_body_bytes" in error_of(streamed)


def test_unknown_route_and_method_answer_json(server):
    assert "no route GET /v2/nothing" in error_of(httpx.get(f"{server.url}/v2/nothing"))
    wrong = httpx.delete(f"{server.url}/v1/query")
    assert wrong.status_code == 405 and "DELETE is not allowed" in error_of(wrong)


def test_reload_of_a_bad_folder_keeps_serving(server, keys, tmp_path):
    before = httpx.get(f"{server.url}/readyz").json()["generation"]
    response = httpx.post(f"{server.url}/v1/admin/reload", json={"path": str(tmp_path)}, headers=bearer(keys["admin"]))
    assert response.status_code == 422 and "still serving generation" in error_of(response)
    assert httpx.get(f"{server.url}/readyz").json()["generation"] == before
    assert httpx.post(f"{server.url}/v1/query", json={"text": "x"}, headers=bearer(keys["read"])).status_code == 200


# -- timeouts, overload and bugs (servers of their own) ----------------------------------------
def test_slow_query_gets_504_and_is_counted(corpus_dir, start):
    from attributor.service import ServiceLimits, create_app

    app = create_app(corpus_dir, None, ServiceLimits(timeout_s=0.2))
    release = threading.Event()
    slow = app.state.engine.query_texts
    app.state.engine.query_texts = lambda items, k: (release.wait(5), slow(items, k))[1]
    live = start(app)
    try:
        response = httpx.post(f"{live.url}/v1/query", json={"text": "weaver"}, timeout=10)
    finally:
        release.set()
    assert response.status_code == 504 and "timeout_s" in error_of(response)
    assert "attributor_query_timeouts_total 1" in httpx.get(f"{live.url}/metrics").text


def test_overload_gets_503_and_probes_still_answer(corpus_dir, start):
    from attributor.service import ServiceLimits, create_app

    app = create_app(corpus_dir, None, ServiceLimits(max_in_flight=1))
    release, entered = threading.Event(), threading.Event()
    slow = app.state.engine.query_texts
    app.state.engine.query_texts = lambda items, k: (entered.set(), release.wait(5), slow(items, k))[2]
    live = start(app)
    first: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: first.append(httpx.post(f"{live.url}/v1/query", json={"text": "a"}, timeout=10)))
    worker.start()
    assert entered.wait(5)
    try:
        busy = httpx.post(f"{live.url}/v1/query", json={"text": "b"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "retry" in error_of(busy)
        assert httpx.get(f"{live.url}/healthz").status_code == 200
    finally:
        release.set()
        worker.join(10)
    assert first[0].status_code == 200


def test_internal_error_is_500_json_without_traceback(open_server, caplog):
    engine = open_server.app.state.engine

    def broken(items, k):
        raise RuntimeError("secret internal detail")

    engine.query_texts = broken
    try:
        with caplog.at_level("ERROR", logger="attributor.service"):
            response = httpx.post(f"{open_server.url}/v1/query", json={"text": "a"})
    finally:
        del engine.query_texts  # back to the class's method
    assert response.status_code == 500
    assert error_of(response) == "internal error (logged on the server)" and "secret" not in response.text
    assert any("secret internal detail" in (r.exc_text or "") + str(r.exc_info) for r in caplog.records)
    assert httpx.post(f"{open_server.url}/v1/query", json={"text": "a"}).status_code == 200


def test_open_server_needs_no_key(open_server):
    assert httpx.get(f"{open_server.url}/v1/index").json()["auth"] == "open"
    assert httpx.post(f"{open_server.url}/v1/admin/reload").status_code == 200


# -- reload under load -----------------------------------------------------------------------
def test_reload_under_load_fails_no_request(server, keys, corpus_dir, other_corpus_dir):
    """A thread fires queries while the admin swaps two corpora back and forth: every query
    succeeds, and each answer comes wholly from the corpus of the generation it reports."""
    failures, answers, stop = [], [], threading.Event()

    def fire():
        with httpx.Client(headers=bearer(keys["read"]), timeout=30) as client:
            while not stop.is_set():
                response = client.post(f"{server.url}/v1/query", json={"texts": ["Who is a weaver?", "born in"], "top_k": 4})
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    answers.append(response.json())

    threads = [threading.Thread(target=fire) for _ in range(3)]
    for thread in threads:
        thread.start()
    generations = {}
    try:
        with httpx.Client(headers=bearer(keys["admin"]), timeout=60) as admin:
            for path in [other_corpus_dir, corpus_dir] * 2:
                time.sleep(0.3)
                done = admin.post(f"{server.url}/v1/admin/reload", json={"path": str(path)})
                assert done.status_code == 200, done.text
                generations[done.json()["generation"]] = "t" if path == other_corpus_dir else "s"
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == [] and len(answers) >= 8
    seen = set()
    for answer in answers:
        ids = {hit["id"][0] for result in answer["results"] for hit in result["hits"]}
        expected = generations.get(answer["generation"])
        assert expected is None or ids == {expected}, (answer["generation"], ids)
        seen.add(answer["generation"])
    assert len(seen & set(generations)) >= 2  # queries were answered by both corpora
    assert httpx.get(f"{server.url}/v1/index", headers=bearer(keys["read"])).json()["path"] == str(corpus_dir.resolve())
