"""Every bad input gets a 4xx with {"error", "error_type"} naming the problem; none gets a 500."""

import json

import pytest
import requests

LONG = "El gato duerme en la casa. " * 40  # well over the tiny models' 64 positions

CASES = [
    # (path, body, status, error_type, a word the message must contain)
    ("/fill-mask", {"inputs": "El gato duerme."}, 422, "no_mask", "[MASK]"),
    ("/fill-mask", {"inputs": "   "}, 422, "empty_input", "inputs"),
    ("/fill-mask", {"inputs": []}, 422, "empty_input", "inputs"),
    ("/fill-mask", {"inputs": LONG + "[MASK]"}, 413, "too_long", "tokens"),
    ("/fill-mask", {"inputs": "El [MASK].", "parameters": {"top_k": 0}}, 422, "out_of_range", "top_k"),
    ("/fill-mask", {"inputs": "El [MASK].", "parameters": {"top_k": 1000}}, 422, "out_of_range", "top_k"),
    ("/fill-mask", {"inputs": "El [MASK].", "model": "bert-grande"}, 404, "unknown_model", "encoder-dense"),
    (
        "/fill-mask",
        {"inputs": "El [MASK].", "model": "decoder-dense"},
        404,
        "unknown_model",
        "encoder-sparse",
    ),
    ("/fill-mask", {"inputs": "El [MASK].", "parameters": {"topk": 3}}, 422, "validation", "topk"),
    ("/fill-mask", {"texto": "El [MASK]."}, 422, "validation", "inputs"),
    ("/fill-mask", {"inputs": 42}, 422, "validation", "inputs"),
    ("/generate", {"inputs": ""}, 422, "empty_input", "inputs"),
    ("/generate", {"inputs": LONG}, 413, "too_long", "tokens"),
    (
        "/generate",
        {"inputs": "Hola", "parameters": {"max_new_tokens": 0}},
        422,
        "out_of_range",
        "max_new_tokens",
    ),
    (
        "/generate",
        {"inputs": "Hola", "parameters": {"max_new_tokens": 10**6}},
        422,
        "out_of_range",
        "at most",
    ),
    ("/generate", {"inputs": "Hola", "parameters": {"temperature": 0}}, 422, "out_of_range", "temperature"),
    ("/generate", {"inputs": "Hola", "parameters": {"top_p": 1.5}}, 422, "out_of_range", "top_p"),
    ("/generate", {"inputs": "Hola", "parameters": {"stop": [""]}}, 422, "out_of_range", "stop"),
    ("/generate", {"inputs": "Hola", "parameters": {"best_of": 3}}, 422, "unsupported", "best_of"),
    ("/generate", {"inputs": "Hola", "model": "gpt-9"}, 404, "unknown_model", "decoder-sparse"),
    ("/generate_stream", {"inputs": LONG}, 413, "too_long", "tokens"),
    ("/generate_stream", {"inputs": "Hola", "parameters": {"seed": -1}}, 422, "out_of_range", "seed"),
    ("/attention", {"inputs": ""}, 422, "empty_input", "inputs"),
    ("/attention", {"inputs": LONG}, 413, "too_long", "shorter"),
    ("/attention", {"inputs": "El gato.", "parameters": {"layers": [7]}}, 422, "validation", "layer"),
    ("/attention", {"inputs": "El gato.", "model": "nadie"}, 404, "unknown_model", "decoder-dense"),
]


@pytest.mark.parametrize(("path", "body", "status", "error_type", "word"), CASES)
def test_bad_input_is_named(server, path, body, status, error_type, word):
    response = server.post(path, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "error_type"}
    assert payload["error_type"] == error_type
    assert word in payload["error"]


@pytest.mark.parametrize("path", ["/fill-mask", "/generate", "/generate_stream", "/attention"])
def test_malformed_json_and_non_objects(server, path):
    broken = requests.post(
        server.url + path, data=b'{"inputs": "El', headers={"content-type": "application/json"}, timeout=30
    )
    assert broken.status_code == 400 and broken.json()["error_type"] == "malformed_json"
    array = server.post(path, [1, 2])
    assert array.status_code == 422 and "JSON object" in array.json()["error"]
    empty = requests.post(server.url + path, timeout=30)
    assert empty.status_code == 422 and "body" in empty.json()["error"]


def test_payload_over_the_limit_is_413_declared_or_chunked(server):
    huge = {"inputs": "a " * 600_000 + "[MASK]"}
    response = server.post("/fill-mask", huge)
    assert response.status_code == 413 and response.json()["error_type"] == "payload_too_large"

    def chunks():
        yield b'{"inputs": "'
        for _ in range(200):
            yield b"a " * 5000
        yield b'[MASK]"}'

    chunked = requests.post(
        server.url + "/fill-mask", data=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert chunked.status_code == 413


def test_unknown_routes_and_methods_answer_in_the_same_shape(server):
    missing = server.get("/no-such-route")
    assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
    wrong = server.get("/fill-mask")
    assert wrong.status_code == 405 and set(wrong.json()) == {"error", "error_type"}


def test_targets_that_give_no_token_fail_alone(server):
    response = server.post("/fill-mask", {"inputs": "El [MASK].", "parameters": {"targets": [" "]}})
    assert response.status_code == 422 and "target" in response.json()["error"]


ODD_VALUES = [None, True, -1, 2**70, 1.5, float("nan"), float("inf"), "", "ñ" * 3, [], {}, [None], {"a": [1]}]


@pytest.mark.parametrize("path", ["/fill-mask", "/generate", "/attention"])
def test_odd_values_anywhere_never_give_a_500(server, path):
    fields = {
        "/fill-mask": ["top_k", "targets"],
        "/generate": [
            "max_new_tokens",
            "temperature",
            "top_k",
            "top_p",
            "repetition_penalty",
            "seed",
            "stop",
        ],
        "/attention": ["layers", "heads", "target", "encoding", "gradient"],
    }[path]
    text = "El [MASK] duerme." if path == "/fill-mask" else "El gato duerme."
    statuses = set()

    def post(body):  # json.dumps writes NaN/Infinity, which the server's JSON parser accepts
        data = json.dumps(body, allow_nan=True).encode()
        headers = {"content-type": "application/json"}
        return requests.post(server.url + path, data=data, headers=headers, timeout=60)

    for value in ODD_VALUES:
        for body in ({"inputs": value}, {"inputs": text, "model": value}):
            statuses.add(post(body).status_code)
        for field in fields:
            response = post({"inputs": text, "parameters": {field: value}})
            assert response.status_code < 500, (field, value, response.text)
            statuses.add(response.status_code)
    assert max(statuses) < 500
