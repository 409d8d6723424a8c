"""`atencion fill-mask CKPT "text with [MASK]"`: the most likely tokens for each mask of an encoder checkpoint.

Prints, for every mask, the top-k candidates with their probabilities and the filled-in text; ``--json``
prints the Hugging Face fill-mask pipeline's shape (a list of ``{score, token, token_str, sequence}``, one
list per mask when there are several), the same as ``POST /fill-mask`` (both run ``modeling.fill_mask``).
"""

from __future__ import annotations

import argparse
import json

from atencion.references import UsageError, open_checkpoint, run_guarded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory, shipped name, or Hub ORG/NAME[@REVISION]")
    parser.add_argument("text", help="the text, with one or more mask tokens (e.g. [MASK])")
    parser.add_argument("--top-k", type=int, default=5, help="candidates per mask (5)")
    parser.add_argument("--json", action="store_true", help="print the Hugging Face fill-mask JSON")


def _fill_mask(args: argparse.Namespace) -> int:
    from modeling.fill_mask import FillMaskError, fill_mask

    if args.top_k < 1:
        raise UsageError(f"--top-k: must be >= 1, got {args.top_k}")
    checkpoint = open_checkpoint(args.checkpoint, "encoder")
    try:
        results = fill_mask(checkpoint.model, checkpoint.tokenizer, args.text, args.top_k)
    except FillMaskError as error:
        raise UsageError(f"text: {error.message}") from None
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, ensure_ascii=False, indent=2))
        return 0
    for number, rows in enumerate(results, 1):
        if len(results) > 1:
            print(f"mask {number}:")
        for row in rows:
            print(f"{row['score']:7.4f}  {row['token_str']:<16} {row['sequence']}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_fill_mask, args)
