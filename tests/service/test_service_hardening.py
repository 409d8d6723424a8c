"""What an attacker or an operator finds around the endpoints: public facts without machine paths, no redirect
built from the client's Host header, oversize bodies cut off, limits counted per route, no silent parameters."""

import asyncio
import json
import socket
import time

import requests

from service.errors import ConcurrencyLimitMiddleware


def test_info_reveals_no_local_paths(server, tiny_checkpoints):
    info = server.get("/info")
    assert info.status_code == 200
    text = json.dumps(info.json())
    assert str(tiny_checkpoints) not in text and "/tmp" not in text
    assert {m["reference"] for m in info.json()["models"]} == {
        "encoder-dense",
        "encoder-sparse",
        "decoder-dense",
        "decoder-sparse",
        "translator",
    }


def test_no_redirect_follows_a_forged_host_header(server):
    for path in ("/ui", "/health/", "/info/", "/generate/"):
        response = requests.get(
            server.url + path, headers={"Host": "evil.example"}, allow_redirects=False, timeout=30
        )
        assert "evil.example" not in response.headers.get("location", ""), path
    ui = requests.get(server.url + "/ui", allow_redirects=False, timeout=30)
    assert ui.status_code in (301, 302, 307) and ui.headers["location"] == "/ui/"
    assert requests.get(server.url + "/ui", timeout=30).status_code == 200


def test_adapter_id_is_refused_not_ignored(server):
    response = server.post("/generate", {"inputs": "Hola", "parameters": {"adapter_id": "mi-lora"}})
    assert response.status_code == 422 and "adapter_id" in response.json()["error"]
    assert server.post("/generate", {"inputs": "Hola", "parameters": {"adapter_id": None}}).status_code == 200


def test_too_many_items_are_a_validation_error(server):
    texts = server.post("/fill-mask", {"inputs": ["El [MASK]."] * 33})
    assert texts.status_code == 422 and "at most 32" in texts.json()["error"]
    stops = server.post("/generate", {"inputs": "Hola", "parameters": {"stop": ["a"] * 9}})
    assert stops.status_code == 422 and "stop" in stops.json()["error"]


def test_an_oversize_body_is_refused_and_the_connection_closed_unread(server):
    """The 413 comes at once and the server hangs up, instead of reading 50 MB it will throw away."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /fill-mask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n" + b'{"inputs": "' + b"a" * 1000
        )
        received, deadline = b"", time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break  # the server closed the connection
            received += chunk
        else:
            raise AssertionError("the connection stayed open after the 413")
    assert received.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in received.lower()


def test_in_flight_limits_are_counted_per_route():
    """Stuck requests on one route leave the others their full allowance (in-process, on the middleware)."""

    async def scenario() -> list[int]:
        release = asyncio.Event()

        async def app(scope, receive, send):
            if scope["path"] == "/generate":
                await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        limited = ConcurrencyLimitMiddleware(app, limit=2, paths=("/generate", "/fill-mask"))
        statuses: list[int] = []

        async def call(path: str) -> None:
            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                if message["type"] == "http.response.start":
                    statuses.append((path, message["status"]))
                    if message["status"] == 429:
                        assert (b"retry-after", b"1") in message["headers"]

            await limited({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)

        stuck = [asyncio.create_task(call("/generate")) for _ in range(2)]
        await asyncio.sleep(0.01)
        await call("/generate")  # a third generation: 429
        await call("/fill-mask")  # fill-mask is not blocked by the stuck generations
        await call("/fill-mask")
        release.set()
        await asyncio.gather(*stuck)
        return statuses

    statuses = asyncio.run(scenario())
    assert statuses[:3] == [("/generate", 429), ("/fill-mask", 200), ("/fill-mask", 200)]
    assert statuses[3:] == [("/generate", 200), ("/generate", 200)]


def test_the_openapi_document_says_what_the_server_does(server):
    document = server.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(document)
    schemas = document["components"]["schemas"]
    for path in ("/fill-mask", "/generate", "/generate_stream", "/attention"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"400", "404", "413", "422", "429", "503"} <= set(responses), path
        assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert schemas["ErrorBody"]["required"] == ["error", "error_type"]
    stream = document["paths"]["/generate_stream"]["post"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    assert list(document["paths"]["/health"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert server.get("/health").headers["content-type"].startswith("text/plain")
    limits = server.get("/info").json()["limits"]
    new_tokens = schemas["GenerateParameters"]["properties"]["max_new_tokens"]
    assert new_tokens["maximum"] == limits["max_new_tokens"]
    inputs = schemas["GenerateRequest"]["properties"]["inputs"]
    assert inputs["minLength"] == 1
    models = schemas["FillMaskRequest"]["properties"]["model"]["anyOf"][0]["enum"]
    assert models == ["encoder-dense", "encoder-sparse"]
