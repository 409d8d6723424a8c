"""The batching engine behind /generate and /generate_stream, over HTTP on the real server: clients that leave
free their rows, a full queue answers 429 with Retry-After, the time limit ends a generation, routes share one
batch. The decoder here has room for long generations (max_len 1024), is wide enough (d_model 384, 4 layers)
that 256 tokens take seconds, and never ends them early (its end-of-sequence embedding is zero, so greedy never
picks it). Nothing is timed against a bound: the tests compare counters before and after. One test drives the
routes in-process instead, to choose the moment a client leaves (before the first byte)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import pytest
import requests
import torch
from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from tokenizers import Tokenizer

from modeling.checkpoint import build_model, load_checkpoint, save_checkpoint
from modeling.config import DecoderConfig
from service import generate, models, openai_api
from service.engine import Engine
from service.settings import Limits


@pytest.fixture(scope="module")
def long_decoder(tiny_checkpoints, tmp_path_factory):
    tokenizer = Tokenizer.from_file(str(tiny_checkpoints / "decoder-dense" / "tokenizer.json"))
    config = DecoderConfig(
        vocab_size=tokenizer.get_vocab_size(), bos_token_id=1, eos_token_id=2,
        d_model=384, n_layers=4, n_heads=6, d_ff=1536, max_len=4096, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.embeddings.tokens.weight.mul_(10.0)
        model.embeddings.tokens.weight[config.eos_token_id] = 0.0
    path = tmp_path_factory.mktemp("long") / "decoder-long"
    save_checkpoint(model, tokenizer, path)
    return path


def metric(server, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_clients_that_leave_stop_their_generation(start_server, long_decoder):
    server = start_server("--decoder", str(long_decoder), env={"ATENCION_MAX_NEW_TOKENS": "1000"})
    body = {"inputs": "El gato", "parameters": {"max_new_tokens": 256}}
    streams = []
    for _ in range(20):
        response = requests.post(server.url + "/generate_stream", json=body, stream=True, timeout=60)
        lines = response.iter_lines()
        assert next(lines).startswith(b"data:")  # generating
        streams.append((response, lines))
    for response, _ in streams:  # all leave at once
        response.close()
    time.sleep(1.0)
    after_one_second = metric(server, "atencion_generation_generated_tokens_total")
    began = time.monotonic()
    quick = server.post("/generate_stream", {"inputs": "La niña", "parameters": {"max_new_tokens": 4}})
    waited = time.monotonic() - began
    assert quick.status_code == 200 and quick.text.count("data:") == 4
    time.sleep(1.0)
    later = metric(server, "atencion_generation_generated_tokens_total") - 4
    assert later == after_one_second < 20 * 256  # stopped growing within a second, far from finishing
    assert metric(server, "atencion_generation_ended_total", reason="cancelled") == 20
    assert metric(server, "atencion_generation_running") == 0
    print(f"a new 4-token request after 20 disconnects took {waited:.3f} s")

    # a non-streaming client that leaves: its generation stops too
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(
            server.url + "/generate", json={**body, "parameters": {"max_new_tokens": 1000}}, timeout=0.3
        )
    time.sleep(1.0)
    first = metric(server, "atencion_generation_generated_tokens_total")
    time.sleep(0.5)
    assert metric(server, "atencion_generation_generated_tokens_total") == first
    assert metric(server, "atencion_generation_ended_total", reason="cancelled", path="/generate") == 1


def test_a_full_queue_answers_429_with_retry_after_and_the_time_limit_ends_a_generation(
    start_server, long_decoder
):
    env = {
        "ATENCION_MAX_RUNNING": "1",
        "ATENCION_MAX_WAITING": "0",
        "ATENCION_REQUEST_TIMEOUT": "2",
        "ATENCION_MAX_NEW_TOKENS": "100000",
    }
    server = start_server("--decoder", str(long_decoder), env=env)
    long = {"inputs": "El gato", "parameters": {"max_new_tokens": 4000}}  # far more than 2 s of decoding
    response = requests.post(server.url + "/generate_stream", json=long, stream=True, timeout=60)
    lines = response.iter_lines()
    assert next(lines).startswith(b"data:")  # the one row is taken
    busy = server.post("/generate", {"inputs": "Hola", "parameters": {"max_new_tokens": 2}})
    assert busy.status_code == 429, busy.text
    assert busy.json()["error_type"] == "overloaded" and int(busy.headers["Retry-After"]) >= 1
    events = [json.loads(line[len(b"data:") :]) for line in lines if line.startswith(b"data:")]
    assert events[-1]["error_type"] == "timeout" and "2 s limit" in events[-1]["error"]
    assert 0 < len(events) < 4000

    timed_out = server.post("/generate", long)
    assert timed_out.status_code == 504 and timed_out.json()["error_type"] == "timeout"
    assert metric(server, "atencion_generation_running") == 0  # its row is free again
    ok = server.post("/generate", {"inputs": "Hola", "parameters": {"max_new_tokens": 2}})
    assert ok.status_code == 200


def test_both_routes_share_one_batch(start_server, long_decoder):
    server = start_server("--decoder", str(long_decoder))
    body = {"inputs": "El gato", "parameters": {"max_new_tokens": 64}}
    results = {}

    def call(route: str, i: int) -> None:
        results[(route, i)] = requests.post(server.url + route, json=body, timeout=120)

    threads = [
        threading.Thread(target=call, args=(r, i))
        for r in ("/generate", "/generate_stream")
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = {
        r.json()["generated_text"] if route == "/generate" else None for (route, _), r in results.items()
    }
    streamed = [r for (route, _), r in results.items() if route == "/generate_stream"]
    last = [json.loads(r.text.strip().split("\n\n")[-1][len("data:") :]) for r in streamed]
    assert {e["generated_text"] for e in last} | (texts - {None}) == texts - {
        None
    }  # all the same greedy text
    steps = metric(server, "atencion_generation_batch_size_count")
    assert steps < 8 * 63  # fewer decode steps than tokens: the routes' requests ran in one batch


def test_a_stream_whose_client_left_before_its_first_byte_is_cancelled(long_decoder, monkeypatch):
    """The client is gone by the time the response starts, and the server says so as ASGI 2.4 allows: ``send``
    raises ``OSError``. Starlette then ends the response before it ever reads the stream's body, whose own
    clean-up never runs; the response itself must stop the generations. (Uvicorn 0.54 speaks ASGI 2.3: its
    ``send`` stays silent and the body's watcher sees the disconnect.) In-process, on the real routes and a
    real engine: over a socket, the moment cannot be chosen."""
    served = [models.resolve(str(long_decoder), "decoder")]
    checkpoint = load_checkpoint(long_decoder)
    engine = Engine(checkpoint.model, checkpoint.tokenizer, max_running=4, name=served[0].name).start()
    monkeypatch.setitem(generate._ENGINES, served[0].name, engine)
    submitted = []
    submit = engine.submit

    def recorded(*args, **kwargs):
        submitted.append(submit(*args, **kwargs))
        return submitted[-1]

    monkeypatch.setattr(engine, "submit", recorded)
    app = FastAPI()
    limits = Limits(max_new_tokens=1000)
    monkeypatch.setattr(models, "_CATALOG", models.Catalog.build(served, limits))  # request validation
    generate.install(app, served, limits, "cpu", 1)
    openai_api.install(app, served, limits)
    bodies = {
        "/generate_stream": {"inputs": "El gato", "parameters": {"max_new_tokens": 1000}},
        "/v1/completions": {"model": served[0].name, "prompt": "El gato", "max_tokens": 1000, "stream": True},
    }

    async def leave_at_once(path: str) -> None:
        messages = [{"type": "http.request", "body": json.dumps(bodies[path]).encode(), "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            raise OSError("the client has gone")

        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        }  # fmt: skip
        before = len(submitted)
        with contextlib.suppress(ClientDisconnect):
            await app(scope, receive, send)
        assert len(submitted) == before + 1 and submitted[-1].cancelled, (
            f"{path}: the generation runs on for nobody"
        )

    try:
        for path in bodies:
            asyncio.run(leave_at_once(path))
        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed test
        while engine.running + engine.waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running + engine.waiting == 0 and engine.generated_tokens < 2 * 1000
    finally:
        engine.stop()
