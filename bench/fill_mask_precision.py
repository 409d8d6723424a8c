"""Fill-mask in fp32 against bf16: requests/s at concurrency 1, 8 and 32, and whether the answers agree.

Two servers on the same shipped encoders, ``--precision fp32`` and ``--precision bf16``, loaded in interleaved
rounds (``bench.load.interleaved``: each round gives both servers their share in turn, so a change in the
machine's load hits both alike). The agreement is ``modeling.precision.compare`` on its fixed Spanish sentences:
in how many masks bf16 keeps fp32's top-1 token and its top-5 set (``--precision auto`` serves bf16 only when
both are all of them).

The load generator runs on the same machine, and other jobs share its 2 cores: read the ratios.

    python -m bench.fill_mask_precision            # writes the `fill-mask precision` section of docs/benchmarks.md
    python -m bench.fill_mask_precision --quick    # fewer requests, prints only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.load import FILL, PARAGRAPH, free_port, interleaved, start, stop
from bench.report import machine, write_section
from modeling.checkpoint import load_checkpoint
from modeling.precision import bf16_supported, compare

REPO = Path(__file__).resolve().parent.parent
ENCODERS = ("encoder-dense", "encoder-sparse")


def table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = [
        "| precision | concurrency | requests | req/s | p50 ms | p99 ms | failed | × fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_c in results.items():
        for c, r in by_c.items():
            ratio = r["rps"] / results["fp32"][c]["rps"]
            lines.append(
                f"| {name} | {c} | {r['n']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['failed']} | {ratio:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests; print, don't write the report")
    args = parser.parse_args()
    import os

    import torch

    loads = [os.getloadavg()[0]]
    agreement = []
    for name in ENCODERS:
        checkpoint = load_checkpoint(REPO / "checkpoints" / name)
        a = compare(checkpoint.model, checkpoint.tokenizer)
        agreement.append(f"| {name} | {a.masks} | {a.same_top1}/{a.masks} | {a.same_top5}/{a.masks} |")
    counts = {1: 40, 8: 160, 32: 320} if not args.quick else {1: 8, 8: 32, 32: 64}
    rounds = 4 if not args.quick else 2
    servers, processes = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for precision in ("fp32", "bf16"):
                port = free_port()
                command = [sys.executable, "-m", "atencion", "serve", "--port", str(port), "--precision", precision,
                           "--max-batch-size", "32", "--batch-timeout", "0.01"]  # fmt: skip
                for name in ENCODERS[:1]:
                    command += ["--encoder", str(REPO / "checkpoints" / name)]
                processes.append(start(command, port, Path(tmp) / f"{precision}.log"))
                servers[precision] = f"http://127.0.0.1:{port}"
            short = interleaved(servers, "/fill-mask", FILL, counts, rounds)
            loads.append(os.getloadavg()[0])
            long = interleaved(servers, "/fill-mask", PARAGRAPH, counts, rounds)
            loads.append(os.getloadavg()[0])
        finally:
            for process in processes:
                stop(process)
    supported = bf16_supported(torch.device("cpu"))
    text = "\n\n".join(
        [
            "## Fill-mask precision: fp32 against bf16 (bench/fill_mask_precision.py)",
            f"Machine: {machine()}; bf16 matmuls in hardware: {'yes' if supported else 'no'}. Other jobs may "
            f"share the machine (1-minute load average {min(loads):.0f}-{max(loads):.0f} on 2 cores during the run): "
            "read the ratios, not the absolute numbers.",
            "Agreement of bf16 with fp32 on `modeling.precision.CHECK_SENTENCES` (what `--precision auto` checks "
            "at start-up):\n\n| encoder | masks | same top-1 | same top-5 set |\n|---|---|---|---|\n"
            + "\n".join(agreement),
            "### POST /fill-mask, one sentence (16 tokens), encoder-dense, dynamic batching up to 32\n\n"
            + table(short),
            "### POST /fill-mask, a five-sentence paragraph (167 tokens)\n\n" + table(long),
            "Command: `python -m bench.fill_mask_precision` (two servers, `--precision fp32` and `--precision bf16`, "
            f"{rounds} interleaved rounds per concurrency).",
        ]
    )
    print(text)
    if not args.quick:
        write_section("fill-mask precision", text)


if __name__ == "__main__":
    main()
