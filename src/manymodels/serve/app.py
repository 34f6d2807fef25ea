"""The HTTP face of a `Server`: MLflow's scoring protocol on /invocations, and what an operator asks.

    POST /invocations      MLflow's protocol (see `protocol`): predictions, one per row, in order
    GET  /ping             200 once a version serves (load balancers)
    GET  /health           JSON: what serves, what is followed, what went wrong (503 before ready)
    GET  /version          JSON: model, version, run, alias, loaded at
    GET  /segments/{key}   JSON: whether a segment has its own model, its metric, or who serves it
    GET  /metrics          Prometheus text

Predictions run on the event loop (CPU-bound work under one GIL gains nothing from a thread pool; more
processes are `--workers`). Every error is JSON with a message and no stack trace: a request's own
problems are 4xx, anything else a 500 that names the failure in one line and is logged here.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from manymodels.errors import DataError, RegistryError
from manymodels.registry.pack_info import DAMAGED_SOURCE, FALLBACK_SOURCE, SEGMENT, DamagedModel
from manymodels.serve import metrics
from manymodels.serve.live import Live
from manymodels.serve.plain import plain_rows
from manymodels.serve.protocol import RequestError, json_payload, parse, predictions_body, requested_levels
from manymodels.serve.server import Server

log = logging.getLogger("manymodels.serve")
JSON_TYPE = "application/json"


def create_app(server: Server, token: str | None = None) -> FastAPI:
    """The ASGI app answering for `server` (started by the caller); with `token`, every request but /ping must
    carry `Authorization: Bearer <token>`."""
    app = FastAPI(title="manymodels serve", docs_url=None, redoc_url=None, openapi_url=None)
    if token:
        app.add_middleware(BearerToken, token=token)

    def timed(endpoint: str) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
        def wrap(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
            @functools.wraps(handler)  # FastAPI reads the handler's parameters through it
            async def run(*args: Any, **kwargs: Any) -> Response:
                started = time.perf_counter()
                try:
                    response = await handler(*args, **kwargs)
                except RequestError as exc:
                    response = JSONResponse(exc.body(), status_code=exc.status)
                except RegistryError as exc:  # a file the version needs does not read: /health says so, it reloads
                    live = server.live
                    if live is not None:
                        server.files_failed(live, exc)
                    what = f"version {live.serving.version} (run {live.serving.run_id})" if live else "the version"
                    damaged = isinstance(exc, DamagedModel)
                    code = "DAMAGED_MODEL" if damaged else "MODEL_FILES_UNAVAILABLE"
                    why = "a segment's model is damaged and no fallback serves it" if damaged else \
                        "a file it needs does not read"
                    message = f"{what}: {why}; loading it again (the server log and /health say more)"
                    response = JSONResponse({"error_code": code, "message": message}, status_code=503)
                except Exception as exc:  # noqa: BLE001 - a client never sees a stack trace
                    log.exception("%s failed", endpoint)
                    response = JSONResponse(
                        {"error_code": "INTERNAL_ERROR", "message": f"{endpoint} failed: {type(exc).__name__}"},
                        status_code=500,
                    )
                metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
                metrics.requests.labels(endpoint, str(response.status_code)).inc()
                return response

            return run

        return wrap

    @app.post("/invocations")
    @timed("invocations")
    async def invocations(request: Request) -> Response:
        """Predict every row with its segment's model (else the fallback); MLflow's scoring protocol."""
        live = _serving(server)
        body = await _body(request, server.limits.max_body_bytes)
        content_type = request.headers.get("content-type")

        def answer() -> tuple[bytes, np.ndarray]:
            payload = json_payload(body, content_type)
            plain = plain_rows(payload, live.columns, live.pack.info.features, live.segment_by,
                               server.limits.max_rows)
            if plain is not None:  # the common request: no frame built (serve/plain.py)
                values = live.pack.predict_plain(*plain)
                if values is not None:
                    source = np.full(len(values), SEGMENT, dtype=object)
                    return predictions_body(values, source), source
            frame = parse(body, content_type, live.columns, server.limits.max_rows, payload)
            levels = requested_levels(body, content_type)
            try:
                prediction, source, bands = live.predict(frame, levels)
            except DataError as exc:
                raise RequestError(400, str(exc)) from exc
            return predictions_body(prediction, source, bands), source

        # Answered on the event loop itself: the work is CPU-bound under one GIL, and handing it to a thread
        # pool only adds switches (measured: 8 concurrent clients got 35 % fewer answers through a pool).
        content, source = answer()
        _count_rows(source)
        metrics.models_loaded.set(live.pack.loaded_count())
        serving = live.serving
        headers = {"X-Model-Run": serving.run_id}
        if serving.version is not None:
            headers["X-Model-Version"] = str(serving.version)
        return Response(content, media_type=JSON_TYPE, headers=headers)

    @app.get("/ping")
    @timed("ping")
    async def ping() -> Response:
        """200 once a version serves, 503 before."""
        return Response("\n", status_code=200 if server.live is not None else 503, media_type=JSON_TYPE)

    @app.get("/health")
    @timed("health")
    async def health() -> Response:
        """What serves and what went wrong while following the alias."""
        status, body = server.health()
        return JSONResponse(body, status_code=status)

    @app.get("/version")
    @timed("version")
    async def version() -> Response:
        """The model, version, run and alias served, and when they were loaded."""
        live = _serving(server)
        return JSONResponse(live.serving.describe())

    @app.get("/segments/{key:path}")
    @timed("segments")
    async def segment(key: str) -> Response:
        """Whether a segment has a model of its own, its metric and rows, or what serves it instead."""
        live = _serving(server)
        return JSONResponse(await run_in_threadpool(live.segment, key))

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus' text exposition."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


class BearerToken:
    """ASGI middleware: a request without `Authorization: Bearer <token>` (compared in constant time) is a 401,
    except /ping, which a load balancer asks without credentials."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/ping":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        refused = JSONResponse({"error_code": "UNAUTHENTICATED", "message": "send Authorization: Bearer <token>"},
                               status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await refused(scope, receive, send)


def _serving(server: Server) -> Live:
    """The version answering now (a request keeps it to the end), or 503 before the first is loaded."""
    live = server.live
    if live is None:
        raise RequestError(503, "no model loaded yet", "TEMPORARILY_UNAVAILABLE")
    return live


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (by its Content-Length, or while it streams)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared)} bytes; the limit is {limit} (serve --max-body-mb)",
                           "PAYLOAD_TOO_LARGE")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body over {limit} bytes (serve --max-body-mb)", "PAYLOAD_TOO_LARGE")
        chunks.append(chunk)
    return b"".join(chunks)


def _count_rows(source: np.ndarray) -> None:
    counted = 0
    for label, value in (("segment", SEGMENT), ("fallback", FALLBACK_SOURCE), ("damaged", DAMAGED_SOURCE)):
        n = int(np.count_nonzero(source == value))
        if n:
            metrics.rows.labels(label).inc(n)
        counted += n
    if len(source) - counted:
        metrics.rows.labels("none").inc(len(source) - counted)
