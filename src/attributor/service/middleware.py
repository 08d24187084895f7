"""The ASGI layer around the routes: metrics, overload, body size, and no traceback ever.

:class:`Guard` wraps the whole FastAPI app (outermost), per HTTP request:

1. counts it in flight; above ``max_in_flight`` it answers 503 at once (health, readiness
   and metrics are exempt, so probes still answer under overload);
2. reads the body up to ``max_body_bytes`` before the app sees it (413 above, whether or
   not the client sent Content-Length), then replays it to the app;
3. turns an exception that escaped every handler into a 500 with a JSON body and logs
   the traceback on the server (the client never sees it);
4. records method, route template, status and wall time in :class:`~attributor.service.metrics.Metrics`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable

from attributor.service.metrics import Metrics

__all__ = ["Guard", "json_body"]

log = logging.getLogger("attributor.service")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EXEMPT = ("/healthz", "/readyz", "/metrics")


def json_body(status: int, error: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": error}).encode()


class Guard:
    """Outermost ASGI middleware (see the module docstring)."""

    def __init__(self, app: Any, metrics: Metrics, max_body_bytes: int, max_in_flight: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = int(message["status"]), True
            await send(message)

        path = scope.get("path", "")
        exempt = path in EXEMPT
        self.metrics.in_flight += 1
        try:
            if not exempt and self.metrics.in_flight > self.max_in_flight:
                await _answer(counting_send, *json_body(503, f"the server is answering {self.max_in_flight} requests; "
                                                             "retry shortly"), retry_after=True)
                return
            replay = await self._read_body(scope, receive, counting_send)
            if replay is None:
                return
            await self.app(scope, replay, counting_send)
        except Exception:  # a bug: log it here, answer one JSON line
            log.exception("internal error answering %s %s", scope.get("method"), path)
            if not status["sent"]:
                await _answer(counting_send, *json_body(500, "internal error (logged on the server)"))
        finally:
            self.metrics.in_flight -= 1
            route = scope.get("route")
            self.metrics.request(scope.get("method", "?"), getattr(route, "path", None) or "other",
                                 status["code"], time.perf_counter() - started)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """A receive() that replays the whole body, or None after answering 413."""
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = json_body(413, f"the request body is larger than {self.max_body_bytes} bytes (this server's "
                                 "max_body_bytes); send fewer or shorter queries")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _answer(send, *too_big)
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, *too_big)
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would tell it

        return replay


async def _answer(send: Send, status: int, body: bytes, retry_after: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
