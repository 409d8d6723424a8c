"""`atencion translate CKPT "texto" ["otro texto" …]`: translate Spanish with a translator checkpoint.

CKPT is a checkpoint directory, a shipped checkpoint name (e.g. ``translator-es-oto``) or a Hub
``ORG/NAME[@REV]``. One translation per line on stdout (``--json``: the ``/translate`` answer's shape).
"""

from __future__ import annotations

import argparse
import json
import sys

from atencion.commands.generate import open_checkpoint, run_guarded
from atencion.references import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory, shipped name, or Hub ORG/NAME[@REVISION]")
    parser.add_argument("texts", nargs="+", help="the Spanish text(s) to translate (quote each)")
    parser.add_argument("--num-beams", type=int, default=4, help="beam size; 1 = greedy (4)")
    parser.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length ** this (1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="at most this many tokens each (128)")
    parser.add_argument("--json", action="store_true", help='print [{"translation_text": …}, …]')


def _translate(args: argparse.Namespace) -> int:
    import torch

    from modeling.beam_search import translate

    if args.num_beams < 1 or args.max_new_tokens < 1:
        raise UsageError("--num-beams and --max-new-tokens must be >= 1")
    if any(not text.strip() for text in args.texts):
        raise UsageError("texts: an empty text; give some Spanish to translate")
    checkpoint = open_checkpoint(args.checkpoint, "translator")
    with torch.inference_mode():
        outputs = translate(
            checkpoint.model.eval(), checkpoint.tokenizer, args.texts, num_beams=args.num_beams,
            length_penalty=args.length_penalty, max_new_tokens=args.max_new_tokens,
        )  # fmt: skip
    if args.json:
        print(json.dumps([{"translation_text": t} for t in outputs], ensure_ascii=False))
    else:
        sys.stdout.write("".join(t + "\n" for t in outputs))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_translate, args)
