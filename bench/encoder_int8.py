"""An encoder's forward in fp32, bf16 autocast and int8 (int8 activations × int8 weights): quality and speed.

Quality: masked-LM top-1 and top-5 on held-out text, exactly as ``atencion evaluate`` scores an encoder (the
validation documents recorded in the checkpoint's training.json, 15 % of the real tokens masked with a fixed
seed; ``training.evaluate.encoder_metrics``). The issue's rule: int8 may serve only within 0.5 points of fp32's
top-1. Speed: ``modeling.fill_mask.mask_probabilities`` (what ``POST /fill-mask`` runs) on the load benchmark's
texts (one sentence of 16 tokens; a paragraph of 167), batched as dynamic batching would, every variant taking
its turn in each round so that the shared machine's load hits all alike; median milliseconds per forward.
``--profile`` adds where a batch's time goes (``torch.profiler``, self CPU time by operator).

    python -m bench.encoder_int8 --corpus CORPUS      # writes the `encoder int8` section of docs/benchmarks.md
    python -m bench.encoder_int8 --quick              # speed only, fewer rounds; prints only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.load import FILL, PARAGRAPH
from bench.report import machine, write_section
from modeling.checkpoint import load_checkpoint
from modeling.fill_mask import encode, mask_probabilities
from modeling.quantization import quantize

REPO = Path(__file__).resolve().parent.parent
ENCODERS = ("encoder-dense", "encoder-sparse")
SHAPES = (("sentence", 1), ("sentence", 32), ("paragraph", 1), ("paragraph", 8), ("paragraph", 32))

Variant = tuple[torch.nn.Module, Callable[[], contextlib.AbstractContextManager]]


def variants(model: torch.nn.Module) -> dict[str, Variant]:
    """fp32, bf16 autocast (``--precision bf16``), int8 (``modeling.quantization.DynamicInt8Linear``)."""
    return {
        "fp32": (model, contextlib.nullcontext),
        "bf16": (model, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "int8": (quantize(model, "int8"), contextlib.nullcontext),
    }


def held_out_rows(path: Path, corpus: Path, max_sequences: int) -> torch.Tensor:
    """The rows ``atencion evaluate`` scores: the recorded validation documents, packed at the training length."""
    from training.data import pack_encoder, read_corpus, token_stream

    checkpoint = load_checkpoint(path)
    info = json.loads((path / "training.json").read_text(encoding="utf-8"))
    documents = read_corpus(corpus)
    names = sorted(info["split"]["validation"])
    missing = [n for n in names if n not in documents]
    if missing:
        raise SystemExit(f"--corpus {corpus}: lacks the held-out documents {missing[:3]}")
    seq_len = min(info["recipe"]["data"]["seq_len"], checkpoint.config.max_len)
    stream = token_stream(checkpoint.tokenizer, [documents[n] for n in names])
    vocab = checkpoint.tokenizer.get_vocab()
    return pack_encoder(stream, seq_len, vocab["[CLS]"], vocab["[SEP]"])[:max_sequences]  # (R, L)


def quality(path: Path, corpus: Path, max_sequences: int) -> dict[str, dict[str, float]]:
    from training.evaluate import encoder_metrics
    from training.tokenizer import all_special_ids

    checkpoint = load_checkpoint(path)
    rows = held_out_rows(path, corpus, max_sequences)
    specials = all_special_ids(checkpoint.tokenizer)
    return {
        name: encoder_metrics(model, rows, batch_size=8, specials=specials, seed=0, autocast=context)
        for name, (model, context) in variants(checkpoint.model).items()
    }


def speed(path: Path, rounds: int) -> dict[tuple[str, int], dict[str, float]]:
    """Median milliseconds per ``mask_probabilities`` call, per (text, batch) and variant, in interleaved rounds."""
    checkpoint = load_checkpoint(path)
    mask = checkpoint.tokenizer.id_to_token(checkpoint.config.mask_token_id)
    texts = {
        name: encode(checkpoint.tokenizer, checkpoint.config, body["inputs"].replace("[MASK]", mask))
        for name, body in (("sentence", FILL), ("paragraph", PARAGRAPH))
    }
    made = variants(checkpoint.model)
    results = {}
    for text, batch in SHAPES:
        inputs = [texts[text]] * batch
        times: dict[str, list[float]] = {name: [] for name in made}
        for model, context in made.values():  # warm-up: each variant once before timing
            with context():
                mask_probabilities(model, inputs)
        calls = max(2, 800 // (batch * len(texts[text].ids)))
        for _ in range(rounds):
            for name, (model, context) in made.items():
                start = time.perf_counter()
                for _ in range(calls):
                    with context():
                        mask_probabilities(model, inputs)
                times[name].append((time.perf_counter() - start) / calls * 1000)
        results[(text, batch)] = {
            "tokens": len(texts[text].ids),
            **{n: statistics.median(t) for n, t in times.items()},
        }
    return results


def profile(path: Path, text: str, batch: int) -> dict[str, list[tuple[str, float]]]:
    """Each variant's top operators by self CPU time share for one batch (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profiler

    checkpoint = load_checkpoint(path)
    mask = checkpoint.tokenizer.id_to_token(checkpoint.config.mask_token_id)
    body = FILL if text == "sentence" else PARAGRAPH
    inputs = [encode(checkpoint.tokenizer, checkpoint.config, body["inputs"].replace("[MASK]", mask))] * batch
    shares = {}
    for name, (model, context) in variants(checkpoint.model).items():
        with context():
            mask_probabilities(model, inputs)
        with run_profiler(activities=[ProfilerActivity.CPU]) as prof, context():
            for _ in range(3):
                mask_probabilities(model, inputs)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
        shares[name] = [(e.key, e.self_cpu_time_total / total) for e in top]
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="the training corpus (for the held-out quality)")
    parser.add_argument("--max-sequences", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="also profile a batch of 32 paragraphs")
    parser.add_argument("--quick", action="store_true", help="speed only, 3 rounds; print only")
    args = parser.parse_args()
    if args.quick:
        args.corpus, args.rounds = None, 3
    torch.set_num_threads(args.threads)
    loads = [os.getloadavg()[0]]
    parts = [
        "## Encoder forward: fp32, bf16 and int8 (bench/encoder_int8.py)",
        f"Machine: {machine()}; shared with other jobs "
        "(1-minute load average {loads}): read the ratios, every variant takes its turn in each round. "
        "int8 = `modeling.quantization.DynamicInt8Linear` on every linear layer of the blocks and the MLM "
        "head's dense layer (int8 activations, one scale per row, × int8 weights, one scale per output; "
        "`torch._int_mm`); the output head (tied embeddings) stays float.",
    ]
    if args.corpus:
        lines = [
            "| encoder | fp32 top-1 | bf16 top-1 (Δ points) | int8 top-1 (Δ points) | fp32 top-5 | bf16 top-5 | int8 top-5 | masks |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in ENCODERS:
            q = quality(REPO / "checkpoints" / name, args.corpus, args.max_sequences)
            f, b, i = q["fp32"], q["bf16"], q["int8"]
            lines.append(
                f"| {name} | {f['top1']:.2%} | {b['top1']:.2%} ({(b['top1'] - f['top1']) * 100:+.2f}) "
                f"| {i['top1']:.2%} ({(i['top1'] - f['top1']) * 100:+.2f}) | {f['top5']:.2%} | {b['top5']:.2%} "
                f"| {i['top5']:.2%} | {f['masked']} |"
            )
            loads.append(os.getloadavg()[0])
        parts.append(
            f"**Quality** on held-out text (the validation documents of the training corpus, first "
            f"{args.max_sequences} sequences, 15 % of the real tokens masked, seed 0, as `atencion evaluate`):\n\n"
            + "\n".join(lines)
        )
    for name in ENCODERS:
        s = speed(REPO / "checkpoints" / name, args.rounds)
        loads.append(os.getloadavg()[0])
        lines = [
            "| text | tokens | batch | fp32 ms | bf16 ms (× fp32) | int8 ms (× fp32) | int8 / bf16 |",
            "|---|---|---|---|---|---|---|",
        ]
        for (text, batch), r in s.items():
            lines.append(
                f"| {text} | {r['tokens']} | {batch} | {r['fp32']:.1f} | {r['bf16']:.1f} ({r['fp32'] / r['bf16']:.2f}×) "
                f"| {r['int8']:.1f} ({r['fp32'] / r['int8']:.2f}×) | {r['bf16'] / r['int8']:.2f}× |"
            )
        parts.append(
            f"**Speed, {name}**: `mask_probabilities` (the forward of `POST /fill-mask`), median of "
            f'{args.rounds} interleaved rounds; "int8 / bf16" above 1 means int8 is faster.\n\n'
            + "\n".join(lines)
        )
    if args.profile:
        shares = profile(REPO / "checkpoints" / ENCODERS[0], "paragraph", 32)
        rows = [
            f"| {name} | " + "; ".join(f"`{op}` {share:.0%}" for op, share in top) + " |"
            for name, top in shares.items()
        ]
        parts.append(
            "**Where the time goes** (encoder-dense, 32 paragraphs, `torch.profiler`, self CPU time by "
            "operator, top six):\n\n| variant | operators |\n|---|---|\n" + "\n".join(rows)
        )
    parts.append(
        "Command: `python -m bench.encoder_int8 --corpus CORPUS --profile` (CORPUS: the training corpus, "
        "whose held-out documents the checkpoints' training.json names)."
    )
    text = "\n\n".join(parts).replace("{loads}", f"{min(loads):.1f}–{max(loads):.1f}")
    print(text)
    if not args.quick:
        write_section("encoder int8", text)


if __name__ == "__main__":
    main()
