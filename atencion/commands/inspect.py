"""`atencion inspect "TEXT" --model NAME_OR_DIR --out FILE.png`: every layer and head's attention as a PNG.

For a translator the PNG shows the cross-attention: source tokens across, target tokens down.

No server: the checkpoint is loaded here, ``service.inspection.analyse`` computes the same payload as
``POST /attention``, and ``service.picture.draw_grid`` draws the viewer's layers × heads grid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atencion.references import UsageError, checkpoint_directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to analyse (quote it)")
    parser.add_argument(
        "--model",
        required=True,
        help="a checkpoint directory, a shipped checkpoint name (checkpoints/NAME) or a Hub ORG/NAME[@REVISION]",
    )
    parser.add_argument("--out", required=True, help="the PNG file to write")
    parser.add_argument("--layers", help="comma-separated layer indices (default: all)")
    parser.add_argument("--heads", help="comma-separated head indices (default: all)")
    parser.add_argument("--target", type=int, help="token position whose prediction the gradient explains")
    parser.add_argument(
        "--translation",
        help="translator: the Otomí text whose cross-attention to draw (default: the model's own translation)",
    )
    parser.add_argument(
        "--dpi", type=int, default=100, help="pixels per inch of the PNG (each map is 2 inches)"
    )
    parser.add_argument(
        "--scale", choices=("head", "absolute"), default="head", help="colour scale: per head or 0–1 for all"
    )


def parse_indices(value: str | None, name: str) -> list[int] | None:
    """``"0,2"`` → ``[0, 2]``; ``None`` → all."""
    if value is None:
        return None
    try:
        indices = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise UsageError(f"--{name}: expected comma-separated integers like 0,2, got {value!r}") from error
    if not indices:
        raise UsageError(f"--{name}: give at least one index, e.g. --{name} 0")
    return indices


def run(args: argparse.Namespace) -> int:
    from modeling.checkpoint import CheckpointError, load_checkpoint
    from service.inspection import InspectionError, analyse
    from service.picture import draw_cross_grid, draw_grid
    from service.translation_inspection import analyse_translation

    try:
        layers = parse_indices(args.layers, "layers")
        heads = parse_indices(args.heads, "heads")
        out = Path(args.out)
        if out.suffix.lower() != ".png":
            raise UsageError(f"--out: {args.out!r} must end in .png")
        if not 30 <= args.dpi <= 600:
            raise UsageError(f"--dpi: must be between 30 and 600, got {args.dpi}")
        if not out.parent.is_dir():
            raise UsageError(f"--out: the folder {str(out.parent)!r} does not exist")
        checkpoint = load_checkpoint(checkpoint_directory(args.model, "--model"))
        if checkpoint.config.kind == "translator":
            payload = analyse_translation(
                checkpoint.model, checkpoint.tokenizer, args.text, translation=args.translation, layers=layers,
                heads=heads, target=args.target,
            )  # fmt: skip
            width, height = draw_cross_grid(payload, out, dpi=args.dpi)
        else:
            if args.translation is not None:
                raise UsageError("--translation: only a translator checkpoint takes a translation")
            payload = analyse(
                checkpoint.model,
                checkpoint.tokenizer,
                args.text,
                layers=layers,
                heads=heads,
                target=args.target,
            )
            width, height = draw_grid(payload, out, scale=args.scale, dpi=args.dpi)
    except (UsageError, CheckpointError, InspectionError) as error:
        print(f"atencion inspect: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {out} ({width}×{height} px): {len(payload['layers'])} layers × {len(payload['heads'])} heads, "
        f"{payload['n_tokens']} tokens"
    )
    return 0
