"""The OpenAI-compatible generation routes: ``POST /v1/completions`` and ``POST /v1/chat/completions``.

- ``/v1/completions``: ``prompt`` as a string, a list of strings, token ids or a list of id lists;
  ``max_tokens``, ``temperature`` (0: greedy), ``top_p``, ``stop``, ``seed``, ``n``, ``stream`` (server-sent
  events ``data: {...}`` ending with ``data: [DONE]``), ``stream_options.include_usage``, ``logprobs`` (the N
  best per token), ``echo`` (the prompt too, with its tokens' log-probabilities: what lm-evaluation-harness's
  ``local-completions`` sends to score a continuation), ``usage``, ``finish_reason`` ``stop`` / ``length``.
- ``/v1/chat/completions``: the messages become one prompt (``service.openai_format.CHAT_FORMAT``),
  answered and streamed the same way.
- ``/v1/models`` and the tokenizer routes: ``service.openai_models``.
- Errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; a bad field is a 400 naming it.

How a request runs, all in the API server process: the route validates and tokenizes it, submits one generation
per choice to the decoder's continuous-batching engine (``service.engine``; the same running batch serves
``/generate`` and ``/generate_stream``), and formats the tokens as they arrive (log-prob objects, SSE chunks).
The engine cuts the text just before a stop string (``Sampling.stop_in_text=False``, OpenAI's rule) and holds
back text that may be the start of one, so no part of a stop string is ever streamed. ``echo`` with
``logprobs`` scores the prompt with one full forward in a worker thread while the engine generates. A client
that leaves, streaming or not, cancels its generations: their rows leave the batch before the next decode step.
A full engine queue is a 429 with ``Retry-After``, the time limit (``ATENCION_REQUEST_TIMEOUT``) a 504, a
stopping engine a 503 — in OpenAI's shape, like the errors of the middlewares (``OpenAIErrorShape``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from modeling.generation import GeneratedToken, Sampling
from modeling.logprobs import TokenLogprob, prompt_logprobs
from service.engine import Engine, Generation, GenerationError, Overloaded
from service.generate import GenerationStream, _disconnected, engine_for
from service.metrics import INPUT_TOKENS
from service.models import ServedModel, active_catalog
from service.openai_format import (
    CHAT_STOPS,
    CompletionLogprobs,
    OpenAIError,
    chat_logprob,
    chat_prompt,
    documented,
    error_body,
    finish_reason,
    parse_body,
    prefix_offsets,
)
from service.openai_models import TOKENIZER_ROUTES, install_models
from service.openai_schemas import (
    MAX_STOPS,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    Sampled,
)
from service.settings import Limits

log = logging.getLogger("atencion.openai")

ROUTE = "/v1/completions"
CHAT_ROUTE = "/v1/chat/completions"
LIMITED_ROUTES = (ROUTE, CHAT_ROUTE, "/tokenize", "/detokenize")  # counted, limited and behind the API key
STATUS = {"timeout": 504, "generation": 500, "shutdown": 503, "cancelled": 499}  # GenerationError.kind


@dataclass
class Job:
    """One choice to run: a tokenized prompt and how to continue it."""

    route: str
    prompt_ids: list[int]
    sampling: Sampling
    max_tokens: int  # 0: score the prompt only
    top_n: int  # alternatives per token
    score_prompt: bool  # the prompt's log-probabilities come first


class ClientGone(Exception):
    """The client disconnected: nothing more to send."""


# ---- one choice, as its prompt scores and tokens arrive ---------------------------------------------------------
class Choice:
    """Turns one job's prompt scores and tokens into OpenAI text, log-probs and finish reason (whole, or as
    stream deltas)."""

    def __init__(self, index: int, job: Job, request: Sampled, tokenizer: Any, chat: bool) -> None:
        self.index, self.job, self.tokenizer, self.chat = index, job, tokenizer, chat
        self.content = ""  # the generated text (chat: without its leading whitespace, after 'Asistente:')
        echo = not chat and request.echo
        self.echo = tokenizer.decode(job.prompt_ids) if echo else ""
        wanted = not chat and request.logprobs is not None
        self.logprobs = CompletionLogprobs(tokenizer, job.top_n) if wanted else None
        self.chat_logprobs: list[dict] | None = [] if chat and request.logprobs else None
        self.raw_length = len(self.echo)  # characters before the next token, for text_offset
        self.generated = 0
        self.finish: str | None = "length" if job.max_tokens == 0 else None

    def take(self, item: list[TokenLogprob | None] | GeneratedToken) -> str:
        """Take the prompt's scores or one token; return the text that may be sent now."""
        return self.prompt(item) if isinstance(item, list) else self.token(item)

    def prompt(self, scored: list[TokenLogprob | None]) -> str:
        if self.logprobs is not None:
            offsets = prefix_offsets(self.tokenizer, self.job.prompt_ids)
            for token_id, score, offset in zip(self.job.prompt_ids, scored, offsets, strict=True):
                logprob, top = (None, ()) if score is None else (score.logprob, score.top)
                self.logprobs.add(token_id, logprob, top, offset)
        return self.echo

    def token(self, token: GeneratedToken) -> str:
        piece = "" if token.special else token.text
        self.generated += 1
        if self.logprobs is not None:
            self.logprobs.add(token.id, token.logprob, token.top_logprobs, self.raw_length)
        if self.chat_logprobs is not None:
            top = token.top_logprobs[: self.job.top_n]
            self.chat_logprobs.append(chat_logprob(self.tokenizer, token.id, token.logprob, top))
        self.raw_length += len(piece)
        if self.chat and not self.content:
            piece = piece.lstrip()
        self.content += piece
        if token.finish_reason is not None:
            self.finish = finish_reason(token.finish_reason)
        return piece

    def logprobs_delta(self) -> dict[str, Any] | None:
        if self.logprobs is not None:
            return self.logprobs.take()
        if self.chat_logprobs:
            content, self.chat_logprobs = self.chat_logprobs, []
            return {"content": content}
        return None

    def whole(self) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": self.content}
            return {
                "index": self.index,
                "message": message,
                "logprobs": self.logprobs_delta(),
                "finish_reason": self.finish,
            }
        return {
            "index": self.index,
            "text": self.echo + self.content,
            "logprobs": self.logprobs_delta(),
            "finish_reason": self.finish,
        }


# ---- a choice's items from the engine, and several choices merged ----------------------------------------------
async def items(
    engine: Engine, job: Job, generation: Generation | None
) -> AsyncIterator[list[TokenLogprob | None] | GeneratedToken]:
    """The prompt's scores (when asked for; one forward in a worker thread, while the engine already decodes),
    then the generated tokens. Leaving early cancels the generation."""
    try:
        if job.score_prompt:
            yield await asyncio.to_thread(prompt_logprobs, engine.model, job.prompt_ids, job.top_n)
        if generation is not None:
            async for token in generation:
                yield token
    finally:
        if generation is not None:
            generation.cancel()


async def merged(
    streams: list[AsyncIterator[Any]], generations: list[Generation | None], request: Request
) -> AsyncIterator[tuple[int, Any]]:
    """The items of several streams as they come, tagged with the stream's index. A stream's failure is raised
    as an ``OpenAIError``; a client that disconnects cancels the generations (ending the streams) and so raises
    ``ClientGone``. Leaving, for whatever reason, cancels every generation. One stream (the usual case) is read
    directly, without a task and a queue hop per token."""
    gone = asyncio.ensure_future(_disconnected(request))
    gone.add_done_callback(lambda _: cancel(generations))
    try:
        if len(streams) == 1:
            async for item in streams[0]:
                yield 0, item
        else:
            async for i, item in interleaved(streams):
                yield i, item
    except GenerationError as error:
        if error.kind == "cancelled":
            raise ClientGone() from None
        raise OpenAIError(str(error), STATUS.get(error.kind, 500), code=error.kind) from None
    except Exception as error:  # noqa: BLE001 — a choice's failure, reported to the client
        log.error("generation failed", exc_info=error)
        raise OpenAIError(f"generation failed: {error}", 500, code="generation_failed") from None
    finally:
        gone.cancel()  # and so, through its callback, every generation: nothing runs on for nobody


async def interleaved(streams: list[AsyncIterator[Any]]) -> AsyncIterator[tuple[int, Any]]:
    """The items of several streams as they come, tagged with the stream's index; the first failure is raised."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                await queue.put((i, item))
        except Exception as error:  # noqa: BLE001 — raised on the reading side
            await queue.put((i, error))
        finally:
            await queue.put((i, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    finished = 0
    try:
        while finished < len(streams):
            i, item = await queue.get()
            if item is done:
                finished += 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()


# ---- the routes -------------------------------------------------------------------------------------------------
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
        stop_in_text=False,
    )


def usage_of(prompt_tokens: int, generated: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated,
        "total_tokens": prompt_tokens + generated,
    }


def sse(data: dict[str, Any]) -> str:
    return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"


def refusal(error: OpenAIError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse(error.body(), error.status, headers=headers)


def internal(error: Exception) -> JSONResponse:
    log.error("OpenAI route failed", exc_info=error)
    return JSONResponse(error_body("internal server error (see the server log)", 500, code="internal"), 500)


class Completions:
    """The two generation routes: validate, tokenize, submit one generation per choice, format what comes."""

    def __init__(self, decoders: list[ServedModel], limits: Limits) -> None:
        self.served = {m.name: m for m in decoders}
        self.limits = limits
        self.timeout = float(limits.request_timeout) or None

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
        if isinstance(prompt, str):
            ids = active_catalog().tokenizers[served.name].encode(prompt).ids
        else:
            vocab = int(served.config["vocab_size"])
            bad = next((i for i in prompt if not 0 <= i < vocab), None)
            if bad is not None:
                raise OpenAIError(
                    f"prompt: token id {bad} is outside the vocabulary [0, {vocab})", param="prompt"
                )
            ids = list(prompt)
        if not ids:
            raise OpenAIError("prompt: no tokens; send some text or token ids", param="prompt")
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
        ids = [self.prompt_ids(served, p, 1 if max_tokens else 0) for p in prompts]
        stops = CHAT_STOPS if route == CHAT_ROUTE else ()
        try:
            samplings = [sampling_of(request, max_tokens, c, stops) for c in range(request.n)]
        except ValueError as error:  # Sampling's own checks name the field
            raise OpenAIError(str(error), param=str(error).split(":", 1)[0]) from None
        jobs = [Job(route, p, s, max_tokens, top_n, score) for p in ids for s in samplings]
        return served, jobs, sum(len(p) for p in ids)

    def submit(self, engine: Engine, jobs: list[Job]) -> list[Generation | None]:
        """Each job's generation on ``engine`` (None: the prompt is only scored); all or none."""
        generations: list[Generation | None] = []
        try:
            for job in jobs:
                if job.max_tokens == 0:
                    INPUT_TOKENS.labels(path=job.route).inc(len(job.prompt_ids))  # the engine counts the rest
                    generations.append(None)
                    continue
                generations.append(
                    engine.submit(
                        job.prompt_ids,
                        job.sampling,
                        route=job.route,
                        timeout=self.timeout,
                        top_logprobs=job.top_n,
                    )  # fmt: skip
                )
        except Overloaded as error:
            cancel(generations)
            raise OpenAIError(str(error), 429, code="overloaded", retry_after=error.retry_after) from None
        except GenerationError as error:
            cancel(generations)
            raise OpenAIError(str(error), STATUS.get(error.kind, 503), code=error.kind) from None
        except ValueError as error:  # the engine's own prompt checks
            cancel(generations)
            raise OpenAIError(str(error).replace("prompt_ids", "prompt", 1), param="prompt") from None
        return generations

    # ---- the routes
    async def completions(self, request: Request) -> Response:
        try:
            body = parse_body(await request.body(), CompletionRequest)
            max_tokens = 16 if body.max_tokens is None else body.max_tokens
            top_n = body.logprobs or 0
            score = body.echo and (body.logprobs is not None or max_tokens == 0)
            served, jobs, prompt_tokens = self.jobs(body, ROUTE, body.prompts(), max_tokens, top_n, score)
            return await self.answer(request, body, served, jobs, prompt_tokens, chat=False)
        except OpenAIError as error:
            return refusal(error)
        except Exception as error:  # noqa: BLE001 — a bug: still an answer in OpenAI's shape
            return internal(error)

    async def chat_completions(self, request: Request) -> Response:
        try:
            body = parse_body(await request.body(), ChatCompletionRequest)
            max_tokens = body.max_completion_tokens or body.max_tokens or self.limits.max_new_tokens
            prompt = chat_prompt([(m.role, m.text) for m in body.messages])
            top_n = body.top_logprobs or 0
            served, jobs, prompt_tokens = self.jobs(body, CHAT_ROUTE, [prompt], max_tokens, top_n, False)
            return await self.answer(request, body, served, jobs, prompt_tokens, chat=True)
        except OpenAIError as error:
            return refusal(error)
        except Exception as error:  # noqa: BLE001 — a bug: still an answer in OpenAI's shape
            return internal(error)

    async def answer(
        self,
        request: Request,
        body: Sampled,
        served: ServedModel,
        jobs: list[Job],
        prompt_tokens: int,
        chat: bool,
    ) -> Response:
        engine = engine_for(served.name)
        generations = self.submit(engine, jobs)
        choices = [Choice(i, job, body, engine.tokenizer, chat) for i, job in enumerate(jobs)]
        streams = [items(engine, job, g) for job, g in zip(jobs, generations, strict=True)]
        head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": served.name,
        }
        if body.stream:
            chunks = self.chunks(request, body, head, choices, streams, generations, prompt_tokens, chat)
            return GenerationStream(chunks, generations, headers={"cache-control": "no-cache"})
        try:
            async for i, item in merged(streams, generations, request):
                choices[i].take(item)
        except ClientGone:
            return Response(status_code=499)
        finally:
            cancel(generations)
        generated = sum(c.generated for c in choices)
        usage = usage_of(prompt_tokens, generated)
        return JSONResponse({**head, "choices": [c.whole() for c in choices], "usage": usage})

    async def chunks(
        self,
        request: Request,
        body: Sampled,
        head: dict,
        choices: list[Choice],
        streams: list,
        generations: list[Generation | None],
        prompt_tokens: int,
        chat: bool,
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

        try:
            for (
                choice
            ) in choices:  # chat: the role first; completions: the echoed prompt first (unless scored)
                if chat:
                    yield chunk(choice, "", None)
                elif choice.echo and not choice.job.score_prompt:
                    yield chunk(choice, choice.echo, None)
            async for i, item in merged(streams, generations, request):
                choice = choices[i]
                text = choice.take(item)
                if choice.finish is not None:
                    yield chunk(choice, text, choice.finish)
                elif text or choice.logprobs is not None or choice.chat_logprobs:
                    yield chunk(choice, text, None)
            if body.include_usage:
                generated = sum(c.generated for c in choices)
                yield sse({**head, "choices": [], "usage": usage_of(prompt_tokens, generated)})
        except ClientGone:
            return
        except OpenAIError as error:
            yield sse(error.body())
        except Exception as error:  # noqa: BLE001 — the status line is sent: report it in the stream
            log.error("OpenAI stream failed", exc_info=error)
            yield sse(error_body("internal server error (see the server log)", 500, code="internal"))
        finally:
            cancel(generations)
        yield "data: [DONE]\n\n"


def cancel(generations: list[Generation | None]) -> None:
    for generation in generations:
        if generation is not None:
            generation.cancel()


# ---- installing the routes -------------------------------------------------------------------------------------
def install(app: FastAPI, models: list[ServedModel], limits: Limits) -> tuple[str, ...]:
    """Add this module's routes for the served decoders, on the engines ``service.generate.install`` starts;
    returns the paths to count, limit and protect with the API key."""
    decoders = [m for m in models if m.kind == "decoder"]
    if not decoders:
        return ()
    spec = Completions(decoders, limits)
    names = [m.name for m in decoders]
    errors = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503, 504)}
    sse_doc = {  # with "stream": true; before OpenAPI 3.2, ``schema`` describes one event
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": 'data: a chunk (JSON), or {"error": {…}}; then data: [DONE]',
                "properties": {"data": {"type": "string"}},
                "required": ["data"],
            }
        }
    }
    for path, endpoint, request, response, summary in (
        (ROUTE, spec.completions, CompletionRequest, CompletionResponse, "OpenAI completions"),
        (CHAT_ROUTE, spec.chat_completions, ChatCompletionRequest, ChatCompletionResponse, "OpenAI chat"),
    ):
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            summary=summary,
            openapi_extra=bounded(documented(request, names), limits, decoders),
            responses={200: {"model": response, "content": sse_doc}, **errors},
        )
    install_models(app, decoders, spec.decoder, errors)
    return LIMITED_ROUTES


ONLY_OFF = {  # fields accepted only with the value that turns them off (service.openai_schemas says why)
    "presence_penalty": {"minimum": 0, "maximum": 0},
    "frequency_penalty": {"minimum": 0, "maximum": 0},
    "logit_bias": {"maxProperties": 0},
    "best_of": {"minimum": 1, "maximum": 1},
    "suffix": {"maxLength": 0},
    "tools": {"maxItems": 0},
}


def bounded(extra: dict[str, Any], limits: Limits, decoders: list[ServedModel]) -> dict[str, Any]:
    """The server's limits in a documented request body: ``max_tokens`` at most ``max_new_tokens``, token ids
    within every served vocabulary, unsupported fields only off (so that generated requests are ones the server
    runs)."""
    properties = extra["requestBody"]["content"]["application/json"]["schema"]["properties"]
    for name, bounds in ONLY_OFF.items():
        for branch in properties.get(name, {}).get("anyOf", []):
            if branch.get("type") != "null":
                branch.update(bounds)
    if "tool_choice" in properties:
        properties["tool_choice"]["enum"] = [None, "none"]
    for name in ("max_tokens", "max_completion_tokens"):
        for branch in properties.get(name, {}).get("anyOf", []):
            if branch.get("type") == "integer":
                branch["maximum"] = limits.max_new_tokens
    vocab = min(int(m.config["vocab_size"]) for m in decoders)
    for branch in properties.get("prompt", {}).get("anyOf", []):
        items = branch.get("items", {})
        ids = items.get("items", items)  # a list of ids, or a list of such lists
        if ids.get("type") == "integer":
            ids.update(minimum=0, maximum=vocab - 1)
        for array in (branch, items):
            if array.get("type") == "array":
                array["minItems"] = 1
    for branch in properties.get("stop", {}).get("anyOf", []):
        if branch.get("type") == "string":
            branch["minLength"] = 1
        elif branch.get("type") == "array":
            branch.update(maxItems=MAX_STOPS)
            branch["items"]["minLength"] = 1
    return extra


def openai_shaped(path: str) -> bool:
    return path.startswith("/v1/") or path in TOKENIZER_ROUTES


class OpenAIErrorShape:
    """On the OpenAI and tokenizer routes, errors raised outside them (payload and concurrency limits, the API
    key, draining and failing processes, an unknown path under ``/v1``) leave in OpenAI's shape too:
    ``{"error": "…", "error_type": "…"}`` → ``{"error": {"message", "type", "param": null, "code": error_type}}``;
    a stream cut short by ``service.supervision`` ends with such an error event and ``data: [DONE]``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not openai_shaped(scope.get("path", "")):
            return await self.app(scope, receive, send)
        start: dict | None = None
        stream = False
        chunks: list[bytes] = []

        async def reshaping_send(message: dict) -> None:
            nonlocal start, stream
            if message["type"] == "http.response.start":
                if message["status"] >= 400:
                    start = message
                    return
                headers = dict(message.get("headers", []))
                stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                return await send(message)
            if start is None:
                body = message.get("body", b"")
                if stream and body.startswith(b'data:{"error"'):  # the supervisor's last event
                    message = {**message, "body": reshaped_event(body)}
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


def reshaped_event(event: bytes) -> bytes:
    """``data:{"error": "…", "error_type": "…"}`` → an OpenAI error event, then ``data: [DONE]``."""
    try:
        data = json.loads(event.removeprefix(b"data:"))
        error = error_body(data["error"], 503, code=data.get("error_type"))
    except (ValueError, KeyError, TypeError):
        return event
    return (sse(error) + "data: [DONE]\n\n").encode()
