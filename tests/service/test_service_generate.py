"""POST /generate and /generate_stream: TGI shapes, parity with stream_tokens, SSE events, the HF client."""

import json

from huggingface_hub import InferenceClient

from modeling.checkpoint import load_checkpoint
from modeling.generation import Sampling, generate_text


def events(response) -> list[dict]:
    """The ``data:`` payloads of a server-sent-event body."""
    chunks = [c for c in response.text.split("\n\n") if c.strip()]
    assert all(c.startswith("data:") for c in chunks), chunks
    return [json.loads(c[len("data:") :]) for c in chunks]


def test_greedy_generation_is_the_checkpoints_own(server, tiny_checkpoints):
    prompt = "El gato duerme en"
    body = server.post("/generate", {"inputs": prompt, "parameters": {"max_new_tokens": 8}}).json()
    checkpoint = load_checkpoint(tiny_checkpoints / "decoder-dense")
    ids = checkpoint.tokenizer.encode(prompt).ids
    expected = generate_text(checkpoint.model, checkpoint.tokenizer, ids, Sampling(max_new_tokens=8))
    assert body["generated_text"] == expected and body["details"] is None


def test_details_and_full_text(server):
    body = server.post(
        "/generate",
        {"inputs": "La niña", "parameters": {"max_new_tokens": 5, "details": True, "return_full_text": True}},
    ).json()
    details = body["details"]
    assert body["generated_text"].startswith("La niña")
    assert details["generated_tokens"] == len(details["tokens"]) <= 5
    assert details["finish_reason"] in ("length", "eos_token", "stop_sequence")
    assert all(
        set(t) == {"id", "text", "logprob", "special"} and t["logprob"] <= 0 for t in details["tokens"]
    )
    assert details["seed"] is None  # greedy


def test_sampling_with_a_seed_repeats_and_reports_it(server):
    params = {"max_new_tokens": 10, "do_sample": True, "temperature": 1.5, "seed": 42, "details": True}
    first = server.post("/generate", {"inputs": "Mañana", "parameters": params}).json()
    again = server.post("/generate", {"inputs": "Mañana", "parameters": params}).json()
    assert first == again and first["details"]["seed"] == 42
    unseeded = server.post("/generate", {"inputs": "Mañana", "parameters": {**params, "seed": None}}).json()
    assert isinstance(unseeded["details"]["seed"], int)


def test_a_stop_sequence_ends_generation(server):
    free = server.post("/generate", {"inputs": "El sol", "parameters": {"max_new_tokens": 12}}).json()
    text = free["generated_text"]
    stop = text[len(text) // 2 : len(text) // 2 + 1] if len(text) > 1 else text
    body = server.post(
        "/generate",
        {"inputs": "El sol", "parameters": {"max_new_tokens": 12, "stop": [stop], "details": True}},
    ).json()
    assert body["details"]["finish_reason"] == "stop_sequence"
    assert stop in body["generated_text"] and len(body["generated_text"]) <= len(text)


def test_the_sparse_decoder_is_served_by_name(server, tiny_checkpoints):
    body = server.post("/generate", {"inputs": "Los niños", "model": "decoder-sparse"}).json()
    checkpoint = load_checkpoint(tiny_checkpoints / "decoder-sparse")
    ids = checkpoint.tokenizer.encode("Los niños").ids
    assert body["generated_text"] == generate_text(checkpoint.model, checkpoint.tokenizer, ids, Sampling(20))


def test_stream_sends_one_event_per_token_then_the_text(server):
    response = server.post("/generate_stream", {"inputs": "El tren", "parameters": {"max_new_tokens": 6}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response)
    assert [e["index"] for e in got] == list(range(len(got)))
    assert all(e["generated_text"] is None and e["details"] is None for e in got[:-1])
    last = got[-1]
    assert last["generated_text"] == "".join(e["token"]["text"] for e in got if not e["token"]["special"])
    assert last["details"]["generated_tokens"] == len(got)
    whole = server.post("/generate", {"inputs": "El tren", "parameters": {"max_new_tokens": 6}}).json()
    assert whole["generated_text"] == last["generated_text"]


def test_huggingface_inference_client_generates_and_streams(server):
    client = InferenceClient(model=server.url + "/generate")
    text = client.text_generation("El gato", max_new_tokens=5)
    assert isinstance(text, str)
    detailed = client.text_generation("El gato", max_new_tokens=5, details=True)
    assert detailed.generated_text == text and detailed.details.generated_tokens <= 5
    streamer = InferenceClient(model=server.url + "/generate_stream")
    pieces = list(streamer.text_generation("El gato", max_new_tokens=5, stream=True))
    assert "".join(pieces) == text
    final = list(streamer.text_generation("El gato", max_new_tokens=5, stream=True, details=True))[-1]
    assert final.generated_text == text and final.details.finish_reason in ("length", "eos_token")


def test_top_n_tokens_lists_the_best_alternatives_of_each_step(server, tiny_checkpoints):
    """TGI's top_n_tokens: the N best per generated token, on the scale of the token's own logprob; against one
    forward over prompt + output (1e-4: cached decoding vs. the full pass)."""
    from modeling.logprobs import prompt_logprobs

    params = {"max_new_tokens": 5, "details": True, "top_n_tokens": 3}
    body = server.post("/generate", {"inputs": "Mañana vamos", "parameters": params}).json()
    tokens, top = body["details"]["tokens"], body["details"]["top_tokens"]
    assert len(top) == len(tokens) and all(len(step) == 3 for step in top)
    checkpoint = load_checkpoint(tiny_checkpoints / "decoder-dense")
    ids = checkpoint.tokenizer.encode("Mañana vamos").ids
    scored = prompt_logprobs(checkpoint.model, ids + [t["id"] for t in tokens], 3)[len(ids) :]
    for token, step, reference in zip(tokens, top, scored, strict=True):
        assert step[0]["id"] == token["id"] and step[0]["logprob"] == token["logprob"]  # greedy: the best
        assert [t["id"] for t in step] == [i for i, _ in reference.top]
        assert all(abs(t["logprob"] - v) < 1e-4 for t, (_, v) in zip(step, reference.top, strict=True))
    stream = events(server.post("/generate_stream", {"inputs": "Mañana vamos", "parameters": params}))
    assert [e["top_tokens"] for e in stream] == top
    plain = events(server.post("/generate_stream", {"inputs": "Hola", "parameters": {"max_new_tokens": 2}}))
    assert all(e["top_tokens"] is None for e in plain)
    too_many = server.post("/generate", {"inputs": "Hola", "parameters": {"top_n_tokens": 6}})
    assert too_many.status_code == 422 and "top_n_tokens" in too_many.json()["error"]


def test_a_token_event_is_written_as_its_dict_would_be():
    """The stream writes each token's event directly: the same text as dumping its dict (quotes, escapes,
    non-ASCII, a special token, the lowest log-probability)."""
    from modeling.generation import GeneratedToken
    from service.generate import event, token_dict, token_event

    for token in (
        GeneratedToken(5, ' dijo "ñandú"\n\\', -0.123456789, False),
        GeneratedToken(2, "</s>", -3.4028234663852886e38, True),
        GeneratedToken(7, "€😀\u2028", -1e-07, False),
    ):
        data = {
            "index": 3,
            "token": token_dict(token),
            "top_tokens": None,
            "generated_text": None,
            "details": None,
        }
        assert token_event(3, token) == event(data)
