"""A decoder served with int8 weights: /info says so, and /generate answers with the quantized model's numbers."""

import requests

from modeling.checkpoint import load_checkpoint
from modeling.generation import Sampling, stream_tokens
from modeling.quantization import quantize


def test_int8_decoder_generates_and_info_reports_it(start_server, tiny_checkpoints):
    path = tiny_checkpoints / "decoder-dense"
    server = start_server("--decoder", str(path), "--quantize", "int8", "--decoding", "eager")
    info = requests.get(server.url + "/info", timeout=30).json()
    [decoder] = info["models"]
    assert decoder["quantize"] == "int8" and decoder["decoding"] == "eager"
    body = {"inputs": "Hola", "parameters": {"max_new_tokens": 5, "details": True}}
    answer = requests.post(server.url + "/generate", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    served = answer.json()["details"]["tokens"]

    checkpoint = load_checkpoint(path)
    prompt = checkpoint.tokenizer.encode("Hola").ids
    local = {
        name: list(stream_tokens(model, checkpoint.tokenizer, prompt, Sampling(max_new_tokens=5)))
        for name, model in (("fp32", checkpoint.model), ("int8", quantize(checkpoint.model, "int8")))
    }
    assert [t["id"] for t in served] == [t.id for t in local["int8"]]
    # log-probabilities: the int8 model's to 1e-4 (same code, another process), not the float model's
    assert all(abs(t["logprob"] - q.logprob) < 1e-4 for t, q in zip(served, local["int8"], strict=True))
    assert any(abs(t["logprob"] - f.logprob) > 1e-4 for t, f in zip(served, local["fp32"], strict=True))
