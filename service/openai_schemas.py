"""Request and response bodies of the OpenAI-compatible routes (``service.openai_api``), as OpenAI defines them.

Only what a plain language model can honour is accepted: ``presence_penalty``, ``frequency_penalty``,
``logit_bias``, ``suffix``, ``best_of`` > 1, tools and response formats other than text are refused with a 400
naming the field, rather than silently ignored. Unknown fields are refused too (OpenAI does the same).
Extensions several servers accept: ``top_k`` (vLLM) on both routes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

STRICT = ConfigDict(extra="forbid", strict=True)  # "1" is not 1, 1 is not true, as in OpenAI
MAX_STOPS = 8
MAX_LOGPROBS = 20


def _unsupported(field: str, hint: str = "leave it unset") -> PydanticCustomError:
    return PydanticCustomError(
        "unsupported", f"{field} is not supported by this server; {hint}", {"param": field}
    )


def _invalid(field: str, message: str, kind: str = "invalid") -> PydanticCustomError:
    """An error about ``field`` raised by a model validator (the field travels as ``param``)."""
    return PydanticCustomError(kind, f"{field}: {message}", {"param": field})


def _stops(value: str | list[str] | None) -> list[str]:
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if len(stops) > MAX_STOPS:
        raise PydanticCustomError("out_of_range", f"at most {MAX_STOPS} stop sequences")
    if any(not s for s in stops):
        raise PydanticCustomError("out_of_range", "stop sequences must be non-empty strings")
    return stops


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = Field(False, description="send a last chunk with the token counts (empty choices)")


class Sampled(BaseModel):
    """The fields both routes share."""

    model_config = STRICT
    model: StrictStr = Field(description="a served decoder's id (GET /v1/models)")
    temperature: float | None = Field(1.0, ge=0, le=2, description="0: greedy; OpenAI's default 1 samples")
    top_p: float | None = Field(1.0, gt=0, le=1)
    top_k: StrictInt | None = Field(None, ge=-1, description="vLLM's extension; -1 or null: off")
    n: StrictInt = Field(1, ge=1, le=16, description="choices per prompt")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = Field(
        None, description="up to 8; not part of the returned text"
    )
    seed: StrictInt | None = Field(None, ge=-(2**63), lt=2**64, description="the same seed repeats a sample")
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, description="accepted and ignored")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str]:
        return _stops(value)

    @model_validator(mode="after")
    def _shared(self) -> Sampled:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise _unsupported(name, "send 0 or leave it unset")
        if self.logit_bias:
            raise _unsupported("logit_bias")
        if self.stream_options is not None and not self.stream:
            raise _invalid("stream_options", "only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


Prompt = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class CompletionRequest(Sampled):
    """``POST /v1/completions``."""

    prompt: Prompt = Field(
        description="a string, a list of strings, a list of token ids, or a list of such lists "
        "(strings get the tokenizer's BOS token; token ids are used as they are)"
    )
    max_tokens: StrictInt | None = Field(16, ge=0, description="0 only with echo: score the prompt alone")
    logprobs: StrictInt | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="log-probabilities of each token and of the N best"
    )
    echo: bool = Field(False, description="return the prompt too, with its tokens' log-probabilities")
    best_of: StrictInt | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or any(isinstance(v, list) and not v for v in value)):
            raise PydanticCustomError("empty_input", "an empty list: send text or token ids")
        return value

    @model_validator(mode="after")
    def _completion(self) -> CompletionRequest:
        if self.best_of not in (None, 1):
            raise _unsupported("best_of", "send 1, or use n for several choices")
        if self.suffix:
            raise _unsupported("suffix")
        if self.max_tokens == 0 and not self.echo:
            raise _invalid("max_tokens", "0 is only allowed with echo", "out_of_range")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts (strings or token-id lists)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(v, int) for v in p):
            return [list(p)]
        return list(p)


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(BaseModel):
    model_config = STRICT
    type: Literal["text"]


class ChatCompletionRequest(Sampled):
    """``POST /v1/chat/completions`` (the messages become one prompt: ``service.openai_api.chat_prompt``)."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(None, ge=1, description="default: the server's max_new_tokens limit")
    max_completion_tokens: StrictInt | None = Field(None, ge=1, description="the same as max_tokens")
    logprobs: bool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None

    @model_validator(mode="after")
    def _chat(self) -> ChatCompletionRequest:
        if self.tools or self.tool_choice not in (None, "none"):
            raise _unsupported("tools", "these models do not call tools")
        if self.top_logprobs and not self.logprobs:
            raise _invalid("top_logprobs", "needs logprobs set to true")
        return self


# ---- responses (documented in /openapi.json; the routes build plain dicts) ------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int
    chat_format: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


# ---- the tokenizer routes (vLLM's shapes, which lm-evaluation-harness's remote tokenizer reads) ---------------
class TokenizeRequest(BaseModel):
    model_config = STRICT
    prompt: StrictStr
    add_special_tokens: bool = True
    model: StrictStr | None = None


class DetokenizeRequest(BaseModel):
    model_config = STRICT
    tokens: list[StrictInt] = Field(max_length=100_000)
    model: StrictStr | None = None
