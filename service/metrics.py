"""Prometheus metrics, correct across LitServe's processes (API servers and inference workers).

The names are a contract with the dashboard and the viewer (do not rename):
``atencion_requests_total{path,status}``, ``atencion_request_duration_seconds{path}``,
``atencion_batch_size{path}``, ``atencion_input_tokens_total{path}``, ``atencion_generated_tokens_total{path}``,
``atencion_time_to_first_token_seconds{path}``, ``atencion_finish_reason_total{reason}``,
``atencion_model_info{model,kind,revision}``; and the generation engine's (``service.engine``), per model and
route: ``atencion_generation_running{model}`` / ``…_waiting{model}`` (gauges: sequences in the running batch /
in its queue), ``atencion_generation_queue_seconds``, ``…_time_to_first_token_seconds``,
``…_time_per_output_token_seconds`` (histograms), ``atencion_generation_prompt_tokens_total``,
``…_generated_tokens_total``, ``…_ended_total{reason}`` (counters), ``atencion_generation_batch_size{model}``
(rows in each decode step). docs/deploy.md says what each one measures.

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
GEN_LABELS = ["model", "path"]
GEN_RUNNING = Gauge(
    "atencion_generation_running", "sequences in the running batch", ["model"], multiprocess_mode="livesum"
)
GEN_WAITING = Gauge(
    "atencion_generation_waiting",
    "requests waiting to join the batch",
    ["model"],
    multiprocess_mode="livesum",
)
GEN_QUEUE = Histogram(
    "atencion_generation_queue_seconds",
    "from submission to joining the batch (prefill start)",
    GEN_LABELS,
    buckets=LATENCY_BUCKETS,
)
GEN_FIRST_TOKEN = Histogram(
    "atencion_generation_time_to_first_token_seconds",
    "from submission to the first token sent",
    GEN_LABELS,
    buckets=LATENCY_BUCKETS,
)
GEN_PER_TOKEN = Histogram(
    "atencion_generation_time_per_output_token_seconds",
    "between consecutive tokens sent of one sequence",
    GEN_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
GEN_PROMPT_TOKENS = Counter("atencion_generation_prompt_tokens_total", "prompt tokens prefilled", GEN_LABELS)
GEN_TOKENS = Counter("atencion_generation_generated_tokens_total", "tokens generated and sent", GEN_LABELS)
GEN_ENDED = Counter(
    "atencion_generation_ended_total",
    "sequences that left the engine, by reason (length, eos_token, stop_sequence, cancelled, timeout, generation)",
    [*GEN_LABELS, "reason"],
)
GEN_BATCH = Histogram(
    "atencion_generation_batch_size", "rows in each decode step", ["model"], buckets=BATCH_BUCKETS
)
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


class EngineMetrics:
    """``service.engine.Observer`` for one served decoder: the generation metrics above, plus the older
    per-route ones (input/generated tokens, time to first token, finish reasons)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._per_route: dict[str, tuple] = {}  # the labelled series ``tokens`` updates, looked up once
        self._batch = GEN_BATCH.labels(model=model)

    def queued(self, route: str, waiting: int) -> None:
        GEN_WAITING.labels(model=self.model).set(waiting)

    def started(
        self, route: str, queue_seconds: float, prompt_tokens: int, running: int, waiting: int
    ) -> None:
        GEN_QUEUE.labels(model=self.model, path=route).observe(queue_seconds)
        GEN_PROMPT_TOKENS.labels(model=self.model, path=route).inc(prompt_tokens)
        INPUT_TOKENS.labels(path=route).inc(prompt_tokens)
        GEN_RUNNING.labels(model=self.model).set(running)
        GEN_WAITING.labels(model=self.model).set(waiting)

    def tokens(
        self, route: str, count: int, first_token_seconds: float | None, per_token: float | None
    ) -> None:
        """Called for every row at every step, on the decode thread: the series are looked up once per route."""
        series = self._per_route.get(route)
        if series is None:
            labels = {"model": self.model, "path": route}
            series = self._per_route[route] = (
                GEN_TOKENS.labels(**labels), GENERATED_TOKENS.labels(path=route),
                GEN_FIRST_TOKEN.labels(**labels), FIRST_TOKEN.labels(path=route), GEN_PER_TOKEN.labels(**labels),
            )  # fmt: skip
        generated, generated_route, first, first_route, between = series
        generated.inc(count)
        generated_route.inc(count)
        if first_token_seconds is not None:
            first.observe(first_token_seconds)
            first_route.observe(first_token_seconds)
        if per_token is not None:
            between.observe(per_token)

    def step(self, rows: int) -> None:
        self._batch.observe(rows)

    def ended(self, route: str, reason: str, running: int, waiting: int) -> None:
        GEN_ENDED.labels(model=self.model, path=route, reason=reason).inc()
        if reason in ("length", "eos_token", "stop_sequence"):
            FINISH_REASON.labels(reason=reason).inc()
        GEN_RUNNING.labels(model=self.model).set(running)
        GEN_WAITING.labels(model=self.model).set(waiting)
