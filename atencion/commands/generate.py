"""`atencion generate CKPT "prompt"`: continue a prompt with a decoder checkpoint, streaming the text.

CKPT is a checkpoint directory, a shipped checkpoint name (checkpoints/NAME) or a Hub ``ORG/NAME[@REV]``.
The text goes to stdout as it is generated; the finish reason and the speed go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from atencion.references import open_checkpoint, run_guarded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory, shipped name, or Hub ORG/NAME[@REVISION]")
    parser.add_argument("prompt", help="the text to continue (quote it)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="at most this many new tokens (64)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, help="sample among the most likely tokens totalling p")
    parser.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="CTRL penalty, > 1 repeats less"
    )
    parser.add_argument("--seed", type=int, help="seed of the sampler, for reproducible samples")
    parser.add_argument("--stop", action="append", default=[], help="stop at this text (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per token instead of text")
    parser.add_argument("--quantize", choices=("int8",), help="int8 weights for the linear layers")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step (torch.compile; the first run builds it, later runs reuse it)",
    )


def decoding_model(model, quantization: str | None, compile: bool):
    """The decoder as asked: int8 weights (``modeling.quantization``), a compiled step (``modeling.decode_step``)."""
    if quantization is not None:
        from modeling.quantization import quantize

        model = quantize(model, quantization)
    if compile:
        from modeling.decode_step import CompiledDecoder

        model = CompiledDecoder(model)
        print(f"[decode step: {model.mode}]", file=sys.stderr)
    return model


def _generate(args: argparse.Namespace) -> int:
    from modeling.generation import Sampling, stream_tokens

    sampling = Sampling(
        max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed, stop=tuple(args.stop),
    )  # fmt: skip
    checkpoint = open_checkpoint(args.checkpoint, "decoder")
    model = decoding_model(checkpoint.model, args.quantize, args.compile)
    ids = checkpoint.tokenizer.encode(args.prompt).ids or [checkpoint.config.bos_token_id]
    start, count, finish = time.perf_counter(), 0, None
    if not args.json:
        sys.stdout.write(args.prompt)
    for token in stream_tokens(model, checkpoint.tokenizer, ids, sampling):
        count, finish = count + 1, token.finish_reason
        if args.json:
            print(json.dumps(token.__dict__, ensure_ascii=False), flush=True)
        elif not token.special:
            sys.stdout.write(token.text)
            sys.stdout.flush()
    seconds = time.perf_counter() - start
    if not args.json:
        sys.stdout.write("\n")
    print(f"[{count} tokens, finish_reason={finish}, {count / seconds:.1f} tokens/s]", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_generate, args)
