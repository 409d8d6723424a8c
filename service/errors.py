"""One error shape for every failure: ``{"error": "<what is wrong>", "error_type": "<kind>"}`` (TGI's shape).

Bad input is answered with a 4xx naming the problem; nothing a client sends yields a 500. Workers of a batched
API report a bad item as an ``InputError`` *value* (never raised through LitServe, which would fail the whole
batch), and ``error_response`` turns it into that item's own 4xx.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

ERROR_TYPES = {
    400: "malformed_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "validation",
    424: "generation",
    429: "overloaded",
    503: "unavailable",
    504: "timeout",
}


class InputError(Exception):
    """A request the service will not run, with the status and message the client gets."""

    def __init__(self, message: str, status: int = 422, error_type: str = "validation") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type

    def __reduce__(self):  # travels between processes intact
        return (InputError, (self.message, self.status, self.error_type))


def error_body(message: str, error_type: str) -> dict[str, str]:
    return {"error": message, "error_type": error_type}


def error_response(error: InputError) -> JSONResponse:
    return JSONResponse(error_body(error.message, error.error_type), status_code=error.status)


# custom pydantic error types (raised in service.schemas) -> HTTP status; the rest are 422 "validation"
CUSTOM_TYPES = {
    "unknown_model": 404,
    "too_long": 413,
    "empty_input": 422,
    "out_of_range": 422,
    "unsupported": 422,
    "no_mask": 422,
    "invalid_text": 422,
}


def _location(loc: Iterable[Any]) -> str:
    """``body.parameters.top_k`` -> ``parameters.top_k``; drops pydantic's union-member tags."""
    parts = [str(p) for p in loc if p != "body"]
    parts = [p for p in parts if not any(c in p for c in "[(") and p not in ("str", "int", "float", "bool")]
    return ".".join(parts)


def validation_message(errors: list[dict[str, Any]]) -> tuple[int, str, str]:
    """(status, message, error_type) for FastAPI's validation errors: one readable phrase per problem."""
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = e.get("ctx", {}).get("error", "")
            return 400, f"malformed JSON body ({reason}): send a JSON object", "malformed_json"
    for e in errors:  # pydantic's own too_long is a list over max_length: a 422, not our 413 for long text
        if e.get("type") == "too_long" and "max_length" in e.get("ctx", {}):
            where = _location(e.get("loc", ()))
            return 422, f"{where}: {e.get('msg', 'too many items')}", "out_of_range"
    for e in errors:  # the custom kinds first: they say more than a type mismatch in a union member
        if e.get("type") in CUSTOM_TYPES:
            where = _location(e.get("loc", ()))
            message = e.get("msg", "invalid")
            return CUSTOM_TYPES[e["type"]], f"{where}: {message}" if where else message, e["type"]
    phrases = []
    for e in errors:
        where = _location(e.get("loc", ()))
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "missing" and not where:
            phrase = "the request body is missing: send a JSON object"
        elif not where and e.get("type") in ("model_attributes_type", "model_type", "dict_type"):
            phrase = "the body must be a JSON object, sent with Content-Type: application/json"
        elif e.get("type") == "extra_forbidden":
            phrase = f"{where}: unknown field"
        else:
            phrase = f"{where}: {message}" if where else message
        if phrase not in phrases:
            phrases.append(phrase)
    kind = "out_of_range" if all("than" in p for p in phrases) else "validation"
    return 422, "; ".join(phrases[:4]), kind


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error", "error_type"}``, whatever raised it."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, kind = validation_message(list(exc.errors()))
        return JSONResponse(error_body(message, kind), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 500:
            detail = "internal server error (see the server log)"
        kind = ERROR_TYPES.get(exc.status_code, "internal" if exc.status_code >= 500 else "request")
        return JSONResponse(error_body(detail, kind), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("internal server error (see the server log)", "internal"), 500)


async def _send_error(
    send: Callable,
    status: int,
    message: str,
    error_type: str,
    close: bool = False,
    retry_after: int | None = None,
) -> None:
    """One error response; ``close`` ends the connection after it (the rest of the body is never read);
    ``retry_after`` (seconds) becomes a ``Retry-After`` header."""
    body = json.dumps(error_body(message, error_type)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PayloadLimitMiddleware:
    """413 for a body over ``max_bytes``, whether it declares its length or streams in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        message = (
            f"the request body is larger than {self.max_bytes} bytes: send a shorter input "
            "(or ask for fewer layers/heads)"
        )
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_error(send, 413, message, "payload_too_large", close=True)
        chunks: list[bytes] = []
        size = 0
        while True:  # read the whole (bounded) body first, then replay it to the app
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_error(send, 413, message, "payload_too_large", close=True)
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ApiKeyMiddleware:
    """``X-API-Key`` (or ``Authorization: Bearer``, what OpenAI clients send) on the API routes and ``/info``;
    ``/health``, ``/metrics``, ``/ui`` and the docs stay open (probes and scrapers carry no key; they reveal no
    model output)."""

    def __init__(self, app: ASGIApp, api_key: str, protected: tuple[str, ...]) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope.get("path") in self.protected:
            headers = dict(scope.get("headers", []))
            bearer = headers.get(b"authorization", b"")
            given = headers.get(b"x-api-key") or (bearer[7:] if bearer[:7].lower() == b"bearer " else b"")
            if not hmac.compare_digest(given, self.api_key):
                reason = "missing X-API-Key header" if not given else "wrong X-API-Key"
                return await _send_error(
                    send, 401, f"{reason}: this server requires an API key", "unauthorized"
                )
        await self.app(scope, receive, send)


class ConcurrencyLimitMiddleware:
    """429 ``overloaded`` once ``limit`` requests to one of ``paths`` are in flight in this API process, instead
    of a queue that grows until requests time out (TGI's ``max_concurrent_requests``). Counted per route, so
    slow generations cannot turn ``/fill-mask`` away. The 429 carries ``Retry-After: 1`` (seconds), the
    engine's shortest: a place frees as soon as any one of the ``limit`` requests ends."""

    retry_after = 1

    def __init__(self, app: ASGIApp, limit: int, paths: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = dict.fromkeys(paths, 0)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in self.in_flight:
            return await self.app(scope, receive, send)
        if self.in_flight[path] >= self.limit:
            message = (
                f"the server is busy ({self.in_flight[path]} requests to {path} in flight): retry in a moment"
            )
            return await _send_error(send, 429, message, "overloaded", retry_after=self.retry_after)
        self.in_flight[path] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[path] -= 1
