"""The HTTP query service: ``attributor serve --index DIR`` (FastAPI under uvicorn).

    engine.py      the served Searcher, loaded once, swapped atomically by a reload
    app.py         create_app(): the routes, keys per scope, limits, JSON errors
    schemas.py     request and response bodies (the OpenAPI schema)
    middleware.py  body size, overload, metrics, no traceback ever
    keys.py        API keys: hashed at rest (0600 JSON file), read and admin scopes
    limits.py      ServiceLimits: body, top_k, batch, text length, timeout, workers
    metrics.py     Prometheus text format
    server.py      serve(): the loopback/keys rule, the socket, uvicorn, SIGTERM
    static/        the browser page (HTML + JS + CSS, no CDN)

``import attributor.service`` does not import FastAPI; :func:`create_app` and :func:`serve`
import it when called.

Example:
    >>> from attributor.service import create_app            # doctest: +SKIP
    >>> app = create_app("runs/facts", keys_file="runs/facts.keys.json")
"""

from __future__ import annotations

from typing import Any

from attributor.service.keys import KeyStore, default_keys_path
from attributor.service.limits import ServiceLimits
from attributor.service.server import serve

__all__ = ["create_app", "serve", "KeyStore", "ServiceLimits", "default_keys_path"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`attributor.service.app.create_app` (imported on first use: it needs fastapi)."""
    from attributor.service.app import create_app as create

    return create(*args, **kwargs)
