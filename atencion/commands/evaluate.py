"""`atencion evaluate CKPT --corpus DIR [--json] [--save]`: held-out quality next to an n-gram baseline."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="a checkpoint directory (config.json, model.safetensors, tokenizer.json)"
    )
    parser.add_argument(
        "--corpus",
        help="a folder of UTF-8 .txt files (not for a translator: it reads its held-out rows from elotl)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="translator: the held-out block scored",
    )
    parser.add_argument("--num-beams", type=int, default=4, help="translator: beam size (1 = greedy)")
    parser.add_argument("--length-penalty", type=float, default=1.0, help="translator: beam length penalty")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--save", action="store_true", help="write evaluation.json into the checkpoint")
    parser.add_argument("--max-sequences", type=int, default=128, help="sequences scored (default 128)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--pppl-tokens", type=int, default=512, help="tokens for the encoder's pseudo-perplexity"
    )
    parser.add_argument("--ngram-positions", type=int, default=1000, help="masked positions the n-gram fills")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation masking")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="score with int8 linear layers (decoders: weights; encoders: weights and activations)",
    )


def run(args: argparse.Namespace) -> int:
    from modeling.checkpoint import CheckpointError
    from training.data import DataError
    from training.evaluate import evaluate_checkpoint, save_evaluation

    if _is_translator(args.checkpoint):
        return _evaluate_translator(args)
    if not args.corpus:
        print("atencion evaluate: error: --corpus is required for this checkpoint", file=sys.stderr)
        return 2
    for name in ("max_sequences", "batch_size", "pppl_tokens", "ngram_positions"):
        if getattr(args, name) < 1:
            print(f"atencion evaluate: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            args.corpus,
            max_sequences=args.max_sequences,
            batch_size=args.batch_size,
            pppl_tokens=args.pppl_tokens,
            ngram_positions=args.ngram_positions,
            seed=args.seed,
            precision=args.precision,
            quantization=args.quantize,
        )
    except (CheckpointError, DataError, ValueError) as error:
        print(f"atencion evaluate: error: {error}", file=sys.stderr)
        return 1
    if args.save:
        result["saved_to"] = str(save_evaluation(args.checkpoint, result))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(_table(result))
    return 0


def _table(result: dict) -> str:
    m, b = result["metrics"], result["baseline"]
    where = "held-out validation" if result["held_out"] else "all"
    lines = [
        f"{result['kind']} {result['checkpoint']}: {where} documents of {result['corpus']} "
        f"({len(result['documents'])} documents, {result['sequences']} sequences of {result['seq_len']} tokens)",
        f"{'metric':<22}{'model':>12}{'KN trigram':>14}",
    ]
    if result["kind"] == "encoder":
        rows = [
            ("masked-LM top-1", f"{m['top1']:.2%}", _get(b, "top1", "{:.2%}")),
            ("masked-LM top-5", f"{m['top5']:.2%}", "—"),
            ("masked-LM loss", f"{m['loss']:.3f}", "—"),
            ("pseudo-perplexity", f"{m['pseudo_perplexity']:.2f}", "—"),
        ]
    else:
        rows = [
            ("perplexity", f"{m['perplexity']:.2f}", _get(b, "perplexity", "{:.2f}")),
            ("loss (nats/token)", f"{m['loss']:.3f}", _get(b, "loss", "{:.3f}")),
        ]
    lines += [f"{name:<22}{model:>12}{base:>14}" for name, model, base in rows]
    if "skipped" in b:
        lines.append(f"baseline skipped: {b['skipped']}")
    return "\n".join(lines)


def _get(baseline: dict, key: str, fmt: str) -> str:
    return fmt.format(baseline[key]) if key in baseline else "—"


def _is_translator(checkpoint: str) -> bool:
    from pathlib import Path

    try:
        return (
            json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8")).get("kind")
            == "translator"
        )
    except (OSError, ValueError, AttributeError):
        return False


def _evaluate_translator(args: argparse.Namespace) -> int:
    from modeling.checkpoint import CheckpointError
    from training.parallel import CorpusError
    from training.translation_eval import evaluate_translator, table

    if args.num_beams < 1:
        print("atencion evaluate: error: --num-beams must be >= 1", file=sys.stderr)
        return 2
    try:
        result = evaluate_translator(
            args.checkpoint, split=args.split, num_beams=args.num_beams, length_penalty=args.length_penalty
        )
    except (CheckpointError, CorpusError, ValueError) as error:
        print(f"atencion evaluate: error: {error}", file=sys.stderr)
        return 1
    if args.save:
        from training.evaluate import save_evaluation

        result["saved_to"] = str(save_evaluation(args.checkpoint, result))
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else table(result))
    return 0
