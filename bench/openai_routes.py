"""The OpenAI route on the shared engine: ``/v1/completions`` against ``/generate_stream`` on the same server, and
optionally against an earlier revision of the service (``--against REV``, e.g. one whose ``/v1`` routes ran on
their own LitServe worker, one sequence at a time).

Streamed, greedy, 64 new tokens, the shipped ``decoder-dense``, prompts of mixed lengths; at concurrency 1, 8
and 32: aggregate generated tokens/s and p50/p99 time to first token. Every server is up for the whole run and
the rounds are interleaved (each concurrency: route after route, three times), so the machine's shifting load falls
on all of them alike. The revision is taken with ``git archive`` into a temporary folder and served from there.

    python -m bench.openai_routes --against 6c9a0af   # writes the `openai routes` section of docs/benchmarks.md
    python -m bench.openai_routes --quick             # one round, printed only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.load import free_port, start, stop
from bench.report import machine, write_section

REPO = Path(__file__).resolve().parent.parent
NEW_TOKENS = 64
PROMPTS = [
    "Hola",
    "Mañana vamos a la playa con mis amigos y",
    "El niño juega con su pelota en el parque después de la escuela, mientras su madre",
    "La niña lee un libro en el jardín.",
    "Los niños juegan en el parque después de la escuela y sus padres los esperan en la calle. Luego",
]
ROUNDS = ((1, 8), (8, 2), (32, 1))  # (concurrency, requests per client)
REPEATS = 3  # rounds of each, interleaved


def completion(session: requests.Session, base: str, prompt: str) -> tuple[float, int]:
    """(seconds to the first chunk, tokens generated) of one streamed ``/v1/completions``."""
    body = {
        "model": "decoder-dense", "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    began, first, tokens = time.perf_counter(), None, 0
    with session.post(base + "/v1/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[len(b"data: ") :])
            if "error" in event:
                raise RuntimeError(event["error"])
            if event["choices"] and first is None:
                first = time.perf_counter() - began
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return first, tokens


def tgi_stream(session: requests.Session, base: str, prompt: str) -> tuple[float, int]:
    """(seconds to the first event, tokens generated) of one ``/generate_stream``."""
    body = {"inputs": prompt, "parameters": {"max_new_tokens": NEW_TOKENS}}
    began, first, tokens = time.perf_counter(), None, 0
    with session.post(base + "/generate_stream", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith(b"data:"):
                if b'"error"' in line[:12]:
                    raise RuntimeError(line.decode())
                first = time.perf_counter() - began if first is None else first
                tokens += 1
    return first, tokens


def one_round(call, base: str, concurrency: int, per_client: int) -> dict:
    """``concurrency`` clients, each sending ``per_client`` requests in turn: their results, failures, wall time."""

    def client(index: int) -> tuple[list, int]:
        session, results, failed = requests.Session(), [], 0
        for k in range(per_client):
            try:
                results.append(call(session, base, PROMPTS[(index + k) % len(PROMPTS)]))
            except Exception:  # noqa: BLE001 — counted, reported
                failed += 1
        return results, failed

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(client, range(concurrency)))
    wall = time.perf_counter() - began
    return {
        "results": [r for results, _ in done for r in results],
        "wall": wall,
        "failed": sum(f for _, f in done),
    }


def serve(code: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``atencion serve`` from the code in ``code`` (``-P``: not the working directory's package)."""
    port = free_port()
    command = [sys.executable, "-P", "-m", "atencion", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--decoder", str(code / "checkpoints" / "decoder-dense")]  # fmt: skip
    env = {"PYTHONPATH": str(code), "ATENCION_MAX_NEW_TOKENS": str(NEW_TOKENS)}
    return start(command, port, log, env), f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", help="a git revision whose /v1/completions to measure too")
    parser.add_argument("--quick", action="store_true", help="one round; print, don't write the report")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="openai-routes-"))
    servers = []
    try:
        server, base = serve(REPO, scratch / "this.log")
        servers.append(server)
        variants = [
            ("/v1/completions, this tree", completion, base),
            ("/generate_stream, this tree", tgi_stream, base),
        ]
        if args.against:
            old = scratch / "old"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.against], check=True, capture_output=True
            )
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
            server, old_base = serve(old, scratch / "old.log")
            servers.append(server)
            variants.append((f"/v1/completions, {args.against}", completion, old_base))
        for _, call, url in variants:  # warm up
            one_round(call, url, 2, 1)
        runs: dict[tuple[str, int], list[dict]] = {}
        for _ in range(1 if args.quick else REPEATS):
            for concurrency, per_client in ROUNDS:
                for name, call, url in variants:
                    runs.setdefault((name, concurrency), []).append(
                        one_round(call, url, concurrency, per_client)
                    )
    finally:
        for server in servers:
            stop(server)
    rows, reference = [], {}
    for (name, concurrency), done in runs.items():
        results = [r for run in done for r in run["results"]]
        speed = statistics.median(sum(t for _, t in run["results"]) / run["wall"] for run in done)
        reference.setdefault(concurrency, speed)  # the first variant: /v1/completions on this tree
        firsts = sorted(f for f, _ in results)
        p99 = firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))]
        rows.append(
            f"| {name} | {concurrency} | {len(results)} | {speed:.1f} | {speed / reference[concurrency]:.2f} | "
            f"{1000 * statistics.median(firsts):.0f} | {1000 * p99:.0f} | {sum(r['failed'] for r in done)} |"
        )
    markdown = "\n".join(
        [
            "## The OpenAI route on the shared engine (bench/openai_routes.py)",
            "",
            f"Command: `python -m bench.openai_routes{' --against ' + args.against if args.against else ''}`  ",
            f"Machine: {machine()}  ",
            f"Model: shipped decoder-dense; {NEW_TOKENS} new tokens, greedy, streamed, {len(PROMPTS)} prompts of mixed "
            "lengths in turn. All servers up at once, rounds interleaved; tokens/s is the median over rounds.",
            "",
            "| route, server | concurrency | requests | tokens/s | × /v1 this tree | p50 TTFT ms | p99 TTFT ms | failed |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(markdown)
    if not args.quick:
        write_section("openai routes", markdown)


if __name__ == "__main__":
    main()
