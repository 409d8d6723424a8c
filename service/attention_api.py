"""``POST /attention``: wiring only — the worker calls ``service.inspection.analyse`` on a served model.

The worker holds every served model (encoders and decoders). Caps: ``ATENCION_MAX_INPUT_TOKENS`` bounds the
text (413 over it) and ``max_attention_cells`` the probabilities one answer carries (413 with a suggestion to
ask for fewer layers or heads); a bad layer, head or target is a 422 naming it.
"""

from typing import Any

import litserve as ls

from service.errors import InputError, error_response
from service.metrics import BATCH_SIZE, INPUT_TOKENS
from service.models import ServedModel, load_for_worker, model_name
from service.schemas import AttentionRequest
from service.settings import Limits

PATH = "/attention"


class AttentionAPI(ls.LitAPI):
    def __init__(self, models: list[ServedModel], limits: Limits) -> None:
        super().__init__(max_batch_size=1, api_path=PATH)
        self.served = models
        self.limits = limits
        self.threads = 1  # torch threads in the worker; service.app sets it from the core count

    def setup(self, device: str) -> None:
        self.checkpoints = load_for_worker(self.served, None, device, self.threads)

    def decode_request(self, request: AttentionRequest) -> AttentionRequest:
        return request

    def predict(self, request: AttentionRequest) -> dict[str, Any] | InputError:
        from service.inspection import InspectionError, InspectionTooLarge, analyse
        from service.translation_inspection import analyse_translation

        BATCH_SIZE.labels(path=PATH).observe(1)
        try:
            name = model_name(self.checkpoints, request.model, None)
        except InputError as error:
            return error
        checkpoint = self.checkpoints[name]
        p = request.parameters
        try:
            if checkpoint.config.kind == "translator":
                body = analyse_translation(
                    checkpoint.model, checkpoint.tokenizer, request.inputs, translation=p.translation,
                    layers=p.layers, heads=p.heads, target=p.target, max_tokens=self.limits.max_input_tokens,
                    max_cells=self.limits.max_attention_cells, gradient=p.gradient,
                )  # fmt: skip
            elif p.translation is not None:
                return InputError("parameters.translation: only a translator model takes a translation", 422)
            else:
                body = analyse(
                    checkpoint.model,
                    checkpoint.tokenizer,
                    request.inputs,
                    layers=p.layers,
                    heads=p.heads,
                    target=p.target,
                    encoding=p.encoding,
                    max_tokens=self.limits.max_input_tokens,
                    max_cells=self.limits.max_attention_cells,
                    gradient=p.gradient,
                )
        except InspectionTooLarge as error:
            return InputError(str(error), 413, "too_long")
        except InspectionError as error:
            return InputError(str(error), 422, "validation")
        INPUT_TOKENS.labels(path=PATH).inc(len(body.get("tokens", [])))
        return {"model": name, **body}

    def encode_response(self, output: dict[str, Any] | InputError) -> dict[str, Any]:
        if isinstance(output, InputError):
            return error_response(output)
        return output
