"""The OpenAI wire format, without the server: errors, validation, chat prompts, log-probs.

Everything here is a pure function of its inputs (tested directly in ``tests/service/test_openai_format.py``);
``service.openai_api`` wires it to the routes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from tokenizers import Tokenizer

M = TypeVar("M", bound=BaseModel)

# ---- errors: {"error": {"message", "type", "param", "code"}} -------------------------------------------------
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class OpenAIError(Exception):
    """A request the OpenAI routes refuse: status, message, the field at fault (``param``) and a ``code``."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,  # seconds, for a 429
    ):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.status, self.param, self.code)


def error_body(
    message: str, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else ERROR_TYPES.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _param(loc: Sequence[Any]) -> str | None:
    """pydantic's location → OpenAI's ``param`` (``messages.0.content``), without union-member tags."""
    parts = []
    for part in loc:
        text = str(part)
        if text == "body" or any(c in text for c in "[(") or text in ("str", "int", "float", "bool"):
            continue
        if text.startswith(("list", "function-", "literal")):
            continue
        parts.append(text)
    return ".".join(parts) or None


def parse_body(raw: bytes, model: type[M]) -> M:
    """The JSON body validated as ``model``, or an ``OpenAIError`` (400) naming the first field at fault."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OpenAIError(
            f"the body is not valid JSON ({error}): send a JSON object", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise OpenAIError("the body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        custom_kinds = ("unsupported", "out_of_range", "invalid", "empty_input")
        custom = [e for e in errors if e["type"] in custom_kinds]
        first = (custom or errors)[0]
        param = (first.get("ctx") or {}).get("param") or _param(first["loc"])
        if first["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        elif first["type"] == "missing":
            message = f"{param}: required"
        elif param is None or first["msg"].startswith(param):
            message = first["msg"]
        else:
            message = f"{param}: {first['msg']}"
        code = first["type"] if first["type"] in ("unsupported", "extra_forbidden") else "invalid_value"
        raise OpenAIError(message, 400, param, code) from None


# ---- chat: messages → one prompt for a plain language model --------------------------------------------------
CHAT_ROLES = {"system": "Sistema", "developer": "Sistema", "user": "Usuario", "assistant": "Asistente"}
CHAT_STOPS = ("\nUsuario:", "\nSistema:")
CHAT_FORMAT = (
    "the shipped decoders are plain language models, not chat models: each message becomes a line "
    "'Rol: contenido' (Sistema, Usuario, Asistente), then 'Asistente:' is appended and generation stops at "
    "'\\nUsuario:' or '\\nSistema:'"
)


def chat_prompt(messages: Sequence[tuple[str, str]]) -> str:
    """``[(role, text), …]`` → ``"Usuario: hola\\nAsistente:"`` (see ``CHAT_FORMAT``)."""
    lines = [f"{CHAT_ROLES[role]}: {text}" for role, text in messages]
    return "\n".join([*lines, "Asistente:"])


# ---- tokens as OpenAI shows them ------------------------------------------------------------------------------
def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A token's text; a token that is not whole UTF-8 on its own (a byte of a longer character) is shown as the
    tokenizer's own symbol for it, so that distinct tokens keep distinct strings."""
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    if "\ufffd" in text or not text and tokenizer.id_to_token(token_id):
        return tokenizer.id_to_token(token_id) or text
    return text


def token_bytes(tokenizer: Tokenizer, token_id: int) -> list[int] | None:
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return None if "\ufffd" in text else list(text.encode("utf-8"))


def top_dict(tokenizer: Tokenizer, top: Sequence[Sequence[Any]], chosen: tuple[int, float] | None) -> dict:
    """OpenAI's ``{token: logprob}`` of the best alternatives, plus the chosen token (it is always listed).
    A later entry never overwrites an earlier, better one with the same text."""
    entries: dict[str, float] = {}
    for token_id, value in [*top, *([chosen] if chosen else [])]:
        entries.setdefault(token_text(tokenizer, int(token_id)), float(value))
    return entries


def prefix_offsets(tokenizer: Tokenizer, ids: Sequence[int]) -> list[int]:
    """Where each token starts in ``decode(ids)`` (special tokens skipped): the decoded length of its prefix."""
    return [len(tokenizer.decode(list(ids[:i]), skip_special_tokens=True)) for i in range(len(ids))]


class CompletionLogprobs:
    """The legacy completions ``logprobs`` object, built token by token."""

    def __init__(self, tokenizer: Tokenizer, n: int) -> None:
        self.tokenizer, self.n = tokenizer, n
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []

    def add(self, token_id: int, logprob: float | None, top: Sequence[Sequence[Any]], offset: int) -> None:
        self.tokens.append(token_text(self.tokenizer, token_id))
        self.token_logprobs.append(logprob)
        chosen = None if logprob is None else (token_id, logprob)
        self.top_logprobs.append(None if logprob is None else top_dict(self.tokenizer, top[: self.n], chosen))
        self.text_offset.append(offset)

    def take(self) -> dict[str, list]:
        """Everything added since the last ``take`` (a stream sends each token's entry once)."""
        out = {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        }
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        return out


def chat_logprob(tokenizer: Tokenizer, token_id: int, logprob: float, top: Sequence[Sequence[Any]]) -> dict:
    """One entry of chat's ``logprobs.content``."""
    return {
        "token": token_text(tokenizer, token_id),
        "logprob": logprob,
        "bytes": token_bytes(tokenizer, token_id),
        "top_logprobs": [
            {"token": token_text(tokenizer, i), "logprob": v, "bytes": token_bytes(tokenizer, i)}
            for i, v in top
        ],
    }


def finish_reason(reason: str | None) -> str | None:
    """Our finish reasons (``length``, ``eos_token``, ``stop_sequence``) → OpenAI's (``length``, ``stop``)."""
    return None if reason is None else "length" if reason == "length" else "stop"


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined (for ``openapi_extra``, which has no components)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def documented(model: type, names: list[str]) -> dict[str, Any]:
    """A request body for ``openapi_extra``: the model's schema inlined, ``model`` one of ``names`` (so that
    clients and the schema fuzzer find the served decoders)."""
    schema = inline_refs(model.model_json_schema())
    field = schema["properties"]["model"]
    for branch in field.get("anyOf", [field]):
        if branch.get("type") == "string":
            branch["enum"] = names
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
