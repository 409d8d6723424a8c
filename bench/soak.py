"""Soak test: the shipped server under a steady mixed load at concurrency 32 for five minutes.

Each of 32 client threads (one keep-alive connection each) sends, in turn, a fill-mask, a generate (16 new
tokens), a streamed generate and an attention request, and the script counts requests, statuses, errors,
hangs (no answer within ``HANG`` seconds) and latency percentiles, and samples the resident memory (RSS) of
every process of the server at the start (after a warm-up) and at the end. Targets: 0 × 5xx, 0 hangs, RSS
growth under 5 %.

The load generator shares the machine with the server (and, here, with other people's jobs): the latencies say
little about the service's speed; the counts and the memory are what this measures.

    python -m bench.soak                  # 300 s; writes the `soak` section of docs/reliability.md
    python -m bench.soak --seconds 30     # a short run, printed only
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.load import free_port, start, stop
from bench.report import machine, write_section

REPORT = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
HANG = 120.0  # seconds without an answer that count as a hang
REQUESTS = [
    ("/fill-mask", {"inputs": "El niño juega con su [MASK] en el parque.", "parameters": {"top_k": 5}}),
    ("/generate", {"inputs": "Mañana vamos a la playa y", "parameters": {"max_new_tokens": 16}}),
    (
        "/generate_stream",
        {"inputs": "Había una vez", "parameters": {"max_new_tokens": 16, "do_sample": True}},
    ),
    ("/attention", {"inputs": "El gato duerme en la casa.", "parameters": {"layers": [0]}}),
]


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in the process group ``pgid`` (the server and all its children)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def soak(base: str, seconds: float, concurrency: int) -> dict:
    statuses: collections.Counter = collections.Counter()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        session = requests.Session()
        turn = index
        while time.monotonic() < stop_at:
            path, body = REQUESTS[turn % len(REQUESTS)]
            turn += 1
            began = time.perf_counter()
            try:
                response = session.post(base + path, json=body, timeout=HANG)
                text = response.text
                outcome = str(response.status_code)
                if path == "/generate_stream" and '"error"' in text:
                    outcome = "200 with an error event"
            except requests.Timeout:
                outcome, text = "hang", ""
            except requests.RequestException as error:
                outcome, text = f"connection error ({type(error).__name__})", ""
            took = time.perf_counter() - began
            with lock:
                statuses[(path, outcome)] += 1
                latencies.append(took)
                if outcome != "200" and len(errors) < 5:
                    errors.append(f"{path} {outcome} {text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "statuses": statuses,
        "latencies": latencies,
        "errors": errors,
        "wall": time.perf_counter() - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="soak-")) / "server.log"
    command = [sys.executable, "-m", "atencion", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = start(command, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        soak(base, 20.0, args.concurrency)  # warm-up: every route, every worker, allocator pools filled
        rss_start = group_rss(server.pid)
        result = soak(base, args.seconds, args.concurrency)
        rss_end = group_rss(server.pid)
    finally:
        stop(server)
    statuses = result["statuses"]
    total = sum(statuses.values())
    by_outcome = collections.Counter()
    for (_, outcome), count in statuses.items():
        by_outcome[outcome] += count
    server_errors = sum(c for o, c in by_outcome.items() if o.startswith("5"))
    hangs = by_outcome.get("hang", 0)
    latencies = sorted(result["latencies"])
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    growth = (rss_end - rss_start) / rss_start * 100
    rows = "\n".join(
        f"| `{path}` | {outcome} | {count} |" for (path, outcome), count in sorted(statuses.items())
    )
    markdown = f"""### Soak: {args.seconds:.0f} s at concurrency {args.concurrency}

`python -m bench.soak` — the shipped models, default settings; fill-mask, generate (16 tokens), streamed generate
(16 tokens, sampled) and attention (one layer) in turn on each of {args.concurrency} keep-alive connections, after
a 20 s warm-up. Machine: {machine()}; **shared with other jobs during the run** (2 cores for
everyone), so latencies are inflated and only the counts and memory are meaningful.

| requests | non-200 | 5xx | hangs (> {HANG:.0f} s) | p50 | p99 | RSS at start | RSS at end | RSS growth |
|---|---|---|---|---|---|---|---|---|
| {total} | {total - by_outcome.get("200", 0)} | {server_errors} | {hangs} | {p50:.2f} s | {p99:.2f} s | {rss_start / 2**20:.0f} MiB | {rss_end / 2**20:.0f} MiB | {growth:+.1f} % |

| route | outcome | requests |
|---|---|---|
{rows}

RSS is summed over every process of the server (main, queue manager, API process, inference workers).
"""
    print(markdown)
    for error in result["errors"]:
        print("example:", error)
    if args.seconds >= 300:
        write_section("soak", markdown, REPORT)


if __name__ == "__main__":
    main()
