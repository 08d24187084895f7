"""The FastAPI app: attribution queries over a fingerprinted corpus, with keys, limits and metrics.

Routes (JSON; the schema is served at ``/openapi.json``; ``/docs`` is off because Swagger UI
loads from a CDN):

    POST /v1/query           text/texts/vector/vectors + top_k -> ranked training examples + latency   read
    GET  /v1/examples/{id}   one training example                                                   read
    GET  /v1/index           what is served: corpus, index spec and build info, limits               read
    POST /v1/admin/reload    open the (rebuilt) index and swap it in atomically                       admin
    GET  /metrics            Prometheus text: request counts, latencies, errors                       read
    GET  /healthz, /readyz   liveness, and readiness (an index is loaded)                             open
    GET  /                   the browser page (static HTML + JS of this package, no CDN)              open

Keys (:mod:`attributor.service.keys`): with a keys file every ``read``/``admin`` route needs
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``: 401 without a valid key, 403 with
the wrong scope. Without one (loopback only, see :mod:`attributor.service.server`) all
routes are open. Every error is ``{"error": "..."}``: 400 malformed JSON, 404 unknown
id or route, 413 body too large, 422 wrong shapes or values, 503 overloaded, 504 query
timeout, 500 (logged, no traceback in the answer) only for a bug.

Queries run in a thread pool of ``limits.workers`` threads (:class:`~attributor.service.engine.Engine`
says which calls share a lock), each under ``asyncio.wait_for(..., limits.timeout_s)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, AsyncIterator, Callable, Optional

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from attributor.errors import AttributorError, ConfigError, DataError, StoreError
from attributor.service.engine import Engine
from attributor.service.keys import ApiKey, KeyStore
from attributor.service.limits import ServiceLimits
from attributor.service.metrics import Metrics
from attributor.service.middleware import Guard
from attributor.service.schemas import ErrorBody, QueryRequest, QueryResponse, ReloadRequest, ReloadResponse

__all__ = ["create_app"]

log = logging.getLogger("attributor.service")

STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 413, 422, 503, 504)}


def create_app(searcher_path: str | os.PathLike[str], keys_file: str | os.PathLike[str] | None = None,
               limits: ServiceLimits | None = None, *, require_keys: bool = False, verify: bool = True) -> FastAPI:
    """The service over ``searcher_path`` (a corpus folder, or an index folder over a corpus store).

    Args:
        keys_file: the keys file; keys are required when it exists (or ``require_keys``), else all routes are open.
        limits: request bounds (default :class:`ServiceLimits()`).
        require_keys: require keys even if the file does not exist yet (nothing is then accepted until one is added).
        verify: check the index file's sha256 when opening it (and on every reload).

    The index is opened here, before the app is returned: a bad folder raises an
    :class:`~attributor.errors.AttributorError`, not a failing server.
    """
    limits = limits or ServiceLimits()
    keys = KeyStore(keys_file) if keys_file is not None else None
    if keys is not None and keys.exists():
        keys.keys()  # refuse an unreadable or world-readable file now, not at the first request
    auth = keys if keys is not None and (require_keys or keys.exists()) else None
    if require_keys and auth is None:
        raise ConfigError("keys are required but no keys file was given (--keys FILE)")
    engine = Engine(searcher_path, verify=verify)
    pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="attributor-query")
    metrics = Metrics(lambda: {"attributor_index_rows": engine.rows, "attributor_index_generation": engine.generation})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("serving %s (%d rows, %s) with %s", engine.path, engine.rows, engine.describe()["index"]["kind"],
                 f"keys from {auth.path}" if auth else "no keys (open)")
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="attributor", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Which training examples are responsible for this output? Ranked training examples "
                              "of a fingerprinted corpus, with scores, text and the latency of each stage.")
    app.state.engine, app.state.limits, app.state.metrics, app.state.keys = engine, limits, metrics, auth
    _handlers(app)
    read, admin = Depends(_require("read")), Depends(_require("admin"))

    async def run(function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in the pool, cut at the time limit (504)."""
        future = asyncio.get_running_loop().run_in_executor(pool, function, *args)
        try:
            return await asyncio.wait_for(future, limits.timeout_s)
        except asyncio.TimeoutError:
            metrics.count("timeouts")
            raise HTTPException(504, f"the query took longer than {limits.timeout_s:g} s (this server's timeout_s); "
                                     "ask for fewer queries or a smaller top_k") from None

    @app.post("/v1/query", response_model=QueryResponse, responses=ERRORS, tags=["query"])
    async def query(body: QueryRequest, key: Optional[ApiKey] = read) -> dict[str, Any]:
        """The top_k training examples of each query (text or fingerprint vector, one or a batch)."""
        started = time.perf_counter()
        texts, vectors = _queries(body, limits)
        if texts is not None:
            hits, generation = await run(engine.query_texts, texts, body.top_k)
        else:
            hits, generation = await run(engine.query_vectors, vectors, body.top_k)
        for h in hits:
            metrics.query(h.latency_ms)
        results = [{"query": h.query, "hits": h.rows, "latency_ms": {k: round(v, 3) for k, v in h.latency_ms.items()}}
                   for h in hits]
        return {"results": results, "top_k": body.top_k, "generation": generation,
                "server_ms": round(1e3 * (time.perf_counter() - started), 3)}

    @app.get("/v1/examples/{item_id}", responses=ERRORS, tags=["query"])
    async def example(item_id: str, key: Optional[ApiKey] = read) -> dict[str, Any]:
        """One training example by its id: row, id, text and, where the corpus has them, prompt, label and meta."""
        try:
            return await run(engine.example, item_id)
        except DataError as err:
            raise HTTPException(404, str(err)) from None

    @app.get("/v1/index", responses=ERRORS, tags=["index"])
    async def index_info(key: Optional[ApiKey] = read) -> dict[str, Any]:
        """What is served: corpus manifest, index spec and build info, load time, generation and the limits."""
        return engine.describe() | {"limits": limits.model_dump(), "auth": "keys" if auth else "open"}

    @app.post("/v1/admin/reload", response_model=ReloadResponse, responses=ERRORS, tags=["admin"])
    async def reload(body: Optional[ReloadRequest] = None, key: Optional[ApiKey] = admin) -> dict[str, Any]:
        """Open the index again (or the folder in ``path``), then swap it in; requests in flight finish on the old one."""
        path = body.path if body is not None else None
        try:
            done = await asyncio.to_thread(engine.reload, path)  # not the query pool: a busy pool must not delay it
        except AttributorError as err:
            metrics.reload(False)
            status = 409 if "in progress" in str(err) else 422
            raise HTTPException(status, f"reload failed, still serving generation {engine.generation}: {err}") from None
        metrics.reload(True)
        log.info("reloaded %s: generation %d, %d rows in %.2f s", done["path"], done["generation"], done["rows"],
                 done["seconds"])
        return done

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}}, tags=["ops"])
    async def readyz() -> dict[str, Any]:
        """Readiness: an index is loaded and answers queries."""
        if engine.searcher is None:
            raise HTTPException(503, "no index loaded")
        return {"status": "ready", "generation": engine.generation, "rows": engine.rows}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    async def prometheus(key: Optional[ApiKey] = read) -> Response:
        """Prometheus text format: requests by route and status, latencies, errors, query stages, reloads."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(_static(name), media_type=STATIC[name], headers={"cache-control": "no-cache"})

    app.add_middleware(Guard, metrics=metrics, max_body_bytes=limits.max_body_bytes, max_in_flight=limits.max_in_flight)
    return app


# -- requests ---------------------------------------------------------------------------
def _queries(body: QueryRequest, limits: ServiceLimits) -> tuple[list[Any] | None, np.ndarray | None]:
    """(texts, None) or (None, vectors (q, dim) float32), checked against the limits (422 otherwise)."""
    given = [name for name in ("text", "texts", "vector", "vectors") if getattr(body, name) is not None]
    if len(given) != 1:
        raise HTTPException(422, "give the queries one way: text, texts, vector or vectors"
                                 + (f" (got {', '.join(given)})" if given else ""))
    if body.refine not in (None, "none"):
        raise HTTPException(422, f"refine={body.refine!r} is not available: this server ranks by the corpus's "
                                 "fingerprint index only (TRAK refinement needs a model-gradient store, which a corpus "
                                 "folder does not hold yet); send refine null or \"none\"")
    if body.top_k > limits.max_top_k:
        raise HTTPException(422, f"top_k {body.top_k} is above this server's max_top_k {limits.max_top_k}")
    if body.text is not None or body.texts is not None:
        texts = [body.text] if body.text is not None else list(body.texts or [])
        _check_batch(len(texts), limits)
        items = [t if isinstance(t, str) else ({"prompt": t.prompt, "text": t.text} if t.prompt else t.text) for t in texts]
        for i, item in enumerate(items):
            length = len(item) if isinstance(item, str) else len(item["prompt"]) + len(item["text"])
            if not (item if isinstance(item, str) else item["text"]).strip():
                raise HTTPException(422, f"query {i} is empty; give some text")
            if length > limits.max_text_chars:
                raise HTTPException(422, f"query {i} has {length} characters, above this server's max_text_chars "
                                         f"{limits.max_text_chars}")
        return items, None
    rows = [body.vector] if body.vector is not None else list(body.vectors or [])
    _check_batch(len(rows), limits)
    widths = sorted({len(row) for row in rows})
    if len(widths) != 1:
        raise HTTPException(422, f"vectors must all have the same length, got lengths {widths[:5]}")
    return None, np.asarray(rows, dtype=np.float32)


def _check_batch(size: int, limits: ServiceLimits) -> None:
    if size == 0:
        raise HTTPException(422, "the batch is empty; give at least one query")
    if size > limits.max_batch:
        raise HTTPException(422, f"{size} queries in one request, above this server's max_batch {limits.max_batch}; "
                                 "split the batch")


def _require(scope: str) -> Callable[..., Any]:
    """A dependency: the caller's key when keys are on (401 without a valid one, 403 with the wrong scope)."""
    bearer, header = HTTPBearer(auto_error=False), APIKeyHeader(name="X-API-Key", auto_error=False)

    async def check(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
                    api_key: Optional[str] = Depends(header)) -> Optional[ApiKey]:
        # async: one stat and one sha256, cheaper in the event loop than a hop to a thread
        keys: KeyStore | None = request.app.state.keys
        if keys is None:
            return None
        token = credentials.credentials if credentials is not None else api_key
        challenge = {"WWW-Authenticate": "Bearer"}
        if not token:
            raise HTTPException(401, "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
                                     "(make one with `attributor serve keys add NAME`)", headers=challenge)
        try:
            key = keys.check(token)
        except ConfigError as err:  # the file went bad while serving: refuse everything, say why in the log
            log.error("cannot check API keys: %s", err)
            raise HTTPException(503, "the server cannot read its keys file now (see its log)") from None
        if key is None:
            raise HTTPException(401, "the API key is not valid (unknown, revoked or mistyped)", headers=challenge)
        if not key.allows(scope):
            raise HTTPException(403, f"the key {key.name!r} has scope {key.scope!r}; this needs scope {scope!r}")
        return key

    return check


# -- errors -----------------------------------------------------------------------------
def _handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        detail = err.detail if isinstance(err.detail, str) else str(err.detail)
        if err.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /openapi.json"
        elif err.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /openapi.json"
        return JSONResponse({"error": detail}, err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = list(err.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            where = next(e for e in errors if e.get("type") == "json_invalid")
            reason = (where.get("ctx") or {}).get("error", "cannot be parsed")
            return JSONResponse({"error": f"the request body is not valid JSON: {reason}"}, 400)
        return JSONResponse({"error": "; ".join(_describe(e) for e in errors[:5])}, 422)

    @app.exception_handler(AttributorError)
    async def refused(request: Request, err: AttributorError) -> JSONResponse:
        """Bad input (DataError, ConfigError): 422 with the message; a broken index (StoreError): 500, logged."""
        if isinstance(err, StoreError):
            log.error("the served index failed on %s: %s", request.url.path, err)
            return JSONResponse({"error": "the served index cannot be read (see the server log)"}, 500)
        return JSONResponse({"error": str(err)}, 422)


def _describe(error: dict[str, Any]) -> str:
    """One pydantic error as 'field: message' (the body prefix dropped)."""
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    message = error.get("msg", "invalid")
    if error.get("type") == "missing" and location == "body":
        return "the request needs a JSON body"
    if location == "body" and error.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return 'the request body must be a JSON object, e.g. {"text": "...", "top_k": 10}'
    if error.get("type") == "extra_forbidden":
        message = "unknown field"
    return f"{location}: {message}"


def _static(name: str) -> bytes:
    return resources.files("attributor.service").joinpath("static", name).read_bytes()


def _version() -> str:
    from attributor import __version__

    return __version__
