"""Shared set-up of the service tests: two small corpora, a keys file, and real servers.

A server here is uvicorn on a free loopback port, serving :func:`create_app` from a thread
of the test process (the process tests start ``attributor serve`` as a subprocess).
Corpora use the ``embedding`` fingerprinter (MiniLM, offline) with a flat index, so the
top hit of a question is its statement, and build in a few seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> from a daemon thread."""

    def __init__(self, app: Any):
        import uvicorn

        self.app = app
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, as in serve()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(256)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture(scope="session")
def facts() -> list[dict[str, Any]]:
    from attributor.data.synthetic import fact_paraphrases

    statements, _ = fact_paraphrases(6, attributes=2, paraphrases=3, seed=3)
    return statements


@pytest.fixture(scope="session")
def corpus_dir(facts, tmp_path_factory) -> Path:
    from attributor.gif import fingerprint_corpus

    out = tmp_path_factory.mktemp("service") / "facts"
    fingerprint_corpus([s["text"] for s in facts], out, "embedding", ids=[f"s{i}" for i in range(len(facts))],
                       meta=[{"person": s["entity"]} for s in facts], index="flat")
    return out


@pytest.fixture(scope="session")
def other_corpus_dir(tmp_path_factory) -> Path:
    """Another corpus (other people, ids t0, t1, ...): what a reload swaps in."""
    from attributor.data.synthetic import fact_paraphrases
    from attributor.gif import fingerprint_corpus

    statements, _ = fact_paraphrases(4, attributes=2, paraphrases=2, seed=11)
    out = tmp_path_factory.mktemp("service-other") / "facts-v2"
    fingerprint_corpus([s["text"] for s in statements], out, "embedding", ids=[f"t{i}" for i in range(len(statements))],
                       index="flat")
    return out


@pytest.fixture(scope="session")
def keys(corpus_dir) -> dict[str, Any]:
    """A keys file beside the corpus with one read key and one admin key."""
    from attributor.service import KeyStore

    store = KeyStore(corpus_dir.with_name("facts.keys.json"))
    return {"file": store.path, "read": store.add("reader", "read"), "admin": store.add("operator", "admin")}


@pytest.fixture(scope="session")
def start() -> Iterator[Callable[[Any], LiveServer]]:
    """``start(app)`` -> a running :class:`LiveServer`; all are stopped at the end of the session."""
    servers: list[LiveServer] = []

    def run(app: Any) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield run
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(corpus_dir, keys, start) -> LiveServer:
    """The keyed server, with small limits so that the limit tests are cheap."""
    from attributor.service import ServiceLimits, create_app

    limits = ServiceLimits(max_batch=8, max_top_k=20, max_body_bytes=64_000, max_text_chars=2_000)
    return start(create_app(corpus_dir, keys["file"], limits))


@pytest.fixture(scope="session")
def open_server(corpus_dir, start) -> LiveServer:
    """A server without keys (loopback: every route open)."""
    from attributor.service import create_app

    return start(create_app(corpus_dir, None))

