"""The served decoders as OpenAI lists them (``GET /v1/models``, ``/v1/models/{id}``), and their tokenizer in vLLM's
shapes (``GET /tokenizer_info``, ``POST /tokenize``, ``POST /detokenize``), which lm-evaluation-harness's
``local-completions`` detects and uses as its tokenizer (no tokenizer files needed). Errors in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

from service.models import ServedModel, active_catalog
from service.openai_format import CHAT_FORMAT, OpenAIError, documented, parse_body
from service.openai_schemas import DetokenizeRequest, ErrorResponse, ModelCard, ModelList, TokenizeRequest

TOKENIZER_ROUTES = ("/tokenize", "/detokenize", "/tokenizer_info")


def model_card(model: ServedModel) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": int((Path(model.path) / "config.json").stat().st_mtime),
        "owned_by": "atencion",
        "max_model_len": model.max_len,
        "chat_format": CHAT_FORMAT,
    }


def install_models(
    app: FastAPI, decoders: list[ServedModel], decoder: Callable[[str], ServedModel], errors: dict[int, Any]
) -> None:
    """Add the model and tokenizer routes; ``decoder(name)`` is the served decoder or an ``OpenAIError`` 404."""
    by_name = {m.name: m for m in decoders}
    names = list(by_name)

    def not_served(name: str) -> JSONResponse:
        error = OpenAIError(f"The model {name!r} does not exist here", 404, "model", "model_not_found")
        return JSONResponse(error.body(), 404)

    async def list_models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card(m) for m in decoders]})

    async def get_model(model_id: str) -> JSONResponse:
        return JSONResponse(model_card(by_name[model_id])) if model_id in by_name else not_served(model_id)

    def tokenizer_of(name: str | None) -> tuple[ServedModel, Any]:
        served = decoder(name) if name else decoders[0]
        return served, active_catalog().tokenizers[served.name]

    async def tokenizer_info(model: str | None = None) -> JSONResponse:
        try:
            served, tokenizer = tokenizer_of(model)
        except OpenAIError as error:
            return JSONResponse(error.body(), error.status)
        config = served.config
        name = tokenizer.id_to_token
        return JSONResponse(
            {
                "model": served.name,
                "tokenizer_class": "tokenizers.Tokenizer",
                "bos_token": name(config["bos_token_id"]) if config.get("bos_token_id") is not None else None,
                "eos_token": name(config["eos_token_id"]) if config.get("eos_token_id") is not None else None,
                "pad_token": name(config["pad_token_id"]) if config.get("pad_token_id") is not None else None,
                "model_max_length": served.max_len,
                "vocab_size": int(config["vocab_size"]),
            }
        )

    async def tokenize(request: Request) -> JSONResponse:
        try:
            body = parse_body(await request.body(), TokenizeRequest)
            served, tokenizer = tokenizer_of(body.model)
        except OpenAIError as error:
            return JSONResponse(error.body(), error.status)
        ids = tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens).ids
        return JSONResponse(
            {"model": served.name, "count": len(ids), "max_model_len": served.max_len, "tokens": ids}
        )

    async def detokenize(request: Request) -> JSONResponse:
        try:
            body = parse_body(await request.body(), DetokenizeRequest)
            served, tokenizer = tokenizer_of(body.model)
            vocab = int(served.config["vocab_size"])
            bad = next((i for i in body.tokens if not 0 <= i < vocab), None)
            if bad is not None:
                raise OpenAIError(f"tokens: id {bad} is outside the vocabulary [0, {vocab})", param="tokens")
        except OpenAIError as error:
            return JSONResponse(error.body(), error.status)
        return JSONResponse(
            {"model": served.name, "prompt": tokenizer.decode(body.tokens, skip_special_tokens=False)}
        )

    app.add_api_route("/v1/models", list_models, methods=["GET"], summary="served completion models",
                      responses={200: {"model": ModelList}})  # fmt: skip
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"], summary="one served model",
                      responses={200: {"model": ModelCard}, 404: {"model": ErrorResponse}})  # fmt: skip
    app.add_api_route("/tokenizer_info", tokenizer_info, methods=["GET"], summary="the tokenizer's special tokens (vLLM)",
                      responses={404: {"model": ErrorResponse}})  # fmt: skip
    app.add_api_route("/tokenize", tokenize, methods=["POST"], summary="text → token ids (vLLM)",
                      openapi_extra=documented(TokenizeRequest, names), responses=errors)  # fmt: skip
    app.add_api_route("/detokenize", detokenize, methods=["POST"], summary="token ids → text (vLLM)",
                      openapi_extra=documented(DetokenizeRequest, names), responses=errors)  # fmt: skip
