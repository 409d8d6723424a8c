"""POST /translate against the real server: the HF translation pipeline's shape, the same text as the model
run locally, batching of concurrent requests, clear 4xx for bad input; /attention's cross-attention maps."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import requests
import torch

from modeling.beam_search import translate
from modeling.checkpoint import load_checkpoint
from service.encoding import decode

TEXTS = ["El perro come.", "La niña lee un libro en el jardín.", "Hoy llueve."]


def local(tiny_checkpoints, texts, num_beams=1, max_new_tokens=12):
    checkpoint = load_checkpoint(tiny_checkpoints / "translator")
    with torch.inference_mode():
        return translate(
            checkpoint.model, checkpoint.tokenizer, texts, num_beams=num_beams, max_new_tokens=max_new_tokens
        )


def test_one_text_and_a_list_in_the_pipeline_shape(server, tiny_checkpoints):
    one = server.post(
        "/translate", {"inputs": TEXTS[0], "parameters": {"max_new_tokens": 12, "num_beams": 1}}
    )
    assert one.status_code == 200, one.text
    assert one.json() == [{"translation_text": local(tiny_checkpoints, TEXTS[:1])[0]}]
    many = server.post("/translate", {"inputs": TEXTS, "parameters": {"max_new_tokens": 12, "num_beams": 3}})
    assert many.status_code == 200, many.text
    expected = local(tiny_checkpoints, TEXTS, num_beams=3)
    assert [r["translation_text"] for r in many.json()] == expected


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, tiny_checkpoints):
    expected = local(tiny_checkpoints, TEXTS)
    body = [{"inputs": text, "parameters": {"max_new_tokens": 12, "num_beams": 1}} for text in TEXTS * 2]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda b: server.post("/translate", b), body))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert [a.json()[0]["translation_text"] for a in answers] == expected * 2


def test_bad_input_gets_a_clear_4xx(server):
    cases = [
        ({"inputs": ""}, 422, "empty"),
        ({"inputs": []}, 422, "empty list"),
        ({"inputs": 5}, 422, "inputs"),
        ({"inputs": "hola", "parameters": {"num_beams": 0}}, 422, "num_beams"),
        ({"inputs": "hola", "parameters": {"max_new_tokens": 100000}}, 422, "max_new_tokens"),
        ({"inputs": "hola", "parameters": {"temperature": 1.0}}, 422, "temperature"),
        ({"inputs": "hola", "model": "decoder-dense"}, 404, "decoder-dense"),
        ({"inputs": "palabra " * 2000}, 413, "tokens"),
        ({"inputs": ["hola"] * 1000}, 422, "at most"),
    ]
    for body, status, words in cases:
        response = server.post("/translate", body)
        assert response.status_code == status, (body, response.text)
        error = response.json()
        assert set(error) >= {"error", "error_type"} and words in error["error"], (body, error)
    for raw, words in [  # strict types, finite floats and valid Unicode, as on the other routes
        ('{"inputs": "hola", "parameters": {"num_beams": "2"}}', "num_beams"),
        ('{"inputs": "hola", "parameters": {"length_penalty": NaN}}', "length_penalty"),
        ('{"inputs": ["hola", "\\ud800"]}', "inputs"),
    ]:
        response = requests.post(
            server.url + "/translate",
            data=raw.encode(),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert response.status_code == 422 and words in response.json()["error"], (raw, response.text)


def test_attention_returns_cross_attention_target_by_source(server, tiny_checkpoints):
    text = "La niña lee un libro."
    response = server.post(
        "/attention",
        {"inputs": text, "model": "translator", "parameters": {"translation": "ra bätsi", "target": 1}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "translator"
    S, T = len(body["source_tokens"]), len(body["tokens"])
    assert body["source_tokens"][-1]["special"] and body["tokens"][0]["special"]  # </s> and <s>
    assert [t["text"] for t in body["source_tokens"][:-1]] == [
        text[t["start"] : t["end"]] for t in body["source_tokens"][:-1]
    ]
    assert len(body["cross_attentions"]) == 2 and len(body["attentions"]) == 2
    for block in body["cross_attentions"]:
        cross = decode(block)
        assert cross.shape == (2, T, S)
        np.testing.assert_allclose(cross.sum(-1), 1.0, atol=0.02)  # rows over the source sum to 1
    self_ = decode(body["attentions"][0])
    assert self_.shape == (2, T, T) and np.triu(self_[0], 1).max() == 0  # causal
    assert len(body["rollout"]["source"]) == S and abs(sum(body["rollout"]["source"]) - 1) < 1e-3
    gradient = body["gradient"]
    assert gradient["target"]["position"] == 1 and len(gradient["source_relevance"]) == S
    assert decode(gradient["cross_maps"][0]).shape == (T, S)
    assert max(gradient["source_relevance"]) > 0
    # the model's own translation when none is given; a bad target is a 422 naming it
    own = server.post("/attention", {"inputs": text, "model": "translator", "parameters": {"layers": [1]}})
    assert (
        own.status_code == 200
        and own.json()["translation"] == local(tiny_checkpoints, [text], max_new_tokens=63)[0]
    )
    bad = server.post("/attention", {"inputs": text, "model": "translator", "parameters": {"target": 99}})
    assert bad.status_code == 422 and "target" in bad.json()["error"]
    wrong = server.post(
        "/attention", {"inputs": text, "model": "decoder-dense", "parameters": {"translation": "x"}}
    )
    assert wrong.status_code == 422 and "translator" in wrong.json()["error"]
