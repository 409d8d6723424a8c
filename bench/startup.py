"""Start-up to healthy: ``atencion serve --decoding compiled``, cold and warm, next to the eager step.

Each launch is a fresh ``python -m atencion serve --decoder CHECKPOINT`` process, timed from launch to the first
``GET /health`` = 200 (the worker reports ready only after ``CompiledDecoder.warm_up`` has built the batch-1
graphs), then one ``POST /generate`` (16 new tokens) timed as the first request's latency. Runs, in order:

- eager: ``--decoding eager``, the baseline;
- cold: ``--decoding compiled`` with an empty ``TORCHINDUCTOR_CACHE_DIR`` (everything compiled from scratch);
- warm: the same again with the cache the cold launch filled (what a restart of the service sees).

    python -m bench.startup            # writes the `startup` section of docs/benchmarks.md
    python -m bench.startup --quick    # one warm launch, prints only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.load import free_port, stop
from bench.report import machine, write_section

REPO = Path(__file__).resolve().parent.parent


def launch(checkpoint: Path, decoding: str, cache: Path, log: Path, timeout: float) -> dict[str, float | str]:
    """One server from launch to healthy, its first generation, then stopped."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATENCION_", "TORCHINDUCTOR_"))}
    env.update(
        {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    )
    command = [sys.executable, "-m", "atencion", "serve", "--decoder", str(checkpoint),
               "--decoding", decoding, "--port", str(port)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        healthy = None
        while time.perf_counter() - began < timeout and process.poll() is None:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    healthy = time.perf_counter() - began
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        if healthy is None:
            raise SystemExit(
                f"{decoding}: not healthy after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}"
            )
        [model] = requests.get(url + "/info", timeout=30).json()["models"]
        body = {"inputs": "Érase una vez", "parameters": {"max_new_tokens": 16}}
        first = time.perf_counter()
        answer = requests.post(url + "/generate", json=body, timeout=timeout)
        answer.raise_for_status()
        return {"healthy": healthy, "first": time.perf_counter() - first, "mode": model["decoding"]}
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "decoder-dense")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds a launch may take to be healthy")
    parser.add_argument(
        "--quick", action="store_true", help="one compiled launch on a filled cache; print only"
    )
    args = parser.parse_args()
    checkpoint = args.checkpoint.resolve()
    rows, loads = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        cache, logs = Path(tmp) / "inductor", Path(tmp)
        plan = [
            ("eager", "eager"),
            ("compiled, cold cache", "compiled"),
            ("compiled, warm cache", "compiled"),
        ]
        if args.quick:
            launch(checkpoint, "compiled", cache, logs / "fill.log", args.timeout)  # fills the cache
            plan = plan[2:]
        for i, (name, decoding) in enumerate(plan):
            result = launch(checkpoint, decoding, cache, logs / f"{i}.log", args.timeout)
            loads.append(os.getloadavg()[0])
            rows.append(
                f"| {name} | {result['mode']} | {result['healthy']:.1f} | {result['first']:.2f} | {loads[-1]:.1f} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    text = "\n\n".join(
        [
            "## Start-up to healthy (bench/startup.py)",
            f"Command: `python -m bench.startup --checkpoint checkpoints/{checkpoint.name}` · machine: {machine()}; "
            "shared with other jobs (load average with each row). Each row is a fresh "
            f"`atencion serve --decoder checkpoints/{checkpoint.name} --decoding …` process, timed from launch to "
            "the first `GET /health` = 200; then one `POST /generate` of 16 new tokens. Cold: an empty "
            "`TORCHINDUCTOR_CACHE_DIR`; warm: the cache the cold launch filled.",
            "| launch | /info decoding | to healthy, s | first /generate, s | load average after |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows),
        ]
    )
    print(text)
    if not args.quick:
        write_section("startup", text)


if __name__ == "__main__":
    main()
