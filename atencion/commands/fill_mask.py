"""`atencion fill-mask CKPT "text with [MASK]"`: the most likely tokens for each mask of an encoder checkpoint.

Prints, for every mask, the top-k candidates with their probabilities and the filled-in text; ``--json``
prints the Hugging Face fill-mask pipeline's shape (a list of ``{score, token, token_str, sequence}``, one
list per mask when there are several).
"""

from __future__ import annotations

import argparse
import json

from atencion.commands.generate import UsageError, open_checkpoint, run_guarded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory, shipped name, or Hub ORG/NAME[@REVISION]")
    parser.add_argument("text", help="the text, with one or more mask tokens (e.g. [MASK])")
    parser.add_argument("--top-k", type=int, default=5, help="candidates per mask (5)")
    parser.add_argument("--json", action="store_true", help="print the Hugging Face fill-mask JSON")


def fill_mask(checkpoint, text: str, top_k: int) -> list[list[dict]]:
    """Per mask, the ``top_k`` candidates as ``{score, token, token_str, sequence}``, most likely first."""
    import torch

    if top_k < 1:
        raise UsageError(f"--top-k: must be >= 1, got {top_k}")
    tokenizer, config, model = checkpoint.tokenizer, checkpoint.config, checkpoint.model
    mask_text = tokenizer.id_to_token(config.mask_token_id)
    encoding = tokenizer.encode(text)
    ids = encoding.ids
    if len(ids) > config.max_len:
        raise UsageError(f"text: {len(ids)} tokens exceed the model's max_len {config.max_len}")
    where = [i for i, token in enumerate(ids) if token == config.mask_token_id]
    if not where:
        raise UsageError(f"text: no {mask_text} token in {text!r}")
    with torch.inference_mode():
        output = model(torch.tensor([ids]))
        probs = output.logits[0, where].float().softmax(-1)  # (M, V)
        scores, candidates = probs.topk(min(top_k, probs.shape[-1]), dim=-1)  # (M, k)
    results = []
    for m, position in enumerate(where):
        rows = []
        for score, candidate in zip(scores[m].tolist(), candidates[m].tolist(), strict=True):
            filled = list(ids)
            filled[position] = candidate
            rows.append(
                {
                    "score": score,
                    "token": candidate,
                    "token_str": tokenizer.decode([candidate], skip_special_tokens=False),
                    "sequence": tokenizer.decode(filled, skip_special_tokens=True),
                }
            )
        results.append(rows)
    return results


def _fill_mask(args: argparse.Namespace) -> int:
    checkpoint = open_checkpoint(args.checkpoint, "encoder")
    results = fill_mask(checkpoint, args.text, args.top_k)
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
