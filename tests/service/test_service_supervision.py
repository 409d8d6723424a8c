"""A dead process is never a live port that answers nothing: each kind is killed with SIGKILL on a real server.

The chosen behaviour (``service.supervision``): requests in flight get a 503 (or, on a dead API process, a closed
connection at once), then the whole server exits with status 3 so that its supervisor restarts it. SIGTERM drains:
new requests get 503 while those in flight finish, then the server exits 0.
"""

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from service.supervision import EXIT_PROCESS_DIED

BODY = {"inputs": "El [MASK] duerme."}


def children(pid: int) -> list[dict]:
    """Live children of ``pid``: their pid, start time and command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append({"pid": int(entry.name), "start": int(fields[19]), "cmdline": cmdline})
    return found


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def process_of(server, kind: str) -> int:
    """The pid of one of the server's processes: a spawned inference worker, the forked API (uvicorn)
    process (forked last), or the queue manager (forked first)."""
    kids = [c for c in children(server.process.pid) if "resource_tracker" not in c["cmdline"]]
    if kind == "inference worker":
        return next(c["pid"] for c in kids if "spawn_main" in c["cmdline"])
    forked = sorted((c for c in kids if "spawn_main" not in c["cmdline"]), key=lambda c: c["start"])
    assert len(forked) == 2, kids  # the manager and the API process
    return forked[-1]["pid"] if kind == "API process" else forked[0]["pid"]


def in_flight(server, results: list) -> threading.Thread:
    """A fill-mask request that waits (the batch timeout) in its worker: it is in flight for seconds."""

    def call() -> None:
        started = time.monotonic()
        try:
            response = requests.post(server.url + "/fill-mask", json=BODY, timeout=60)
            results.append((response, time.monotonic() - started))
        except requests.RequestException as error:
            results.append((error, time.monotonic() - started))

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1.5)  # it has reached the worker and waits there for company
    return thread


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except OSError:
        return True


@pytest.mark.parametrize("kind", ["inference worker", "API process", "queue manager"])
def test_a_killed_process_fails_loudly(start_server, tiny_checkpoints, kind):
    server = start_server(
        "--encoder",
        str(tiny_checkpoints / "encoder-dense"),
        "--decoder",
        str(tiny_checkpoints / "decoder-dense"),
        env={"ATENCION_MAX_BATCH_SIZE": "4", "ATENCION_BATCH_TIMEOUT": "10"},
    )
    results: list = []
    waiting = in_flight(server, results)
    victim = process_of(server, kind)
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    waiting.join(timeout=30)
    assert results, "the request in flight hung"
    answer, took = results[0]
    assert time.monotonic() - killed < 10 and took < 15
    if kind == "API process":  # its connections die with it: the client learns at once
        assert isinstance(answer, requests.ConnectionError), answer
    else:
        assert isinstance(answer, requests.Response) and answer.status_code == 503, answer
        assert answer.json()["error_type"] == "unavailable"
    try:
        status = server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server kept running after its {kind} died")
    assert status == EXIT_PROCESS_DIED
    assert time.monotonic() - killed < 15
    deadline = time.monotonic() + 10
    while group_members(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_members(server.process.pid), "processes left behind"
    assert refuses_connections(server.url)
    assert "died" in server.log.read_text(errors="replace")


def test_sigterm_answers_new_requests_503_while_draining(start_server, tiny_checkpoints):
    server = start_server(
        "--encoder",
        str(tiny_checkpoints / "encoder-dense"),
        env={"ATENCION_MAX_BATCH_SIZE": "4", "ATENCION_BATCH_TIMEOUT": "6"},
    )
    results: list = []
    waiting = in_flight(server, results)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    late = requests.post(server.url + "/fill-mask", json=BODY, timeout=30)
    assert late.status_code == 503 and late.json()["error_type"] == "unavailable"
    assert "shutting down" in late.json()["error"] and late.headers["connection"] == "close"
    health = requests.get(server.url + "/health", timeout=30)
    assert health.status_code == 503
    waiting.join(timeout=60)
    answer, _ = results[0]
    assert isinstance(answer, requests.Response) and answer.status_code == 200, answer
    assert server.process.wait(timeout=40) == 0
