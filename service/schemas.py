"""Request and response bodies, in the shapes users already know (they appear in ``/openapi.json``).

- ``/fill-mask``: the Hugging Face fill-mask pipeline, ``{"inputs": str | [str], "parameters": {"top_k",
  "targets"}}`` → ``[{"score", "token", "token_str", "sequence"}]`` (a list per mask, a list per input).
- ``/generate`` and ``/generate_stream``: Text Generation Inference (TGI), ``{"inputs", "parameters":
  {max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty, seed, stop, return_full_text,
  details}}``. As in TGI, setting ``temperature``, ``top_k`` or ``top_p`` turns sampling on.
- ``/attention``: ``{"inputs": str, "parameters": {"layers", "heads", "target", "encoding", "gradient",
  "translation"}}`` → the dict of ``service.inspection.analyse`` (a translator's: ``service.translation_inspection``).
- ``/translate``: the Hugging Face translation pipeline, ``{"inputs": str | [str], "parameters":
  {"max_new_tokens", "num_beams", "length_penalty"}}`` → ``[{"translation_text"}]``.

Every request may name a served model with a top-level ``"model"`` (default: the first of its kind). What can
be checked without the model's weights is checked here, in the API process, so a bad request never reaches a
worker: an unknown model is a 404, a prompt over the token limit a 413; everything else a 422. Custom pydantic
error types (``unknown_model``, ``too_long``, …) carry that kind to ``service.errors``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.models import active_catalog

# strict: a string is not an integer, 0 is not a boolean (an integer is still a float); no unknown fields
STRICT = ConfigDict(extra="forbid", strict=True)


def _utf8(text: str) -> str:
    """JSON may carry lone surrogates (``"\\ud800"``) that no UTF-8 tokenizer can read: reject them here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PydanticCustomError(
            "invalid_text",
            "has a lone surrogate ({char}) at character {position}, which is not text: send valid Unicode",
            {"char": f"\\u{ord(text[error.start]):04x}", "position": error.start},
        ) from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("empty_input", "is empty: send some text")
    return text


def _batch_of_texts(value: str | list[str]) -> str | list[str]:
    """A text or a non-empty list of non-blank texts, at most the served batch size (422 beyond it)."""
    texts = [value] if isinstance(value, str) else value
    catalog = active_catalog()
    cap = catalog.limits.max_batch_inputs if catalog else 32
    if not texts:
        raise PydanticCustomError("empty_input", "is an empty list: send at least one text")
    if len(texts) > cap:
        raise PydanticCustomError("out_of_range", f"has {len(texts)} texts, at most {cap} per request")
    for text in texts:
        _not_blank(text)
    return value


def _check_model(name: str | None, kind: str | None) -> None:
    catalog = active_catalog()
    if catalog is None:
        return
    try:
        catalog.find(name, kind)
    except Exception as error:  # InputError: its message names the known models
        raise PydanticCustomError("unknown_model", str(error)) from None


class Stamped(BaseModel):
    """Remembers when the API process accepted the request (for time-to-first-token)."""

    _received: float = PrivateAttr(default_factory=time.time)

    @property
    def received(self) -> float:
        return self._received


# ---- fill-mask ------------------------------------------------------------------------------------------------
class FillMaskParameters(BaseModel):
    model_config = STRICT
    top_k: int = Field(5, ge=1, le=100, description="candidates per mask")
    targets: Text | list[Text] | None = Field(
        None, description="score only these tokens (a word outside the vocabulary counts as its first token)"
    )

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        value = [value] if isinstance(value, str) else value
        if not 1 <= len(value) <= 100:
            raise PydanticCustomError("out_of_range", "give between 1 and 100 targets")
        return [_not_blank(v) for v in value]


class FillMaskRequest(Stamped):
    model_config = STRICT
    inputs: Text | list[Text] = Field(description="text with the mask token, e.g. 'El [MASK] duerme.'")
    parameters: FillMaskParameters = Field(default_factory=FillMaskParameters)
    model: Text | None = Field(None, description="a served encoder's name; default: the first")
    options: dict[str, Any] | None = Field(None, description="accepted for the HF Inference API; ignored")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        return _batch_of_texts(value)

    @model_validator(mode="after")
    def _model(self) -> FillMaskRequest:
        _check_model(self.model, "encoder")
        return self


class FillMaskCandidate(BaseModel):
    score: float
    token: int
    token_str: str
    sequence: str


# one input: its candidates, or one list per mask; several inputs: one such answer each (shapes may mix)
FillMaskResponse = (
    list[FillMaskCandidate]
    | list[list[FillMaskCandidate]]
    | list[list[FillMaskCandidate] | list[list[FillMaskCandidate]]]
)


# ---- generate (TGI) -------------------------------------------------------------------------------------------
UNSUPPORTED = (
    "best_of",
    "truncate",
    "typical_p",
    "watermark",
    "frequency_penalty",
    "grammar",
    "adapter_id",
)


class GenerateParameters(BaseModel):
    model_config = STRICT
    max_new_tokens: int = Field(20, ge=1, description="bounded by the server's max_new_tokens limit")
    do_sample: bool = False
    temperature: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    repetition_penalty: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: list[Text] = Field(default_factory=list, max_length=8)
    return_full_text: bool = False
    details: bool = False
    decoder_input_details: bool = False
    # TGI parameters this server does not implement: accepted only while unset, so clients that send nulls work
    best_of: Any = None
    truncate: Any = None
    typical_p: Any = None
    watermark: Any = None
    top_n_tokens: int | None = Field(None, ge=0, le=5, description="the N most likely tokens at each step")
    frequency_penalty: Any = None
    grammar: Any = None
    adapter_id: Any = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise PydanticCustomError("out_of_range", "stop sequences must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _supported(self) -> GenerateParameters:
        for name in UNSUPPORTED:
            value = getattr(self, name)
            if value not in (None, False) and not (name == "best_of" and value == 1):
                raise PydanticCustomError(
                    "unsupported", f"{name} is not supported by this server; leave it unset"
                )
        if self.decoder_input_details:
            raise PydanticCustomError("unsupported", "decoder_input_details is not supported by this server")
        catalog = active_catalog()
        if catalog and self.max_new_tokens > catalog.limits.max_new_tokens:
            raise PydanticCustomError(
                "out_of_range",
                f"max_new_tokens is {self.max_new_tokens}, this server allows at most "
                f"{catalog.limits.max_new_tokens}",
            )
        return self

    @property
    def sampling(self) -> bool:
        """TGI's rule: any of temperature / top_k / top_p turns sampling on."""
        return self.do_sample or any(v is not None for v in (self.temperature, self.top_k, self.top_p))


class GenerateRequest(Stamped):
    model_config = STRICT
    inputs: Text = Field(description="the prompt")
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool | None = Field(None, description="sent by some clients; the route decides")
    model: Text | None = Field(None, description="a served decoder's name; default: the first")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: str) -> str:
        return _not_blank(value)

    @model_validator(mode="after")
    def _fits(self) -> GenerateRequest:
        _check_model(self.model, "decoder")
        catalog = active_catalog()
        if catalog is None:
            return self
        served = catalog.find(self.model, "decoder")
        n = len(catalog.tokenizers[served.name].encode(self.inputs).ids)
        cap = min(catalog.limits.max_input_tokens, served.max_len - 1)
        if n > cap:
            raise PydanticCustomError(
                "too_long", f"inputs: {n} tokens, more than the {cap} allowed: send a shorter prompt"
            )
        return self


class Token(BaseModel):
    id: int
    text: str
    logprob: float | None
    special: bool


class Details(BaseModel):
    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    seed: int | None
    prefill: list[Token] = Field(default_factory=list)
    tokens: list[Token]
    top_tokens: list[list[Token]] = Field(default_factory=list, description="with top_n_tokens: per token")


class GenerateResponse(BaseModel):
    generated_text: str
    details: Details | None = None


# ---- attention ------------------------------------------------------------------------------------------------
class AttentionParameters(BaseModel):
    model_config = STRICT
    layers: list[int] | None = Field(None, max_length=256, description="layer indices; default all")
    heads: list[int] | None = Field(None, max_length=256, description="head indices; default all")
    target: int | None = Field(None, ge=0, description="token position the gradient explains")
    encoding: Literal["auto", "dense", "layout"] = "auto"
    gradient: bool = True
    translation: str | None = Field(
        None,
        max_length=10_000,
        description="translator: the target text to inspect; default its own translation",
    )


class AttentionRequest(Stamped):
    model_config = STRICT
    inputs: Text = Field(description="the text to inspect")
    parameters: AttentionParameters = Field(default_factory=AttentionParameters)
    model: Text | None = Field(None, description="any served model's name; default: the first encoder")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: str) -> str:
        return _not_blank(value)

    @model_validator(mode="after")
    def _model(self) -> AttentionRequest:
        _check_model(self.model, None)
        return self


# ---- translate (the Hugging Face translation pipeline) ----------------------------------------------------------
class TranslateParameters(BaseModel):
    model_config = STRICT
    max_new_tokens: int = Field(128, ge=1, description="bounded by the server's max_new_tokens limit")
    num_beams: int = Field(4, ge=1, le=16, description="beam size; 1 = greedy")
    length_penalty: float = Field(
        1.0, ge=-10, le=10, allow_inf_nan=False, description="beam score / length ** length_penalty"
    )

    @model_validator(mode="after")
    def _limits(self) -> TranslateParameters:
        catalog = active_catalog()
        if catalog and self.max_new_tokens > catalog.limits.max_new_tokens:
            raise PydanticCustomError(
                "out_of_range",
                f"max_new_tokens is {self.max_new_tokens}, this server allows at most "
                f"{catalog.limits.max_new_tokens}",
            )
        return self


class TranslateRequest(Stamped):
    model_config = STRICT
    inputs: Text | list[Text] = Field(description="Spanish text, or a list of texts")
    parameters: TranslateParameters = Field(default_factory=TranslateParameters)
    model: Text | None = Field(None, description="a served translator's name; default: the first")
    options: dict[str, Any] | None = Field(None, description="accepted for the HF Inference API; ignored")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        return _batch_of_texts(value)

    @model_validator(mode="after")
    def _fits(self) -> TranslateRequest:
        _check_model(self.model, "translator")
        catalog = active_catalog()
        if catalog is None:
            return self
        served = catalog.find(self.model, "translator")
        cap = min(catalog.limits.max_input_tokens, served.max_len - 1)
        texts = [self.inputs] if isinstance(self.inputs, str) else self.inputs
        for index, text in enumerate(texts):
            n = len(catalog.tokenizers[served.name].encode(text, add_special_tokens=False).ids)
            if n > cap:
                where = "inputs" if isinstance(self.inputs, str) else f"inputs[{index}]"
                raise PydanticCustomError(
                    "too_long", f"{where}: {n} tokens, more than the {cap} allowed: send a shorter text"
                )
        return self


class TranslationText(BaseModel):
    translation_text: str


TranslateResponse = list[TranslationText]
