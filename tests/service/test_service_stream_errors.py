"""A failure after the stream has started arrives as a TGI error event (the status line is already 200).

Run in-process on the stream API's ``predict`` (no HTTP): a real tiny decoder whose third decoding step fails.
"""

import json
import time

from modeling.checkpoint import load_checkpoint
from modeling.generation import Sampling
from service.generate import GenerateStreamAPI, Job
from service.settings import Limits


def test_an_error_mid_stream_is_the_last_event(tiny_checkpoints):
    checkpoint = load_checkpoint(tiny_checkpoints / "decoder-dense")
    steps = {"n": 0}
    original = checkpoint.model.next_logits

    def failing(*args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 3:
            raise RuntimeError("out of memory on the device")
        return original(*args, **kwargs)

    checkpoint.model.next_logits = failing
    api = GenerateStreamAPI([], Limits())
    api.checkpoints = {"decoder-dense": checkpoint}
    ids = checkpoint.tokenizer.encode("El gato").ids
    job = Job("decoder-dense", "El gato", ids, Sampling(max_new_tokens=10), False, False, time.time())
    events = [json.loads(chunk.removeprefix("data:")) for chunk in api.encode_response(api.predict(job))]
    assert [e["index"] for e in events[:-1]] == [0, 1]
    assert events[-1] == {
        "error": "generation failed: out of memory on the device",
        "error_type": "generation",
    }
