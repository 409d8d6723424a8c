"""``POST /generate`` and ``POST /generate_stream``: Text Generation Inference's shapes over the batching engine.

Both routes feed one ``service.engine.Engine`` per served decoder, running in the API server process (its
docstring says why, and why not LitServe's ``ContinuousBatchingLoop``): a request joins the running batch at the
next decode step. ``/generate`` collects the tokens into ``{"generated_text", "details"}``; ``/generate_stream``
sends each token as a server-sent event ``data:{"index", "token", "generated_text": null, "details": null}``
and a last one carrying ``generated_text`` and ``details`` (TGI has no ``[DONE]``). Once the stream has started
its status is 200, so a failure mid-stream arrives as ``data:{"error", "error_type"}``.

- A client that disconnects (stream or not) cancels its generation: its row leaves the batch before the next
  decode step. A stream's response cancels its generations when it ends, however it ends (``GenerationStream``):
  also when the client left before the first byte and the body's own watcher never started.
- A full waiting queue (``ATENCION_MAX_WAITING``) answers 429 ``overloaded`` with ``Retry-After``.
- ``ATENCION_REQUEST_TIMEOUT`` seconds after arrival a generation ends: 504 ``timeout`` (or a last ``timeout``
  event on a stream), and its row is freed.

Other routes (the OpenAI-compatible ones) use ``engine_for(name)`` and ``Engine.submit`` the same way.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from modeling.generation import GeneratedToken, Sampling, special_ids
from service.engine import Engine, Generation, GenerationError, Overloaded
from service.errors import InputError, error_body, error_response
from service.metrics import EngineMetrics
from service.models import ServedModel, load_for_worker, model_name
from service.schemas import GenerateRequest, GenerateResponse
from service.settings import Limits

ROUTES = ("/generate", "/generate_stream")
_ENGINES: dict[str, Engine] = {}
STATUS = {"timeout": 504, "generation": 424, "shutdown": 503, "cancelled": 499}


def sampling_of(request: GenerateRequest) -> Sampling:
    """TGI parameters → ``Sampling``; a sampled request without a seed gets one, reported in ``details``."""
    p = request.parameters
    sample = p.sampling
    seed = p.seed if p.seed is not None else (random.randrange(2**63) if sample else None)
    return Sampling(
        max_new_tokens=p.max_new_tokens,
        do_sample=sample,
        temperature=p.temperature if p.temperature is not None else 1.0,
        top_k=p.top_k,
        top_p=p.top_p,
        repetition_penalty=p.repetition_penalty if p.repetition_penalty is not None else 1.0,
        seed=seed if sample else None,
        stop=tuple(p.stop),
    )


def token_dict(token: GeneratedToken) -> dict[str, Any]:
    return {"id": token.id, "text": token.text, "logprob": token.logprob, "special": token.special}


def top_tokens(tokenizer: Any, token: GeneratedToken) -> list[dict[str, Any]]:
    """TGI's ``top_tokens`` of one step: the most likely tokens, each as a ``Token``."""
    specials = special_ids(tokenizer)
    return [
        {
            "id": i,
            "text": tokenizer.decode([i], skip_special_tokens=False),
            "logprob": v,
            "special": i in specials,
        }
        for i, v in token.top_logprobs
    ]


def event(data: dict[str, Any]) -> str:
    """One server-sent event."""
    return "data:" + json.dumps(data, ensure_ascii=False) + "\n\n"


def token_event(index: int, token: GeneratedToken) -> str:
    """The event of a token that is not the last, without ``top_tokens``: the very text of ``event`` on its dict,
    written directly (it runs once per token per client on the event loop, beside the decode thread)."""
    text = json.dumps(token.text, ensure_ascii=False)
    special = "true" if token.special else "false"
    return (
        f'data:{{"index": {index}, "token": {{"id": {token.id}, "text": {text}, "logprob": {token.logprob!r}, '
        f'"special": {special}}}, "top_tokens": null, "generated_text": null, "details": null}}\n\n'
    )


class GenerationStream(StreamingResponse):
    """Server-sent events read from ``generations``, which are cancelled when the response ends, however it ends.
    A client gone before the first byte can end the response before its body iterator ever starts (an ASGI 2.4
    server raises ``OSError`` from the first ``send``), so the iterator's own clean-up is not enough."""

    def __init__(
        self,
        content: AsyncIterator[str],
        generations: list[Generation | None],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.generations = generations

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for generation in self.generations:
                if generation is not None:
                    generation.cancel()  # nothing once it has finished


# ---- the engines ----------------------------------------------------------------------------------------------
def engine_for(name: str | None) -> Engine:
    """The running engine of decoder ``name`` (None: the first served), or an ``InputError`` 404."""
    return _ENGINES[model_name(_ENGINES, name, "decoder")]


def start_engines(models: list[ServedModel], limits: Limits, device: str, threads: int) -> None:
    """Load every served decoder and start its engine (in the API server process)."""
    checkpoints = load_for_worker(models, "decoder", device, threads)
    for name, checkpoint in checkpoints.items():
        _ENGINES[name] = Engine(
            checkpoint.model, checkpoint.tokenizer, max_running=limits.max_running,
            max_waiting=limits.max_waiting, threads=threads, observer=EngineMetrics(name), name=name,
        ).start()  # fmt: skip


def stop_engines() -> None:
    for engine in _ENGINES.values():
        engine.stop()
    _ENGINES.clear()


def install(
    app: FastAPI, models: list[ServedModel], limits: Limits, device: str, threads: int
) -> tuple[str, ...]:
    """Add the two routes to ``app`` and start the engines with the API server (its lifespan); returns the paths."""
    decoders = [m for m in models if m.kind == "decoder"]
    if not decoders:
        return ()
    served = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        await asyncio.to_thread(start_engines, decoders, limits, device, threads)
        try:
            async with served(application) as state:
                yield state
        finally:
            await asyncio.to_thread(stop_engines)

    app.router.lifespan_context = lifespan
    timeout = float(limits.request_timeout) or None

    async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        """Generate text for ``inputs`` (TGI's ``/generate``)."""
        started = _submit(body, "/generate", timeout)
        if isinstance(started, Response):
            return started
        generation, prompt = started
        collect = asyncio.ensure_future(_collect(generation))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not collect.done():  # the client left: stop generating for nobody
            generation.cancel()
            collect.cancel()
            return Response(status_code=499)
        try:
            tokens = collect.result()
        except GenerationError as error:
            return JSONResponse(error_body(str(error), error.kind), status_code=STATUS.get(error.kind, 500))
        p = body.parameters
        answer: dict[str, Any] = {
            "generated_text": _text(prompt, tokens, p.return_full_text),
            "details": None,
        }
        if p.details:
            answer["details"] = {
                **_details(generation, tokens),
                "prefill": [],
                "tokens": [token_dict(t) for t in tokens],
            }
            if p.top_n_tokens:
                tokenizer = generation.tokenizer
                answer["details"]["top_tokens"] = [top_tokens(tokenizer, t) for t in tokens]
        return JSONResponse(answer)

    async def generate_stream(body: GenerateRequest, request: Request) -> Response:
        """Stream tokens as server-sent events (TGI's ``/generate_stream``)."""
        started = _submit(body, "/generate_stream", timeout)
        if isinstance(started, Response):
            return started
        generation, prompt = started
        return GenerationStream(
            _events(generation, prompt, body.parameters.return_full_text, request), [generation]
        )

    app.add_api_route("/generate", generate, methods=["POST"], response_model=GenerateResponse)
    app.add_api_route("/generate_stream", generate_stream, methods=["POST"], response_class=StreamingResponse)
    return ROUTES


def _submit(body: GenerateRequest, route: str, timeout: float | None) -> tuple[Generation, str] | Response:
    try:
        engine = engine_for(body.model)
        ids = engine.tokenizer.encode(body.inputs).ids
        top_n = body.parameters.top_n_tokens or 0
        generation = engine.submit(ids, sampling_of(body), route=route, timeout=timeout, top_logprobs=top_n)
    except InputError as error:
        return error_response(error)
    except ValueError as error:  # the engine's own checks (prompt too long for the model, …)
        return JSONResponse(error_body(str(error), "validation"), status_code=422)
    except Overloaded as error:
        headers = {"Retry-After": str(error.retry_after)}
        return JSONResponse(error_body(str(error), "overloaded"), status_code=429, headers=headers)
    except GenerationError as error:
        return JSONResponse(error_body(str(error), error.kind), status_code=STATUS.get(error.kind, 503))
    return generation, body.inputs


async def _collect(generation: Generation) -> list[GeneratedToken]:
    return [token async for token in generation]


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the ASGI server's ``http.disconnect``)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _events(
    generation: Generation, prompt: str, full_text: bool, request: Request
) -> AsyncIterator[str]:
    gone = asyncio.ensure_future(_disconnected(request))
    gone.add_done_callback(lambda _: generation.cancel())
    tokens: list[GeneratedToken] = []
    tokenizer, top_n = generation.tokenizer, generation.sequence.top_logprobs
    try:
        async for token in generation:
            tokens.append(token)
            last = token.finish_reason is not None
            if not last and not top_n:
                yield token_event(len(tokens) - 1, token)
                continue
            yield event(
                {
                    "index": len(tokens) - 1,
                    "token": token_dict(token),
                    "top_tokens": top_tokens(tokenizer, token) if top_n else None,
                    "generated_text": _text(prompt, tokens, full_text) if last else None,
                    "details": {
                        **_details(generation, tokens),
                        "input_length": len(generation.sequence.prompt_ids),
                    }
                    if last
                    else None,
                }
            )
    except GenerationError as error:
        if error.kind != "cancelled":
            yield event({"error": str(error), "error_type": error.kind})
    except Exception as error:  # noqa: BLE001 — the status line is already sent: report it in the stream
        yield event({"error": f"generation failed: {error}", "error_type": "generation"})
    finally:
        gone.cancel()
        generation.cancel()


def _text(prompt: str, tokens: list[GeneratedToken], full_text: bool) -> str:
    text = "".join(t.text for t in tokens if not t.special)
    return prompt + text if full_text else text


def _details(generation: Generation, tokens: list[GeneratedToken]) -> dict[str, Any]:
    return {
        "finish_reason": tokens[-1].finish_reason if tokens else "length",
        "generated_tokens": len(tokens),
        "seed": generation.sequence.sampling.seed,
    }
