"""Prometheus metrics, correct across LitServe's processes (API servers and inference workers).

The names are a contract with the dashboard and the viewer (do not rename):
``atencion_requests_total{path,status}``, ``atencion_request_duration_seconds{path}``,
``atencion_batch_size{path}``, ``atencion_input_tokens_total{path}``, ``atencion_generated_tokens_total{path}``,
``atencion_time_to_first_token_seconds{path}``, ``atencion_finish_reason_total{reason}``,
``atencion_model_info{model,kind,revision}``.

prometheus_client's multiprocess mode reads ``PROMETHEUS_MULTIPROC_DIR`` when it is first imported, so
``service.settings.prepare_multiprocess_dir`` must run before this module (or anything importing prometheus_client) is imported;
``atencion serve`` does that first thing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from starlette.requests import Request
from starlette.responses import Response

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

REQUESTS = Counter("atencion_requests_total", "HTTP requests to an API route", ["path", "status"])
DURATION = Histogram(
    "atencion_request_duration_seconds", "end-to-end latency", ["path"], buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "atencion_batch_size", "requests in each batch a worker ran", ["path"], buckets=BATCH_BUCKETS
)
INPUT_TOKENS = Counter("atencion_input_tokens_total", "tokens in the inputs", ["path"])
GENERATED_TOKENS = Counter("atencion_generated_tokens_total", "tokens generated", ["path"])
FIRST_TOKEN = Histogram(
    "atencion_time_to_first_token_seconds",
    "from request arrival to the first token",
    ["path"],
    buckets=LATENCY_BUCKETS,
)
FINISH_REASON = Counter("atencion_finish_reason_total", "why generation stopped", ["reason"])
MODEL_INFO = Gauge(
    "atencion_model_info", "served models (value 1)", ["model", "kind", "revision"], multiprocess_mode="max"
)


def render() -> tuple[bytes, str]:
    """The exposition text: merged from every process in multiprocess mode, else this process's registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)


def record_models(models: list[Any]) -> None:
    """One ``atencion_model_info`` series per served model; ``revision`` is the resolved commit sha of a Hub
    model (what is really served, even if a branch moves), ``local`` for a directory."""
    for model in models:
        revision = model.commit or model.revision or "local"
        MODEL_INFO.labels(model=model.name, kind=model.kind, revision=revision).set(1)


class MetricsMiddleware:
    """Counts and times every request to the API routes; a stream is timed until its last byte."""

    def __init__(self, app: Callable, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self.paths:
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                REQUESTS.labels(path=path, status=str(status["code"])).inc()
                DURATION.labels(path=path).observe(time.perf_counter() - started)

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, counted_send)
        finally:
            record()
