"""The OpenAI routes on the continuous-batching engine, over HTTP on the real server: they share one running batch
with /generate and /generate_stream, a client that leaves frees its row, and overload, the time limit, draining
and a dying process answer in OpenAI's error shape. The decoder is ``test_service_engine``'s: room for long
generations, never an early end. Nothing is timed against a bound: the tests read the engine's metrics."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import requests
import test_service_engine
import test_service_supervision

from service.supervision import EXIT_PROCESS_DIED

long_decoder = test_service_engine.long_decoder  # the same fixture
metric = test_service_engine.metric
MODEL = "decoder-long"  # the fixture's directory name
OPENAI_ERROR = {"message", "type", "param", "code"}


def open_stream(server, route: str, body: dict) -> tuple[requests.Response, object]:
    """A streamed request that has received its first event (so it holds a row)."""
    response = requests.post(server.url + route, json=body, stream=True, timeout=60)
    assert response.status_code == 200, response.text
    lines = (line for line in response.iter_lines() if line)
    assert next(lines).startswith(b"data:")
    return response, lines


def eventually(check, seconds: float = 15.0) -> bool:
    """Whether ``check()`` becomes true within ``seconds`` (a bound for a loaded machine, not a speed test)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def completion(tokens: int, stream: bool = False) -> dict:
    return {"model": MODEL, "prompt": "El gato", "max_tokens": tokens, "temperature": 0, "stream": stream}


def cancelled(server) -> float:
    return metric(server, "atencion_generation_ended_total", reason="cancelled", path="/v1/completions")


def test_one_row_is_shared_by_every_route_and_a_v1_client_that_leaves_frees_it(start_server, long_decoder):
    env = {"ATENCION_MAX_RUNNING": "1", "ATENCION_MAX_WAITING": "0", "ATENCION_MAX_NEW_TOKENS": "1000"}
    server = start_server("--decoder", str(long_decoder), env=env)
    response, _ = open_stream(server, "/v1/completions", completion(1000, stream=True))
    tgi = server.post("/generate", {"inputs": "Hola", "parameters": {"max_new_tokens": 2}})
    assert tgi.status_code == 429 and tgi.json()["error_type"] == "overloaded"  # the /v1 stream holds the row
    busy = server.post("/v1/completions", completion(2))
    assert busy.status_code == 429 and int(busy.headers["Retry-After"]) >= 1
    error = busy.json()["error"]
    assert (
        set(error) == OPENAI_ERROR and error["type"] == "rate_limit_error" and error["code"] == "overloaded"
    )
    chat = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hola"}],
        "max_tokens": 2,
        "stream": True,
    }
    busy_stream = server.post("/v1/chat/completions", chat)
    assert busy_stream.status_code == 429 and set(busy_stream.json()["error"]) == OPENAI_ERROR

    response.close()  # the client leaves: its row is freed before the next decode step
    assert eventually(lambda: cancelled(server) == 1)
    assert metric(server, "atencion_generation_running") == 0
    ok = server.post("/v1/completions", completion(4))
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4

    # and the other way round: a TGI stream holds the row that /v1 needs
    response, _ = open_stream(
        server, "/generate_stream", {"inputs": "El gato", "parameters": {"max_new_tokens": 1000}}
    )
    assert server.post("/v1/completions", completion(2)).status_code == 429
    response.close()
    assert eventually(lambda: metric(server, "atencion_generation_running") == 0)

    # a non-streaming /v1 client that leaves: its generation stops too
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(server.url + "/v1/completions", json=completion(1000), timeout=0.5)
    assert eventually(lambda: cancelled(server) == 2)
    first = metric(server, "atencion_generation_generated_tokens_total", path="/v1/completions")
    time.sleep(0.5)
    assert metric(server, "atencion_generation_generated_tokens_total", path="/v1/completions") == first
    assert metric(server, "atencion_generation_running") == 0

    # draining (SIGTERM): the stream in flight goes on, a new request gets 503 in OpenAI's shape
    response, _ = open_stream(server, "/v1/completions", completion(1000, stream=True))
    server.process.send_signal(signal.SIGTERM)
    assert eventually(lambda: server.get("/health").status_code == 503)  # draining
    late = requests.post(server.url + "/v1/completions", json=completion(2), timeout=30)
    assert late.status_code == 503 and int(late.headers["Retry-After"]) >= 1
    assert set(late.json()["error"]) == OPENAI_ERROR and "shutting down" in late.json()["error"]["message"]
    response.close()  # the last request in flight ends: the server stops
    assert server.process.wait(timeout=40) == 0


def test_the_in_flight_limit_answers_429_with_retry_after_in_both_shapes(start_server, long_decoder):
    """``ATENCION_MAX_CONCURRENT_REQUESTS`` (the middleware, before the engine) says when to retry too."""
    env = {"ATENCION_MAX_CONCURRENT_REQUESTS": "1", "ATENCION_MAX_NEW_TOKENS": "1000"}
    server = start_server("--decoder", str(long_decoder), env=env)
    tgi_stream = {"inputs": "El gato", "parameters": {"max_new_tokens": 1000}}
    held = [  # (response, its lines): dropping the lines would close the response
        open_stream(server, "/generate_stream", tgi_stream),
        open_stream(server, "/v1/completions", completion(1000, stream=True)),
    ]
    tgi = server.post("/generate_stream", tgi_stream)
    assert tgi.status_code == 429 and tgi.json()["error_type"] == "overloaded"
    assert "1 requests to /generate_stream in flight" in tgi.json()["error"]  # the middleware, not the engine
    assert tgi.headers["Retry-After"] == "1"
    v1 = server.post("/v1/completions", completion(2))
    assert v1.status_code == 429 and v1.headers["Retry-After"] == "1"
    error = v1.json()["error"]
    assert (
        set(error) == OPENAI_ERROR and error["type"] == "rate_limit_error" and error["code"] == "overloaded"
    )
    assert "in flight" in error["message"]
    assert metric(server, "atencion_generation_running") == 2  # the engine had room: only the limit refused
    for response, _ in held:
        response.close()
    assert eventually(lambda: metric(server, "atencion_generation_running") == 0)
    assert eventually(lambda: server.post("/v1/completions", completion(2)).status_code == 200)


def test_the_routes_batch_together_and_agree(start_server, long_decoder):
    server = start_server("--decoder", str(long_decoder))
    results: dict = {}

    def call(route: str, i: int) -> None:
        body = (
            {"inputs": "El gato", "parameters": {"max_new_tokens": 32}}
            if route == "/generate"
            else completion(32)
        )
        results[(route, i)] = requests.post(server.url + route, json=body, timeout=120)

    threads = [
        threading.Thread(target=call, args=(r, i)) for r in ("/generate", "/v1/completions") for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = {
        r.json()["generated_text"] if route == "/generate" else r.json()["choices"][0]["text"]
        for (route, _), r in results.items()
    }
    assert len(texts) == 1  # the same greedy text from either route
    steps = metric(server, "atencion_generation_batch_size_count")
    assert steps < 8 * 31  # fewer decode steps than tokens: the two routes' requests ran in one batch
    for route in ("/generate", "/v1/completions"):  # per-route metrics
        assert metric(server, "atencion_generation_generated_tokens_total", path=route) == 4 * 32
        assert metric(server, "atencion_requests_total", path=route, status="200") == 4

    # a client that leaves a stream of two prompts × two choices: its four rows are freed
    body = {**completion(256, stream=True), "prompt": ["El gato", "La niña"], "n": 2, "temperature": 1.0}
    response, _ = open_stream(server, "/v1/completions", body)
    response.close()
    assert eventually(lambda: cancelled(server) == 4)
    assert eventually(lambda: metric(server, "atencion_generation_running") == 0)


def test_the_time_limit_ends_a_v1_generation_in_openais_shape(start_server, long_decoder):
    env = {"ATENCION_REQUEST_TIMEOUT": "2", "ATENCION_MAX_NEW_TOKENS": "100000"}
    server = start_server("--decoder", str(long_decoder), env=env)
    timed_out = server.post("/v1/completions", completion(4000))  # far more than 2 s of decoding
    assert timed_out.status_code == 504
    error = timed_out.json()["error"]
    assert set(error) == OPENAI_ERROR and error["code"] == "timeout" and "2 s limit" in error["message"]
    _, lines = open_stream(server, "/v1/completions", completion(4000, stream=True))
    events = [line[len(b"data: ") :] for line in lines]
    assert events[-1] == b"[DONE]" and json.loads(events[-2])["error"]["code"] == "timeout"
    assert metric(server, "atencion_generation_running") == 0


def test_a_stream_cut_short_by_a_dying_process_ends_in_openais_shape(start_server, long_decoder):
    server = start_server("--decoder", str(long_decoder), env={"ATENCION_MAX_NEW_TOKENS": "1000"})
    _, lines = open_stream(server, "/v1/completions", completion(1000, stream=True))
    os.kill(test_service_supervision.process_of(server, "inference worker"), signal.SIGKILL)
    events = [line for line in lines]
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][len(b"data: ") :])["error"]
    assert set(error) == OPENAI_ERROR and error["type"] == "server_error" and error["code"] == "unavailable"
    assert server.process.wait(timeout=30) == EXIT_PROCESS_DIED
