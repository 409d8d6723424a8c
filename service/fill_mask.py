"""``POST /fill-mask``: the masked-LM's guesses for each mask token, dynamically batched.

Requests that arrive within ``batch_timeout`` of each other (up to ``max_batch_size``) run as one padded
forward per model. LitServe fails a whole batch when any step raises (its issue #340), so a bad item — no mask
token, too many tokens, a target the tokenizer cannot spell — travels through ``predict`` as an ``InputError``
value and becomes that request's own 4xx in ``encode_response``; the others in the batch are untouched.

Tokenizing, scoring and the candidates' fields are ``modeling.fill_mask``'s (shared with the CLI): softmax over
the whole vocabulary at the mask position, then the ``top_k`` best (or the given ``targets``), as the Hugging
Face pipeline does.

Precision (``--precision`` / ``ATENCION_PRECISION``): ``auto`` runs an encoder's forward in bf16 autocast only
where ``modeling.precision.choose`` found, at start-up, that bf16 keeps fp32's top-1 token and top-5 set on its
fixed Spanish sentences (and the CPU has bf16 matmuls); ``/info`` says which precision each encoder got, and why.
"""

import time
from dataclasses import dataclass
from queue import Empty
from typing import Any

import litserve as ls
import torch
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.utils import LitAPIStatus, LoopResponseType

from modeling.fill_mask import FillMaskError, MaskedText, candidates, encode, mask_probabilities, target_ids
from modeling.precision import Choice, autocast, choose
from service.errors import InputError, error_response
from service.metrics import BATCH_SIZE, INPUT_TOKENS
from service.models import ServedModel, load_for_worker, model_name
from service.schemas import FillMaskRequest, FillMaskResponse
from service.settings import Limits

PATH = "/fill-mask"
STATUS = {"too_long": 413, "no_mask": 422, "out_of_range": 422}  # FillMaskError.kind -> HTTP status


@dataclass
class Prepared:
    """One request, tokenized: every text's ids and mask positions, and the candidate ids to rank."""

    model: str
    texts: list[MaskedText]  # token ids and mask positions per input text
    top_k: int
    targets: list[int] | None
    single: bool  # "inputs" was a string, not a list


class PatientBatchedLoop(BatchedLoop):
    """LitServe's batched loop, gathering a batch without spinning.

    LitServe 0.2.19 polls the request queue every millisecond for as long as the server runs, idle or not, each
    poll a round trip to the multiprocessing manager: two processes kept busy, which on a 2-core machine slows
    every other worker. Here the worker blocks until a first request arrives, then gathers more until
    ``batch_timeout`` has passed since that first one (or the batch is full).
    """

    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Any, transport: Any) -> tuple[list, list]:
        payloads: list = []
        timed_out: list = []
        try:
            item = request_queue.get(timeout=1.0)
        except Empty:
            return payloads, timed_out
        deadline = time.monotonic() + lit_api.batch_timeout
        while True:
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            queue_id, uid, timestamp, body = item
            self.put_response(transport, queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR)
            expired = lit_api.request_timeout not in (-1, False, None) and (
                time.monotonic() - timestamp > lit_api.request_timeout
            )
            (timed_out if expired else payloads).append((queue_id, uid) if expired else (queue_id, uid, body))
            if len(payloads) + len(timed_out) >= lit_api.max_batch_size:
                return payloads, timed_out
            try:
                remaining = deadline - time.monotonic()
                item = request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait()
            except Empty:
                return payloads, timed_out


class FillMaskAPI(ls.LitAPI):
    """One worker holds every served encoder; a batch may mix models (one forward per model)."""

    def __init__(
        self,
        models: list[ServedModel],
        limits: Limits,
        max_batch_size: int,
        batch_timeout: float,
        precisions: dict[str, Choice] | None = None,
    ):
        loop = PatientBatchedLoop() if max_batch_size > 1 else "auto"
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=PATH, loop=loop)
        self.served = [m for m in models if m.kind == "encoder"]
        self.limits = limits
        self.precisions = precisions or {}  # name -> the precision its forward runs in (default fp32)
        self.threads = 1  # torch threads in the worker; service.app sets it from the core count

    def setup(self, device: str) -> None:
        self.device = device
        self.checkpoints = load_for_worker(self.served, "encoder", device, self.threads)

    # ---- per request (never raises) --------------------------------------------------------------------
    def decode_request(self, request: FillMaskRequest) -> Prepared | InputError:
        try:
            return self.prepare(request)
        except InputError as error:
            return error
        except Exception as error:  # a tokenizer failure on odd input: this request's problem only
            return InputError(f"inputs: cannot be tokenized ({error})")

    def prepare(self, request: FillMaskRequest) -> Prepared:
        name = model_name(self.checkpoints, request.model, "encoder")
        checkpoint = self.checkpoints[name]
        texts = [request.inputs] if isinstance(request.inputs, str) else list(request.inputs)
        try:
            masked = [
                encode(checkpoint.tokenizer, checkpoint.config, t, self.limits.max_input_tokens)
                for t in texts
            ]
        except FillMaskError as error:
            raise InputError(f"inputs: {error.message}", STATUS[error.kind], error.kind) from None
        targets = None
        if request.parameters.targets is not None:
            try:
                targets = target_ids(checkpoint.tokenizer, request.parameters.targets)
            except FillMaskError as error:
                raise InputError(
                    f"parameters.targets: {error.message}", STATUS[error.kind], error.kind
                ) from None
        INPUT_TOKENS.labels(path=PATH).inc(sum(len(m.ids) for m in masked))
        top_k = min(request.parameters.top_k, len(targets) if targets else checkpoint.config.vocab_size)
        return Prepared(name, masked, top_k, targets, isinstance(request.inputs, str))

    # ---- the batch --------------------------------------------------------------------------------------
    def batch(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def unbatch(self, outputs: list[Any]) -> list[Any]:
        return outputs

    def predict(self, items: Any) -> Any:
        batched = isinstance(items, list)
        items = items if batched else [items]
        BATCH_SIZE.labels(path=PATH).observe(len(items))
        outputs: list[Any] = list(items)  # InputErrors pass through as they are
        for name in {item.model for item in items if isinstance(item, Prepared)}:
            group = [i for i, item in enumerate(items) if isinstance(item, Prepared) and item.model == name]
            try:
                results = self.rank([items[i] for i in group])
            except Exception as error:  # keep other models' requests alive; report this group's failure
                failure = InputError(f"the model failed on this input ({error})", 424, "generation")
                results = [failure] * len(group)
            for i, result in zip(group, results, strict=True):
                outputs[i] = result
        return outputs if batched else outputs[0]

    def rank(self, requests: list[Prepared]) -> list[Any]:
        """One padded forward for every text of ``requests`` (all on the same model)."""
        checkpoint = self.checkpoints[requests[0].model]
        choice = self.precisions.get(requests[0].model)
        with autocast(choice.precision if choice else "fp32", torch.device(self.device)):
            probs = mask_probabilities(
                checkpoint.model, [t for r in requests for t in r.texts], self.device
            )  # (M, V)
        results, seen = [], 0
        for request in requests:
            per_text = []
            for text in request.texts:
                per_mask = []
                for position in text.masks:
                    per_mask.append(
                        candidates(
                            probs[seen],
                            text.ids,
                            position,
                            checkpoint.tokenizer,
                            request.top_k,
                            request.targets,
                        )
                    )
                    seen += 1
                per_text.append(per_mask[0] if len(per_mask) == 1 else per_mask)
            results.append(per_text[0] if request.single else per_text)
        return results

    def encode_response(self, output: Any) -> FillMaskResponse:
        if isinstance(output, InputError):
            return error_response(output)
        return output


def choose_precisions(models: list[ServedModel], requested: str) -> dict[str, Choice]:
    """Each served encoder's fill-mask precision (``modeling.precision.choose``), decided once at start-up, on
    the CPU, before the workers load their copies."""
    from modeling.checkpoint import load_checkpoint

    choices = {}
    for model in models:
        if model.kind == "encoder":
            checkpoint = load_checkpoint(model.path, device="cpu")
            choices[model.name] = choose(requested, checkpoint.model, checkpoint.tokenizer)
    return choices


def served_precisions(apis: list[ls.LitAPI]) -> dict[str, dict[str, Any]]:
    """For ``/info``: each encoder's precision, what was asked for, why, and the check's agreement."""
    api = next((a for a in apis if isinstance(a, FillMaskAPI)), None)
    if api is None:
        return {}
    return {
        name: {
            "precision": c.precision,
            "requested": c.requested,
            "reason": c.reason,
            "agreement": None
            if c.agreement is None
            else {
                "masks": c.agreement.masks,
                "same_top1": c.agreement.same_top1,
                "same_top5": c.agreement.same_top5,
            },
        }
        for name, c in api.precisions.items()
    }
