"""The OpenAI-compatible API: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, and the tokenizer.

Routes (every served decoder; encoders are not completion models)
- ``POST /v1/completions``: ``prompt`` as a string, a list of strings, token ids or a list of id lists;
  ``max_tokens``, ``temperature`` (0: greedy), ``top_p``, ``stop``, ``seed``, ``n``, ``stream`` (server-sent
  events ``data: {...}`` ending with ``data: [DONE]``), ``stream_options.include_usage``, ``logprobs`` (the N
  best per token), ``echo`` (the prompt too, with its tokens' log-probabilities: what lm-evaluation-harness's
  ``local-completions`` sends to score a continuation), ``usage``, ``finish_reason`` ``stop`` / ``length``.
- ``POST /v1/chat/completions``: the messages become one prompt (``service.openai_format.CHAT_FORMAT``),
  answered and streamed the same way.
- ``GET /v1/models``, ``GET /v1/models/{id}``; ``GET /tokenizer_info``, ``POST /tokenize``, ``POST /detokenize``
  in vLLM's shapes, which lm-evaluation-harness detects and uses as its tokenizer (no tokenizer files needed).
- Errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; a bad field is a 400 naming it.

How a request runs: the route validates and tokenizes it in the API process (``CompletionsSpec``), puts one
``Job`` per choice on the queue of ``CompletionsAPI``'s worker, and reads each job's events back: the prompt's
log-probabilities when asked for, then one event per token. The worker's whole contract is ``run_job`` — the
one function to change when the decoding engine changes. Formatting (stop sequences cut out, log-prob objects,
SSE chunks) happens in the API process. A ``LitSpec`` is how LitServe lets one API own custom routes: these
routes answer a streamed or a whole response from the same path, and give 4xx statuses that LitServe's own
stream handler cannot (it answers 200 before the worker has run).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import FastAPI, Request
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem
from starlette.responses import JSONResponse, Response, StreamingResponse

from modeling.generation import Sampling, stream_tokens
from modeling.logprobs import prompt_logprobs
from service.metrics import BATCH_SIZE, FINISH_REASON, FIRST_TOKEN, GENERATED_TOKENS, INPUT_TOKENS
from service.models import ServedModel, active_catalog, load_for_worker
from service.openai_format import (
    CHAT_FORMAT,
    CHAT_STOPS,
    CompletionLogprobs,
    OpenAIError,
    TextStream,
    chat_logprob,
    chat_prompt,
    error_body,
    finish_reason,
    inline_refs,
    parse_body,
    prefix_offsets,
)
from service.openai_schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    Sampled,
    TokenizeRequest,
)
from service.settings import Limits

ROUTE = "/v1/completions"
CHAT_ROUTE = "/v1/chat/completions"
GENERATION_ROUTES = (ROUTE, CHAT_ROUTE)
TOKENIZER_ROUTES = ("/tokenize", "/detokenize", "/tokenizer_info")


@dataclass
class Job:
    """One choice to run: a tokenized prompt and how to continue it."""

    model: str
    route: str
    prompt_ids: list[int]
    sampling: Sampling
    max_tokens: int  # 0: score the prompt only
    top_n: int  # alternatives per token
    score_prompt: bool  # send the prompt's log-probabilities first
    received: float


# ---- the worker ------------------------------------------------------------------------------------------------
def run_job(checkpoint: Any, job: Job) -> Iterator[dict[str, Any]]:
    """A job's events: ``{"kind": "prompt", "logprobs": [null | [logprob, [[id, logprob], …]], …]}`` if asked
    for, then ``{"kind": "token", "id", "text", "logprob", "special", "finish_reason", "top"}`` per token."""
    if job.score_prompt:
        scored = prompt_logprobs(checkpoint.model, job.prompt_ids, job.top_n)
        rows = [None if s is None else [s.logprob, [list(t) for t in s.top]] for s in scored]
        yield {"kind": "prompt", "logprobs": rows}
    if job.max_tokens == 0:
        return
    tokens = stream_tokens(checkpoint.model, checkpoint.tokenizer, job.prompt_ids, job.sampling, job.top_n)
    for token in tokens:
        yield {
            "kind": "token",
            "id": token.id,
            "text": token.text,
            "logprob": token.logprob,
            "special": token.special,
            "finish_reason": token.finish_reason,
            "top": [list(t) for t in token.top_logprobs],
        }


class CompletionsAPI(ls.LitAPI):
    """The worker behind both generation routes: loads the decoders, runs ``run_job`` per queued ``Job``."""

    def __init__(self, models: list[ServedModel], limits: Limits) -> None:
        super().__init__(max_batch_size=1, spec=CompletionsSpec(models, limits))
        self.served = [m for m in models if m.kind == "decoder"]
        self.threads = 1  # torch threads in the worker; service.app sets it from the core count

    def setup(self, device: str) -> None:
        self.checkpoints = load_for_worker(self.served, "decoder", device, self.threads)

    def decode_request(self, request: Job) -> Job:
        return request

    def predict(self, job: Job) -> Iterator[dict[str, Any]]:
        BATCH_SIZE.labels(path=job.route).observe(1)
        INPUT_TOKENS.labels(path=job.route).inc(len(job.prompt_ids))
        count = 0
        try:
            for event in run_job(self.checkpoints[job.model], job):
                if event["kind"] == "token":
                    if count == 0:
                        FIRST_TOKEN.labels(path=job.route).observe(max(0.0, time.time() - job.received))
                    count += 1
                    GENERATED_TOKENS.labels(path=job.route).inc()
                    if event["finish_reason"]:
                        FINISH_REASON.labels(reason=event["finish_reason"]).inc()
                yield event
        except Exception as error:  # the route reports it; the worker keeps serving
            yield {"kind": "error", "message": f"generation failed: {error}", "status": 500}

    def encode_response(self, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from events


# ---- one choice, as its events arrive ---------------------------------------------------------------------------
class Choice:
    """Turns one job's events into OpenAI text, log-probs and finish reason (whole, or as stream deltas)."""

    def __init__(self, index: int, job: Job, request: Sampled, tokenizer: Any, chat: bool) -> None:
        self.index, self.job, self.tokenizer, self.chat = index, job, tokenizer, chat
        self.text = TextStream(job.sampling.stop, lstrip=chat)
        echo = not chat and request.echo
        self.echo = tokenizer.decode(job.prompt_ids) if echo else ""
        wanted = not chat and request.logprobs is not None
        self.logprobs = CompletionLogprobs(tokenizer, job.top_n) if wanted else None
        self.chat_logprobs: list[dict] | None = [] if chat and request.logprobs else None
        self.raw_length = len(self.echo)  # characters before the next token, for text_offset
        self.generated = 0
        self.finish: str | None = "length" if job.max_tokens == 0 else None

    def feed(self, event: dict[str, Any]) -> str:
        """Take one event; return the text that may be sent now."""
        kind = event["kind"]
        if kind == "error":
            raise OpenAIError(event["message"], event.get("status", 500), code="generation_failed")
        if kind == "prompt":
            if self.logprobs is not None:
                offsets = prefix_offsets(self.tokenizer, self.job.prompt_ids)
                for token_id, row, offset in zip(
                    self.job.prompt_ids, event["logprobs"], offsets, strict=True
                ):
                    logprob, top = (None, []) if row is None else row
                    self.logprobs.add(token_id, logprob, top, offset)
            return ""
        piece = "" if event["special"] else event["text"]
        self.generated += 1
        if self.logprobs is not None:
            self.logprobs.add(event["id"], event["logprob"], event["top"], self.raw_length)
        if self.chat_logprobs is not None:
            self.chat_logprobs.append(
                chat_logprob(self.tokenizer, event["id"], event["logprob"], event["top"][: self.job.top_n])
            )
        self.raw_length += len(piece)
        done = event["finish_reason"] is not None
        new = self.text.add(piece, final=done)
        if done:
            self.finish = finish_reason(event["finish_reason"])
        return new

    def logprobs_delta(self) -> dict[str, Any] | None:
        if self.logprobs is not None:
            return self.logprobs.take()
        if self.chat_logprobs:
            content, self.chat_logprobs = self.chat_logprobs, []
            return {"content": content}
        return None

    def whole(self) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": self.text.result}
            return {
                "index": self.index,
                "message": message,
                "logprobs": self.logprobs_delta(),
                "finish_reason": self.finish,
            }
        return {
            "index": self.index,
            "text": self.echo + self.text.result,
            "logprobs": self.logprobs_delta(),
            "finish_reason": self.finish,
        }


async def merged(streams: list[AsyncIterator[dict]]) -> AsyncIterator[tuple[int, dict]]:
    """The events of several streams as they come, tagged with the stream's index."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[dict]) -> None:
        try:
            async for event in stream:
                await queue.put((i, event))
        except Exception as error:  # a broken stream is that choice's error, not the server's
            await queue.put((i, {"kind": "error", "message": f"generation failed: {error}", "status": 500}))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    finished = 0
    try:
        while finished < len(tasks):
            i, event = await queue.get()
            if event is None:
                finished += 1
            else:
                yield i, event
    finally:
        for task in tasks:
            task.cancel()


# ---- the routes (API process) -----------------------------------------------------------------------------------
def sampling_of(request: Sampled, max_tokens: int, choice: int, stops: tuple[str, ...]) -> Sampling:
    """OpenAI's parameters → ``Sampling``; choice ``i`` of a seeded request samples with ``seed + i``."""
    sample = request.temperature != 0
    seed = None
    if sample:
        seed = (request.seed + choice) % 2**63 if request.seed is not None else random.randrange(2**63)
    top_p = request.top_p if request.top_p is not None and request.top_p < 1 else None
    top_k = request.top_k if request.top_k is not None and request.top_k > 0 else None
    return Sampling(
        max_new_tokens=max(1, max_tokens),
        do_sample=sample,
        temperature=request.temperature if sample and request.temperature is not None else 1.0,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop=tuple(request.stop or ()) + stops,
    )


class CompletionsSpec(LitSpec):
    """The routes' side: validate, tokenize, queue one ``Job`` per choice, format what comes back."""

    def __init__(self, models: list[ServedModel], limits: Limits) -> None:
        super().__init__()
        self.api_path = ROUTE  # the queue's name; the routes themselves are added by ``install``
        self.served = {m.name: m for m in models if m.kind == "decoder"}
        self.limits = limits

    @property
    def stream(self) -> bool:
        return True

    def decode_request(self, request: Any, context_kwargs: Any = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Any = None) -> Any:
        return output

    # ---- queueing
    async def events(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        """Queue ``job`` for the worker and yield its events."""
        uid = str(uuid.uuid4())
        queue: deque = deque()
        ready = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=ready, response_queue=queue)
        try:
            self.request_queue.put((self.response_queue_id, uid, time.monotonic(), job))
            async for data, status in self.data_streamer(queue, ready, send_status=True):
                if status == LitAPIStatus.ERROR:
                    timed_out = getattr(data, "status_code", None) == 504
                    message = "the request waited too long in the queue" if timed_out else "generation failed"
                    yield {"kind": "error", "message": message, "status": 504 if timed_out else 500}
                    return
                yield json.loads(data)
        finally:
            self.response_buffer.pop(uid, None)

    # ---- validation
    def decoder(self, name: str) -> ServedModel:
        if name not in self.served:
            known = ", ".join(self.served) or "none"
            raise OpenAIError(
                f"The model {name!r} does not exist here; served completion models: {known}",
                404,
                "model",
                "model_not_found",
            )
        return self.served[name]

    def prompt_ids(self, served: ServedModel, prompt: str | list[int], room: int) -> list[int]:
        """A prompt's token ids, checked against the vocabulary and the context length."""
        catalog = active_catalog()
        if isinstance(prompt, str):
            ids = catalog.tokenizers[served.name].encode(prompt).ids
        else:
            vocab = int(served.config["vocab_size"])
            bad = next((i for i in prompt if not 0 <= i < vocab), None)
            if bad is not None:
                raise OpenAIError(
                    f"prompt: token id {bad} is outside the vocabulary [0, {vocab})", param="prompt"
                )
            ids = list(prompt)
        cap = min(self.limits.max_input_tokens, served.max_len - room)
        if len(ids) > cap:
            raise OpenAIError(
                f"prompt: {len(ids)} tokens; this model's context allows at most {cap} with room for the "
                f"completion (max_model_len {served.max_len}, server limit {self.limits.max_input_tokens})",
                param="prompt",
                code="context_length_exceeded",
            )
        return ids

    def jobs(
        self,
        request: Sampled,
        route: str,
        prompts: list[str | list[int]],
        max_tokens: int,
        top_n: int,
        score: bool,
    ) -> tuple[ServedModel, list[Job], int]:
        """One ``Job`` per prompt and choice, and the prompts' token count; ``OpenAIError`` if any is bad."""
        served = self.decoder(request.model)
        if max_tokens > self.limits.max_new_tokens:
            raise OpenAIError(
                f"max_tokens: {max_tokens} is more than this server's limit {self.limits.max_new_tokens}",
                param="max_tokens",
            )
        count = len(prompts) * request.n
        if count > self.limits.max_batch_inputs:
            raise OpenAIError(
                f"n: {len(prompts)} prompts x n={request.n} = {count} choices, at most "
                f"{self.limits.max_batch_inputs} per request",
                param="n",
            )
        received = time.time()
        ids = [self.prompt_ids(served, p, 1 if max_tokens else 0) for p in prompts]
        stops = CHAT_STOPS if route == CHAT_ROUTE else ()
        jobs = [
            Job(
                served.name,
                route,
                p,
                sampling_of(request, max_tokens, c, stops),
                max_tokens,
                top_n,
                score,
                received,
            )
            for p in ids
            for c in range(request.n)
        ]
        return served, jobs, sum(len(p) for p in ids)

    # ---- the routes
    async def completions(self, request: Request) -> Response:
        try:
            body = parse_body(await request.body(), CompletionRequest)
            max_tokens = 16 if body.max_tokens is None else body.max_tokens
            top_n = body.logprobs or 0
            score = body.echo and (body.logprobs is not None or max_tokens == 0)
            served, jobs, prompt_tokens = self.jobs(body, ROUTE, body.prompts(), max_tokens, top_n, score)
        except OpenAIError as error:
            return JSONResponse(error.body(), error.status)
        return await self.answer(body, served, jobs, prompt_tokens, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        try:
            body = parse_body(await request.body(), ChatCompletionRequest)
            max_tokens = body.max_completion_tokens or body.max_tokens or self.limits.max_new_tokens
            prompt = chat_prompt([(m.role, m.text) for m in body.messages])
            top_n = body.top_logprobs or 0
            served, jobs, prompt_tokens = self.jobs(body, CHAT_ROUTE, [prompt], max_tokens, top_n, False)
        except OpenAIError as error:
            return JSONResponse(error.body(), error.status)
        return await self.answer(body, served, jobs, prompt_tokens, chat=True)

    async def answer(
        self, body: Sampled, served: ServedModel, jobs: list[Job], prompt_tokens: int, chat: bool
    ) -> Response:
        tokenizer = active_catalog().tokenizers[served.name]
        choices = [Choice(i, job, body, tokenizer, chat) for i, job in enumerate(jobs)]
        head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": served.name,
        }
        streams = [self.events(job) for job in jobs]
        if body.stream:
            chunks = self.chunks(body, head, choices, streams, prompt_tokens, chat)
            return StreamingResponse(
                chunks, media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        try:
            async for i, event in merged(streams):
                choices[i].feed(event)
        except OpenAIError as error:
            return JSONResponse(error.body(), error.status)
        generated = sum(c.generated for c in choices)
        usage = usage_of(prompt_tokens, generated)
        return JSONResponse({**head, "choices": [c.whole() for c in choices], "usage": usage})

    async def chunks(
        self, body: Sampled, head: dict, choices: list[Choice], streams: list, prompt_tokens: int, chat: bool
    ) -> AsyncIterator[str]:
        """The server-sent events of a streamed answer, ``data: [DONE]`` last."""
        usage_field = {"usage": None} if body.include_usage else {}
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        def chunk(choice: Choice, text: str, finish: str | None) -> str:
            if chat:
                delta = {"content": text} if text or not finish else {}
                if choice.generated == 0 and not finish:
                    delta = {"role": "assistant", "content": ""}
                entry = {"index": choice.index, "delta": delta, "logprobs": choice.logprobs_delta()}
            else:
                entry = {"index": choice.index, "text": text or "", "logprobs": choice.logprobs_delta()}
            entry["finish_reason"] = finish
            return sse({**head, "choices": [entry], **usage_field})

        for choice in choices:  # chat: the role first; completions: the echoed prompt first (unless scored)
            if chat:
                yield chunk(choice, "", None)
            elif choice.echo and not choice.job.score_prompt:
                yield chunk(choice, choice.echo, None)
        try:
            async for i, event in merged(streams):
                choice = choices[i]
                text = choice.feed(event)
                if event["kind"] == "prompt":
                    text = choice.echo
                if choice.finish is not None:
                    yield chunk(choice, text, choice.finish)
                elif text or choice.logprobs is not None or choice.chat_logprobs:
                    yield chunk(choice, text, None)
        except OpenAIError as error:
            yield sse(error.body())
            yield "data: [DONE]\n\n"
            return
        if body.include_usage:
            generated = sum(c.generated for c in choices)
            usage = usage_of(prompt_tokens, generated)
            yield sse({**head, "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"


def usage_of(prompt_tokens: int, generated: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated,
        "total_tokens": prompt_tokens + generated,
    }


def sse(data: dict[str, Any]) -> str:
    return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"


# ---- /v1/models and the tokenizer -------------------------------------------------------------------------------
def model_card(model: ServedModel) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": int((Path(model.path) / "config.json").stat().st_mtime),
        "owned_by": "atencion",
        "max_model_len": model.max_len,
        "chat_format": CHAT_FORMAT,
    }


def install_routes(app: FastAPI, apis: list[ls.LitAPI]) -> None:
    """Add this module's routes to the app when ``apis`` has a ``CompletionsAPI`` (the routes run on its spec)."""
    api = next((a for a in apis if isinstance(a, CompletionsAPI)), None)
    if api is None:
        return
    spec: CompletionsSpec = api.spec
    decoders = list(spec.served.values())
    errors = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503)}
    sse_doc = {"text/event-stream": {"schema": {"type": "string"}}}
    for path, endpoint, request, response, summary in (
        (ROUTE, spec.completions, CompletionRequest, CompletionResponse, "OpenAI completions"),
        (CHAT_ROUTE, spec.chat_completions, ChatCompletionRequest, ChatCompletionResponse, "OpenAI chat"),
    ):
        body = {
            "required": True,
            "content": {"application/json": {"schema": inline_refs(request.model_json_schema())}},
        }
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            summary=summary,
            openapi_extra={"requestBody": body},
            responses={200: {"model": response, "content": sse_doc}, **errors},
        )

    def not_served(name: str) -> JSONResponse:
        error = OpenAIError(f"The model {name!r} does not exist here", 404, "model", "model_not_found")
        return JSONResponse(error.body(), 404)

    async def list_models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card(m) for m in decoders]})

    async def get_model(model_id: str) -> JSONResponse:
        return (
            JSONResponse(model_card(spec.served[model_id]))
            if model_id in spec.served
            else not_served(model_id)
        )

    def tokenizer_of(name: str | None) -> tuple[ServedModel, Any]:
        served = spec.decoder(name) if name else decoders[0]
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

    def documented(model: type) -> dict:
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": inline_refs(model.model_json_schema())}},
            }
        }

    app.add_api_route("/v1/models", list_models, methods=["GET"], summary="served completion models",
                      responses={200: {"model": ModelList}})  # fmt: skip
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"], summary="one served model",
                      responses={200: {"model": ModelCard}, 404: {"model": ErrorResponse}})  # fmt: skip
    app.add_api_route("/tokenizer_info", tokenizer_info, methods=["GET"], summary="the tokenizer's special tokens (vLLM)",
                      responses={404: {"model": ErrorResponse}})  # fmt: skip
    app.add_api_route("/tokenize", tokenize, methods=["POST"], summary="text → token ids (vLLM)",
                      openapi_extra=documented(TokenizeRequest), responses=errors)  # fmt: skip
    app.add_api_route("/detokenize", detokenize, methods=["POST"], summary="token ids → text (vLLM)",
                      openapi_extra=documented(DetokenizeRequest), responses=errors)  # fmt: skip


def extra_paths(apis: list[ls.LitAPI]) -> tuple[str, ...]:
    """The routes this module adds beyond the LitAPI's own path (for limits, metrics and the API key)."""
    if not any(isinstance(api, CompletionsAPI) for api in apis):
        return ()
    return (CHAT_ROUTE, "/tokenize", "/detokenize")


class OpenAIErrorShape:
    """On the OpenAI and tokenizer routes, errors raised outside them (payload and concurrency limits, the API
    key, an unknown path under ``/v1``) leave in OpenAI's shape too: ``{"error": "…", "error_type": "…"}`` →
    ``{"error": {"message", "type", "param": null, "code": error_type}}``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith("/v1/") or path in TOKENIZER_ROUTES):
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            try:
                data = json.loads(body)
                if isinstance(data.get("error"), str):
                    data = error_body(data["error"], start["status"], code=data.get("error_type"))
                    body = json.dumps(data).encode()
            except (ValueError, AttributeError):
                pass
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshaping_send)
