"""The LitServe server: one LitAPI per endpoint, the middlewares, ``/info``, ``/metrics``, ``/ui`` — wiring only.

Routes
- ``POST /fill-mask`` (batched), ``POST /generate``, ``POST /generate_stream`` (SSE) and the OpenAI routes
  ``POST /v1/completions``, ``/v1/chat/completions`` (all four on one continuous-batching engine per decoder:
  ``service.generate``, ``service.openai_api``), ``POST /translate`` (batched), ``POST /attention``;
  an endpoint is there only when a model of its kind is served.
- ``GET /health``: 200 once every inference worker has loaded its models, 503 before.
- ``GET /info``: served models (config, reference, repo, revision, commit), device, limits, batching, version.
- ``GET /metrics``: Prometheus text, merged over all processes (``service.metrics``).
- ``GET /openapi.json`` and ``/docs``: the request schemas; ``/ui``: the attention viewer page, if present.

Limits (``ATENCION_MAX_*``, see ``service.settings.Limits``): tokens per input (413 above), ``max_new_tokens``,
body bytes (413), strings per fill-mask request, attention cells (413), requests in flight per API process
(429 ``overloaded`` above, rather than a queue that grows until requests time out).

API key (``--api-key`` / ``ATENCION_API_KEY``): required as ``X-API-Key`` on the POST routes and ``/info``.
``/health`` and ``/metrics`` stay open so container probes and Prometheus work without secrets; they reveal no
model output. (LitServe's own ``LIT_SERVER_API_KEY``, if set, would also lock ``/health``: prefer ours.)

Processes: LitServe spawns one worker per API × device × ``workers_per_device`` (the attention API: one per
device) and forks one uvicorn API server. SIGTERM (``docker stop``) runs LitServe's graceful path — in-flight
requests finish, then every child exits — because the main process turns it into ``KeyboardInterrupt``;
without that, LitServe's children are orphaned and keep the port. While draining, new requests get 503; when any
process dies, the server answers what is in flight with 503 and exits with status 3 (``service.supervision``).
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import Request
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import JSONResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from service import generate, metrics, openai_api
from service.attention_api import AttentionAPI
from service.errors import (
    ApiKeyMiddleware,
    ConcurrencyLimitMiddleware,
    PayloadLimitMiddleware,
    install_error_handlers,
)
from service.fill_mask import FillMaskAPI, choose_precisions, served_precisions
from service.models import Catalog, ServedModel, install_catalog
from service.openapi import install_openapi
from service.settings import Settings
from service.supervision import SupervisedLitServer, SupervisionMiddleware
from service.translate import TranslateAPI

STATIC = Path(__file__).resolve().parent / "static"
STREAM_PATHS = ("/generate_stream",)
QUEUE_TIMEOUT = 120  # seconds a request may wait in a worker's queue before a 504


class EventStreamMiddleware:
    """LitServe streams without a content type: mark the SSE routes as ``text/event-stream``."""

    def __init__(self, app: Any, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)

        async def sse_send(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-type"]
                headers += [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sse_send)


class PlainTextMiddleware:
    """LitServe's ``/`` and ``/health`` answer without a content type: say ``text/plain`` (as documented)."""

    def __init__(self, app: Any, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)

        async def typed_send(message: dict) -> None:
            headers = message.get("headers", [])
            if message["type"] == "http.response.start" and not any(
                k.lower() == b"content-type" for k, _ in headers
            ):
                message = {**message, "headers": [*headers, (b"content-type", b"text/plain; charset=utf-8")]}
            await send(message)

        await self.app(scope, receive, typed_send)


def build_apis(settings: Settings, models: list[ServedModel]) -> list[ls.LitAPI]:
    kinds = {m.kind for m in models}
    apis: list[ls.LitAPI] = []
    if "encoder" in kinds:
        precisions = choose_precisions(models, settings.precision)  # checked once, here, before any worker
        apis.append(
            FillMaskAPI(models, settings.limits, settings.max_batch_size, settings.batch_timeout, precisions)
        )
    if "translator" in kinds:
        apis.append(TranslateAPI(models, settings.limits, settings.max_batch_size, settings.batch_timeout))
    apis.append(AttentionAPI(models, settings.limits))
    engines = 1 if "decoder" in kinds else 0  # every generation route's engines run in the API process
    workers = settings.workers_per_device * (len(apis) - 1) + 1 + engines  # the attention API has one worker
    for api in apis:
        api.threads = max(1, (os.cpu_count() or 1) // workers)  # no more torch threads than cores, in all
    return apis


def info(
    settings: Settings, models: list[ServedModel], server: ls.LitServer, endpoints: tuple[str, ...]
) -> dict[str, Any]:
    defaults = {
        kind: next((m.name for m in models if m.kind == kind), None)
        for kind in ("encoder", "decoder", "translator")
    }
    return {
        "version": version("atencion"),  # the installed package's metadata
        "models": [m.describe() for m in models],
        "defaults": defaults,
        "device": {
            "accelerator": server._connector.accelerator,
            "devices": list(map(str, server.devices)),
            "torch_threads_per_worker": min(api.threads for api in server.litapi_connector),
        },
        "limits": asdict(settings.limits),
        "batching": {"max_batch_size": settings.max_batch_size, "batch_timeout": settings.batch_timeout},
        "workers_per_device": settings.workers_per_device,
        "endpoints": list(endpoints),
        "api_key_required": settings.api_key is not None,
        "fill_mask_precision": served_precisions(list(server.litapi_connector)),
    }


def build_server(settings: Settings, models: list[ServedModel]) -> ls.LitServer:
    """The configured LitServer (not started). Installs the catalog used to validate requests."""
    catalog = Catalog.build(models, settings.limits)
    install_catalog(catalog)
    apis = build_apis(settings, models)
    workers = {api.api_path: settings.workers_per_device for api in apis}
    workers["/attention"] = 1
    server = SupervisedLitServer(
        apis,
        accelerator=settings.accelerator,
        workers_per_device=workers,
        timeout=QUEUE_TIMEOUT,
        info_path="/litserve/info",
    )
    app = server.app
    device = settings.accelerator
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = min(api.threads for api in apis)
    paths = tuple(api.api_path for api in apis)
    paths += generate.install(app, models, settings.limits, device, threads)
    paths += openai_api.install(app, models, settings.limits)  # on the same engines
    install_error_handlers(app)
    install_openapi(app, catalog, paths, settings.api_key is not None)
    described = info(settings, models, server, paths)

    async def info_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(described)

    app.add_api_route("/info", info_endpoint, methods=["GET"], summary="served models, device, limits")
    app.add_api_route("/metrics", metrics.metrics_endpoint, methods=["GET"], include_in_schema=False)
    # Starlette's trailing-slash redirect names the client's Host header: never follow it
    app.router.redirect_slashes = False
    if (STATIC / "index.html").is_file():
        app.add_route("/ui", lambda request: RedirectResponse("/ui/"), include_in_schema=False)  # relative
        app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
    # innermost first: the SSE header must be set before GZip looks at the response
    app.add_middleware(EventStreamMiddleware, paths=STREAM_PATHS)
    app.add_middleware(PlainTextMiddleware, paths=("/", "/health"))
    if any(api.stream for api in apis):  # LitServe adds GZip itself only when no API streams
        app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=6)  # 9 costs 2–3× for ~1 %
    app.add_middleware(PayloadLimitMiddleware, max_bytes=settings.limits.max_payload_bytes)
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.limits.max_concurrent_requests, paths=paths)
    if settings.api_key:
        app.add_middleware(
            ApiKeyMiddleware, api_key=settings.api_key, protected=(*paths, "/info", "/litserve/info")
        )
    app.add_middleware(metrics.MetricsMiddleware, paths=paths)
    app.add_middleware(SupervisionMiddleware)  # sees every request, drains, fails loudly
    app.add_middleware(openai_api.OpenAIErrorShape)  # outermost: every error on /v1 in OpenAI's shape
    metrics.record_models(models)
    return server


def terminate_gracefully() -> None:
    """SIGTERM in the main process → KeyboardInterrupt, LitServe's graceful shutdown (children inherit the
    handler through fork, so it only acts in the process that installed it)."""
    main = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != main:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def serve(settings: Settings, models: list[ServedModel]) -> None:
    """Build and run the server until SIGTERM / SIGINT."""
    server = build_server(settings, models)
    terminate_gracefully()
    server.run(
        host=settings.host,
        port=settings.port,
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )
