"""Inputs an attacker (or a sloppy client) sends: degenerate floats, NaN, lone surrogates, lax types.

Each gets either a normal answer or a 4xx naming the field, never a 500 or a raw torch message in a stream.
"""

import json
import math

import pytest
import requests

DEGENERATE = [
    {"do_sample": True, "temperature": 1e-40},
    {"do_sample": True, "temperature": 5e-324},
    {"do_sample": True, "top_p": 1e-50},
    {"repetition_penalty": 1e-320},
    {"do_sample": True, "temperature": 100, "repetition_penalty": 1e-320, "top_k": 1},
]


def raw_post(server, path: str, body: str) -> requests.Response:
    """A body as written (JSON with NaN or ``\\ud800`` escapes that ``requests`` would not produce)."""
    return requests.post(
        server.url + path, data=body.encode(), headers={"content-type": "application/json"}, timeout=60
    )


def stream_events(response: requests.Response) -> list[dict]:
    return [json.loads(line.removeprefix("data:")) for line in response.text.split("\n\n") if line.strip()]


@pytest.mark.parametrize("parameters", DEGENERATE, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_degenerate_but_valid_numbers_generate(server, parameters):
    params = {**parameters, "max_new_tokens": 4, "details": True, "seed": 3}
    answer = server.post("/generate", {"inputs": "El gato", "parameters": params})
    assert answer.status_code == 200, answer.text
    assert all(math.isfinite(t["logprob"]) for t in answer.json()["details"]["tokens"])
    stream = server.post("/generate_stream", {"inputs": "El gato", "parameters": params})
    assert stream.status_code == 200
    events = stream_events(stream)
    assert events and not any("error" in e for e in events), events[-1]
    assert events[-1]["generated_text"] == answer.json()["generated_text"]


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("path", ["/generate", "/generate_stream"])
def test_non_finite_numbers_are_named(server, path, field, value):
    response = raw_post(server, path, f'{{"inputs": "Hola", "parameters": {{"{field}": {value}}}}}')
    assert response.status_code == 422, response.text
    error = response.json()
    assert f"parameters.{field}" in error["error"] and "finite" in error["error"]


SURROGATES = [
    ("/generate", '{"inputs": "hola \\ud800"}', "inputs"),
    ("/generate_stream", '{"inputs": "hola \\ud800"}', "inputs"),
    ("/attention", '{"inputs": "hola \\udfff"}', "inputs"),
    ("/fill-mask", '{"inputs": "hola [MASK] \\ud800"}', "inputs"),
    ("/fill-mask", '{"inputs": ["El [MASK].", "\\udbff [MASK]"]}', "inputs.1"),
    (
        "/fill-mask",
        '{"inputs": "El [MASK].", "parameters": {"targets": ["gato\\ud800"]}}',
        "parameters.targets",
    ),
    ("/generate", '{"inputs": "hola", "parameters": {"stop": ["\\ud800"]}}', "parameters.stop.0"),
    ("/generate", '{"inputs": "hola", "model": "\\ud800"}', "model"),
]


@pytest.mark.parametrize(("path", "body", "field"), SURROGATES)
def test_lone_surrogates_are_not_text(server, path, body, field):
    response = raw_post(server, path, body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error_type"] == "invalid_text"
    assert error["error"].startswith(field) and "surrogate" in error["error"]


LAX = [
    ("/fill-mask", {"inputs": "El [MASK].", "parameters": {"top_k": "3"}}, "parameters.top_k"),
    ("/fill-mask", {"inputs": "El [MASK].", "parameters": {"top_k": 3.0}}, "parameters.top_k"),
    ("/generate", {"inputs": "Hola", "stream": 0}, "stream"),
    ("/generate", {"inputs": "Hola", "parameters": {"do_sample": "true"}}, "parameters.do_sample"),
    ("/generate", {"inputs": "Hola", "parameters": {"max_new_tokens": "5"}}, "parameters.max_new_tokens"),
    ("/generate", {"inputs": "Hola", "parameters": {"details": 1}}, "parameters.details"),
    ("/generate_stream", {"inputs": "Hola", "parameters": {"seed": True}}, "parameters.seed"),
    ("/generate", {"inputs": "Hola", "parameters": {"temperature": "0.5"}}, "parameters.temperature"),
    ("/attention", {"inputs": "El gato.", "parameters": {"gradient": 0}}, "parameters.gradient"),
    ("/attention", {"inputs": "El gato.", "parameters": {"layers": ["0"]}}, "parameters.layers"),
]


@pytest.mark.parametrize(("path", "body", "field"), LAX)
def test_strict_types_name_the_field(server, path, body, field):
    response = server.post(path, body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]


def test_an_integer_is_still_a_number(server):
    response = server.post(
        "/generate", {"inputs": "Hola", "parameters": {"temperature": 1, "max_new_tokens": 2}}
    )
    assert response.status_code == 200, response.text
