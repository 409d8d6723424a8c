"""``POST /translate``: the Hugging Face translation pipeline's shape over the encoder–decoder, batched.

``{"inputs": str | [str], "parameters": {"max_new_tokens", "num_beams", "length_penalty"}}`` →
``[{"translation_text": str}, …]``, one per input (a single string gives a list of one, as the pipeline does).

Requests that arrive within ``batch_timeout`` of each other are translated together: one padded encoder pass
and one cached beam search per (model, decoding parameters) group. As in ``/fill-mask``, a bad item becomes its
own 4xx without failing the others in its batch.
"""

from dataclasses import dataclass
from typing import Any

import litserve as ls
import torch

from modeling.beam_search import translate
from service.errors import InputError, error_response
from service.fill_mask import PatientBatchedLoop
from service.metrics import BATCH_SIZE, INPUT_TOKENS
from service.models import ServedModel, load_for_worker
from service.schemas import TranslateRequest, TranslateResponse
from service.settings import Limits

PATH = "/translate"


@dataclass(frozen=True)
class Prepared:
    model: str
    texts: list[str]
    num_beams: int
    length_penalty: float
    max_new_tokens: int

    @property
    def decoding(self) -> tuple[str, int, float, int]:
        return self.model, self.num_beams, self.length_penalty, self.max_new_tokens


class TranslateAPI(ls.LitAPI):
    """One worker holds every served translator; a batch is split by model and decoding parameters."""

    def __init__(self, models: list[ServedModel], limits: Limits, max_batch_size: int, batch_timeout: float):
        loop = PatientBatchedLoop() if max_batch_size > 1 else "auto"
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=PATH, loop=loop)
        self.served = [m for m in models if m.kind == "translator"]
        self.limits = limits
        self.threads = 1  # torch threads in the worker; service.app sets it from the core count

    def setup(self, device: str) -> None:
        self.checkpoints = load_for_worker(self.served, "translator", device, self.threads)

    def decode_request(self, request: TranslateRequest) -> Prepared | InputError:
        name = request.model or self.served[0].name
        if name not in self.checkpoints:
            known = ", ".join(self.checkpoints)
            return InputError(f"model: unknown translator {name!r}; served: {known}", 404, "unknown_model")
        texts = [request.inputs] if isinstance(request.inputs, str) else list(request.inputs)
        p = request.parameters
        return Prepared(name, texts, p.num_beams, p.length_penalty, p.max_new_tokens)

    def batch(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def unbatch(self, outputs: list[Any]) -> list[Any]:
        return outputs

    def predict(self, items: Any) -> Any:
        batched = isinstance(items, list)
        items = items if batched else [items]
        BATCH_SIZE.labels(path=PATH).observe(len(items))
        outputs: list[Any] = list(items)  # InputErrors pass through as they are
        for decoding in {item.decoding for item in items if isinstance(item, Prepared)}:
            group = [
                i for i, item in enumerate(items) if isinstance(item, Prepared) and item.decoding == decoding
            ]
            try:
                results = self.translate([items[i] for i in group])
            except Exception as error:  # keep the other groups alive; report this group's failure
                results = [InputError(f"the model failed on this input ({error})", 424, "generation")] * len(
                    group
                )
            for i, result in zip(group, results, strict=True):
                outputs[i] = result
        return outputs if batched else outputs[0]

    @torch.inference_mode()
    def translate(self, requests: list[Prepared]) -> list[list[dict[str, str]]]:
        """Every text of ``requests`` (same model and decoding) in one batched search."""
        first = requests[0]
        checkpoint = self.checkpoints[first.model]
        texts = [t for r in requests for t in r.texts]
        INPUT_TOKENS.labels(path=PATH).inc(
            sum(len(e.ids) for e in checkpoint.tokenizer.encode_batch(texts, add_special_tokens=False))
        )
        translated = translate(
            checkpoint.model, checkpoint.tokenizer, texts, num_beams=first.num_beams,
            max_new_tokens=first.max_new_tokens, length_penalty=first.length_penalty,
        )  # fmt: skip
        results, seen = [], 0
        for request in requests:
            chunk = translated[seen : seen + len(request.texts)]
            seen += len(request.texts)
            results.append([{"translation_text": text} for text in chunk])
        return results

    def encode_response(self, output: Any) -> TranslateResponse:
        if isinstance(output, InputError):
            return error_response(output)
        return output
