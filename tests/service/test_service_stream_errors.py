"""A failure after the stream has started arrives as a TGI error event (the status line is already 200).

Run in-process on the stream route's event generator (no HTTP): a real tiny decoder whose third decoding step
fails inside the batching engine.
"""

import asyncio
import json

from modeling.checkpoint import load_checkpoint
from modeling.generation import Sampling
from service.engine import Engine
from service.generate import _events


class _Connected:
    """A request whose client never leaves."""

    async def receive(self) -> dict:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}


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
    engine = Engine(checkpoint.model, checkpoint.tokenizer).start()
    ids = checkpoint.tokenizer.encode("El gato").ids

    async def run() -> list[str]:
        generation = engine.submit(ids, Sampling(max_new_tokens=10))
        return [chunk async for chunk in _events(generation, "El gato", False, _Connected())]

    try:
        chunks = asyncio.run(run())
    finally:
        engine.stop()
    events = [json.loads(chunk.removeprefix("data:")) for chunk in chunks]
    assert [e["index"] for e in events[:-1]] == [0, 1]
    assert events[-1] == {
        "error": "generation failed: out of memory on the device",
        "error_type": "generation",
    }
