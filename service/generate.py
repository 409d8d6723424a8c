"""``POST /generate`` and ``POST /generate_stream``: Text Generation Inference's shapes over ``stream_tokens``.

Both run ``modeling.generation.stream_tokens`` (the prompt fills the KV cache once, then one length-1 forward
per token). ``/generate`` collects the tokens into ``{"generated_text", "details"}``; ``/generate_stream``
sends each token as a server-sent event ``data:{"index", "token", "generated_text": null, "details": null}``
and a last one carrying ``generated_text`` and ``details`` (TGI has no ``[DONE]``). Once the stream has
started its status is 200, so a failure mid-stream arrives as ``data:{"error", "error_type": "generation"}``.

Requests are validated in the API process (``service.schemas``) before they are queued: a stream never starts
for a bad request. Generation is not batched (sequences of different lengths would need per-row positions);
more ``--workers-per-device`` run more requests at once.
"""

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import litserve as ls

from modeling.generation import GeneratedToken, Sampling, special_ids, stream_tokens
from service.errors import InputError, error_response
from service.metrics import BATCH_SIZE, FINISH_REASON, FIRST_TOKEN, GENERATED_TOKENS, INPUT_TOKENS
from service.models import ServedModel, load_for_worker, model_name
from service.schemas import GenerateRequest, GenerateResponse
from service.settings import Limits


@dataclass
class Job:
    """A validated request, ready for the decoder."""

    model: str
    prompt: str
    prompt_ids: list[int]
    sampling: Sampling
    return_full_text: bool
    details: bool
    received: float
    top_n: int = 0  # TGI's top_n_tokens


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


class _Decoding(ls.LitAPI):
    """Shared by both routes: load the decoders, turn a request into a ``Job``, run the token stream."""

    route = "/generate"

    def __init__(self, models: list[ServedModel], limits: Limits, stream: bool) -> None:
        super().__init__(max_batch_size=1, api_path=self.route, stream=stream)
        self.served = [m for m in models if m.kind == "decoder"]
        self.limits = limits
        self.threads = 1  # torch threads in the worker; service.app sets it from the core count

    def setup(self, device: str) -> None:
        self.checkpoints = load_for_worker(self.served, "decoder", device, self.threads)

    def job(self, request: GenerateRequest) -> Job:
        name = model_name(self.checkpoints, request.model, "decoder")
        checkpoint = self.checkpoints[name]
        ids = checkpoint.tokenizer.encode(request.inputs).ids
        cap = min(self.limits.max_input_tokens, checkpoint.config.max_len - 1)
        if len(ids) > cap:  # checked in the API process too; the worker never trusts its queue
            raise InputError(f"inputs: {len(ids)} tokens, more than the {cap} allowed", 413, "too_long")
        p = request.parameters
        return Job(
            name,
            request.inputs,
            ids,
            sampling_of(request),
            p.return_full_text,
            p.details,
            request.received,
            p.top_n_tokens or 0,
        )

    def tokens(self, job: Job) -> Iterator[GeneratedToken]:
        """The token stream, with the metrics every generation reports."""
        BATCH_SIZE.labels(path=self.route).observe(1)
        INPUT_TOKENS.labels(path=self.route).inc(len(job.prompt_ids))
        checkpoint = self.checkpoints[job.model]
        count = 0
        tokenizer = checkpoint.tokenizer
        for token in stream_tokens(checkpoint.model, tokenizer, job.prompt_ids, job.sampling, job.top_n):
            if count == 0:
                FIRST_TOKEN.labels(path=self.route).observe(max(0.0, time.time() - job.received))
            count += 1
            GENERATED_TOKENS.labels(path=self.route).inc()
            if token.finish_reason:
                FINISH_REASON.labels(reason=token.finish_reason).inc()
            yield token

    @staticmethod
    def text_of(job: Job, tokens: list[GeneratedToken]) -> str:
        text = "".join(t.text for t in tokens if not t.special)
        return job.prompt + text if job.return_full_text else text

    @staticmethod
    def details_of(job: Job, tokens: list[GeneratedToken]) -> dict[str, Any]:
        return {
            "finish_reason": tokens[-1].finish_reason if tokens else "length",
            "generated_tokens": len(tokens),
            "seed": job.sampling.seed,
        }


class GenerateAPI(_Decoding):
    """``POST /generate``: the whole answer at once."""

    route = "/generate"

    def __init__(self, models: list[ServedModel], limits: Limits) -> None:
        super().__init__(models, limits, stream=False)

    def decode_request(self, request: GenerateRequest) -> Job | InputError:
        try:
            return self.job(request)
        except InputError as error:
            return error

    def predict(self, job: Job | InputError) -> dict[str, Any] | InputError:
        if isinstance(job, InputError):
            return job
        try:
            tokens = list(self.tokens(job))
        except ValueError as error:  # stream_tokens' own checks (prompt too long for the model, …)
            return InputError(str(error), 422, "validation")
        answer: dict[str, Any] = {"generated_text": self.text_of(job, tokens)}
        if job.details:
            answer["details"] = {
                **self.details_of(job, tokens),
                "prefill": [],
                "tokens": [token_dict(t) for t in tokens],
            }
            if job.top_n:
                tokenizer = self.checkpoints[job.model].tokenizer
                answer["details"]["top_tokens"] = [top_tokens(tokenizer, t) for t in tokens]
        return answer

    def encode_response(self, output: dict[str, Any] | InputError) -> GenerateResponse:
        if isinstance(output, InputError):
            return error_response(output)
        return output


def event(data: dict[str, Any]) -> str:
    """One server-sent event."""
    return "data:" + json.dumps(data, ensure_ascii=False) + "\n\n"


class GenerateStreamAPI(_Decoding):
    """``POST /generate_stream``: one server-sent event per token (TGI)."""

    route = "/generate_stream"

    def __init__(self, models: list[ServedModel], limits: Limits) -> None:
        super().__init__(models, limits, stream=True)

    def decode_request(self, request: GenerateRequest) -> Job | InputError:
        try:
            return self.job(request)
        except InputError as error:
            return error

    def predict(self, job: Job | InputError) -> Iterator[str]:
        if isinstance(job, InputError):
            yield event({"error": job.message, "error_type": job.error_type})
            return
        tokens: list[GeneratedToken] = []
        try:
            for index, token in enumerate(self.tokens(job)):
                tokens.append(token)
                last = token.finish_reason is not None
                yield event(
                    {
                        "index": index,
                        "token": token_dict(token),
                        "top_tokens": top_tokens(self.checkpoints[job.model].tokenizer, token)
                        if job.top_n
                        else None,
                        "generated_text": self.text_of(job, tokens) if last else None,
                        "details": {**self.details_of(job, tokens), "input_length": len(job.prompt_ids)}
                        if last
                        else None,
                    }
                )
        except Exception as error:  # the status line is already sent: report it in the stream
            yield event({"error": f"generation failed: {error}", "error_type": "generation"})

    def encode_response(
        self, outputs: Iterator[str]
    ):  # no return hint: LitServe would make it a response model
        yield from outputs
