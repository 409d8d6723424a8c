"""``/openapi.json`` as the server really behaves, so that clients (and the schema fuzzer in the tests) can trust it.

FastAPI's generated document is refined once, on first request:

- every error is ``ErrorBody`` ``{"error", "error_type"}``, documented with the statuses the route really returns
  (400 malformed JSON, 401 missing key, 404 unknown model, 413 too large, 422 invalid, 429 overloaded,
  503 unavailable or draining, 504 queue timeout); FastAPI's ``{"detail"}`` shapes are gone;
- ``/generate_stream`` answers ``text/event-stream``; ``/health`` and ``/`` answer ``text/plain``;
- the limits of this server are in the request schemas: ``max_new_tokens`` ≤ the configured maximum, at most
  ``max_batch_inputs`` fill-mask texts, ``inputs`` not blank (and holding the mask token on ``/fill-mask``),
  ``model`` one of the served names.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.models import Catalog
from service.openai_models import TOKENIZER_ROUTES

ERROR_BODY = {
    "type": "object",
    "title": "ErrorBody",
    "description": "every error: a message naming the problem and its kind (TGI's shape)",
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
    "required": ["error", "error_type"],
    "additionalProperties": False,
}
ERROR_STATUSES = {
    "400": "malformed JSON body",
    "404": "unknown model",
    "413": "body, text or answer too large",
    "422": "invalid request (the message names the field)",
    "429": "too many requests in flight on this route",
    "503": "a server process died, or the server is shutting down",
    "504": "waited too long in the queue",
}
SSE = {  # before OpenAPI 3.2, ``schema`` describes one event
    "text/event-stream": {
        "schema": {
            "type": "object",
            "description": 'data: {"index", "token", "generated_text", "details"}, or {"error", "error_type"} last',
            "properties": {"data": {"type": "string", "contentMediaType": "application/json"}},
            "required": ["data"],
        }
    }
}
REQUESTS = {"FillMaskRequest": "encoder", "GenerateRequest": "decoder", "AttentionRequest": None}


def _error(description: str, shape: str = "ErrorBody") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}},
    }


def _text(description: str, media: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _texts(schema: dict[str, Any], pattern: str, max_items: int | None) -> None:
    """``inputs``: a non-blank string (matching ``pattern``), or a list of them."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch.update(minLength=1, pattern=pattern)
        elif branch.get("type") == "array":
            branch["items"].update(minLength=1, pattern=pattern)
            branch.update(minItems=1, **({"maxItems": max_items} if max_items else {}))


def refine(schema: dict[str, Any], catalog: Catalog, api_paths: tuple[str, ...], api_key: bool) -> None:
    """Make FastAPI's document say what the server does (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["ErrorBody"] = ERROR_BODY
    for path, operations in schema.get("paths", {}).items():
        openai_shaped = path.startswith("/v1/") or path in TOKENIZER_ROUTES  # service.openai_api's shape
        shape = "ErrorResponse" if openai_shaped and "ErrorResponse" in components else "ErrorBody"
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for response in responses.values():  # FastAPI's {"detail"} 422 is never what leaves the server
                for media in response.get("content", {}).values():
                    if media.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        media["schema"] = {"$ref": f"#/components/schemas/{shape}"}
            if path in api_paths:
                for status, description in ERROR_STATUSES.items():
                    responses[str(status)] = _error(description, shape)
                if api_key:
                    responses["401"] = _error("missing or wrong X-API-Key", shape)
            else:
                responses["503"] = _error("the server is shutting down")
            if path == "/generate_stream":
                responses["200"] = {"description": "one server-sent event per token (TGI)", "content": SSE}
            if path in ("/health", "/"):
                responses["200"] = _text("ok")
                responses["503"] = {
                    "description": "not ready (text), or shutting down (ErrorBody)",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}},
                    },
                }
            if path == "/info" and api_key:
                responses["401"] = _error("missing or wrong X-API-Key")
    limits = catalog.limits
    mask_ok = all(catalog.tokenizers[n].token_to_id("[MASK]") is not None for n in catalog.names("encoder"))
    for name, kind in REQUESTS.items():
        request = components.get(name)
        if request is None:
            continue
        properties = request["properties"]
        pattern = r"\[MASK\]" if name == "FillMaskRequest" and mask_ok else r"\S"
        _texts(properties["inputs"], pattern, limits.max_batch_inputs if name == "FillMaskRequest" else None)
        names = catalog.names(kind)
        properties["model"]["anyOf"] = [{"type": "string", "enum": names}, {"type": "null"}]
    parameters = components.get("GenerateParameters")
    if parameters is not None:
        parameters["properties"]["max_new_tokens"]["maximum"] = limits.max_new_tokens
    fill = components.get("FillMaskParameters")
    if fill is not None:
        for branch in fill["properties"]["targets"]["anyOf"]:
            if branch.get("type") == "array":
                branch.update(minItems=1, maxItems=100)


def install_openapi(app: FastAPI, catalog: Catalog, api_paths: tuple[str, ...], api_key: bool) -> None:
    """Serve the refined document at ``/openapi.json`` (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if not getattr(app, "_refined", False):
            refine(generate(), catalog, api_paths, api_key)
            app._refined = True
        return app.openapi_schema

    app.openapi = openapi
