"""Fault injection: what a client sees when a process of the server dies, when it is stopped, and when it is
sent the inputs that used to break it.

For each process fault a fresh server (the shipped models, default settings) gets eight requests in flight
(six ``/generate`` and two ``/generate_stream``, 200 new tokens each), then one process is killed with SIGKILL
(or the main process gets SIGTERM); the script records each client's outcome and how long it took, the server's
exit status and when it exited, and whether the port still accepts connections afterwards.

    python -m bench.faults     # writes the `faults` section of docs/reliability.md
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.load import free_port, start, stop
from bench.report import machine, write_section

REPORT = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
LONG = {"inputs": "Había una vez un caballero que", "parameters": {"max_new_tokens": 200, "do_sample": True}}


def children(pid: int) -> list[dict]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid and "resource_tracker" not in cmdline:
            found.append(
                {"pid": int(entry.name), "start": int(fields[19]), "spawned": "spawn_main" in cmdline}
            )
    return found


def victim(server: subprocess.Popen, kind: str) -> int:
    kids = children(server.pid)
    if kind == "inference worker":
        return next(c["pid"] for c in kids if c["spawned"])
    forked = sorted((c for c in kids if not c["spawned"]), key=lambda c: c["start"])
    return forked[-1]["pid"] if kind == "API process" else forked[0]["pid"]


def outcome(call) -> str:  # noqa: ANN001
    try:
        response = call()
    except requests.Timeout:
        return "hang (no answer in 120 s)"
    except requests.RequestException as error:
        return f"connection closed ({type(error).__name__})"
    if response.status_code == 200 and '"error"' in response.text:
        return "200 stream ending with an error event"
    return f"{response.status_code} {response.json().get('error_type', '') if response.status_code != 200 else ''}"


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def process_fault(kind: str) -> str:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="faults-")) / "server.log"
    command = [sys.executable, "-m", "atencion", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = start(command, port, log)
    base = f"http://127.0.0.1:{port}"
    seen: list[tuple[str, float]] = []
    lock = threading.Lock()

    def client(path: str) -> None:
        began = time.monotonic()
        result = outcome(lambda: requests.post(base + path, json=LONG, timeout=120))
        with lock:
            seen.append((result, time.monotonic() - began))

    threads = [
        threading.Thread(target=client, args=(p,)) for p in ["/generate"] * 6 + ["/generate_stream"] * 2
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    late = ""
    injected = time.monotonic()
    if kind == "SIGTERM to the main process":
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        late = outcome(lambda: requests.post(base + "/generate", json=LONG, timeout=120))
    else:
        os.kill(victim(server, kind), signal.SIGKILL)
    for thread in threads:
        thread.join()
    try:
        status = server.wait(timeout=150)
        exited = f"exit {status} after {time.monotonic() - injected:.1f} s"
    except subprocess.TimeoutExpired:
        exited = "still running after 150 s"
    port_state = "refused" if refuses(port) else "still accepting"
    stop(server)
    counts = collections.Counter(result for result, _ in seen)
    what = "; ".join(f"{n} × {result}" for result, n in counts.most_common())
    slowest = max(took for _, took in seen) - 1.5
    row = f"| {kind} | {what} | {slowest:.1f} s | {late or '—'} | {exited} | {port_state} |"
    print(row, flush=True)
    return row


def input_faults() -> list[str]:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="faults-")) / "server.log"
    command = [sys.executable, "-m", "atencion", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = start(command, port, log)
    base = f"http://127.0.0.1:{port}"
    raw = {"content-type": "application/json"}
    cases = [
        (
            "attention without gradient, then with, same length (encoder-sparse)",
            lambda: (
                requests.post(
                    base + "/attention",
                    json={
                        "model": "encoder-sparse",
                        "inputs": "casa " * 7,
                        "parameters": {"gradient": False},
                    },
                ),
                requests.post(
                    base + "/attention",
                    json={"model": "encoder-sparse", "inputs": "el perro come [MASK] en la casa"},
                ),
            )[1],
        ),
        (
            "temperature 5e-324, top_p 1e-50, repetition_penalty 1e-320",
            lambda: requests.post(
                base + "/generate",
                json={
                    "inputs": "Hola",
                    "parameters": {"temperature": 5e-324, "top_p": 1e-50, "repetition_penalty": 1e-320},
                },
            ),
        ),
        (
            "temperature NaN",
            lambda: requests.post(
                base + "/generate", data=b'{"inputs":"Hola","parameters":{"temperature":NaN}}', headers=raw
            ),
        ),
        (
            'lone surrogate "hola \\ud800" on /generate_stream',
            lambda: requests.post(base + "/generate_stream", data=b'{"inputs":"hola \\ud800"}', headers=raw),
        ),
        (
            '"top_k": "3" on /fill-mask',
            lambda: requests.post(
                base + "/fill-mask", json={"inputs": "El [MASK].", "parameters": {"top_k": "3"}}
            ),
        ),
        (
            "GET /ui with Host: evil.example",
            lambda: requests.get(base + "/ui", headers={"Host": "evil.example"}, allow_redirects=False),
        ),
    ]
    rows = []
    try:
        for name, call in cases:
            response = call()
            where = response.headers.get("location", "")
            body = response.text[:110].replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {name} | {response.status_code} | {('Location: ' + where) if where else body} |")
            print(rows[-1], flush=True)
    finally:
        stop(server)
    return rows


def main() -> None:
    kinds = ["inference worker", "API process", "queue manager", "SIGTERM to the main process"]
    rows = [process_fault(kind) for kind in kinds]
    inputs = input_faults()
    markdown = f"""### Faults injected

`python -m bench.faults` — the shipped models, default settings, eight requests in flight (six `/generate`, two
`/generate_stream`, 200 sampled tokens each) when the fault is injected. Machine: {machine()}; shared with other
jobs during the run.

| fault | what the eight clients in flight saw | last answer after | a new request | the server | its port afterwards |
|---|---|---|---|---|---|
{chr(10).join(rows)}

| input that used to fail | status | body (start) |
|---|---|---|
{chr(10).join(inputs)}
"""
    print(markdown)
    write_section("faults", markdown, REPORT)


if __name__ == "__main__":
    main()
