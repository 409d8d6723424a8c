"""`atencion plot positions|noam|next-token|embeddings … --out FILE.png`: the workshop's pictures.

Each prints the numbers it draws (``atencion.plots``), then writes the PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atencion.references import UsageError, checkpoint_directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="plot", metavar="PLOT", required=True)
    positions = sub.add_parser(
        "positions", help="heatmap of the sinusoidal positional encoding (Vaswani 2017)"
    )
    positions.add_argument("--max-len", type=int, default=64, help="positions (rows)")
    positions.add_argument("--d-model", type=int, default=128, help="dimensions (columns), even")
    noam = sub.add_parser(
        "noam", help="the learning rate of every step of a recipe (Noam, optional cooldown)"
    )
    noam.add_argument("recipe", help="a shipped recipe name (taller, decoder-dense, …) or a .toml file")
    noam.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides")
    nxt = sub.add_parser("next-token", help="bar chart of a decoder's next-token probabilities")
    nxt.add_argument("text", help="the prompt (quote it)")
    nxt.add_argument("--model", default="taller", help="a decoder: directory, shipped name or ORG/NAME@REV")
    nxt.add_argument("--position", type=int, help="token position to predict after (default: the last)")
    nxt.add_argument("--top", type=int, default=10, help="how many tokens to draw")
    emb = sub.add_parser("embeddings", help="token embeddings on their first two principal components")
    emb.add_argument(
        "--model", default="taller", help="a checkpoint: directory, shipped name or ORG/NAME@REV"
    )
    emb.add_argument("--words", help="comma-separated words, each one token (default: the first --top words)")
    emb.add_argument("--top", type=int, default=40, help="how many word tokens when --words is not given")
    for command in (positions, noam, nxt, emb):
        command.add_argument("--out", required=True, help="the PNG file to write")


def _out(value: str) -> Path:
    out = Path(value)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out: {value!r} must end in .png")
    if not out.parent.is_dir():
        raise UsageError(f"--out: the folder {str(out.parent)!r} does not exist")
    return out


def run(args: argparse.Namespace) -> int:
    from modeling.checkpoint import CheckpointError
    from training.recipe import RecipeError

    try:
        out = _out(args.out)
        lines = {
            "positions": _positions,
            "noam": _noam,
            "next-token": _next_token,
            "embeddings": _embeddings,
        }[args.plot](args, out)
    except (UsageError, CheckpointError, RecipeError, ValueError) as error:
        print(f"atencion plot {args.plot}: {error}", file=sys.stderr)
        return 2
    print("\n".join([*lines, f"wrote {out}"]))
    return 0


def _positions(args: argparse.Namespace, out: Path) -> list[str]:
    from atencion.plots import draw_positions, positions_data

    if args.max_len < 1 or args.d_model < 2 or args.d_model % 2:
        raise UsageError("--max-len must be >= 1 and --d-model even and >= 2")
    table = positions_data(args.max_len, args.d_model)
    draw_positions(table, out)
    p = min(1, args.max_len - 1)
    return [
        f"PE: {args.max_len} positions × {args.d_model} dimensions, values in [{table.min():.3f}, {table.max():.3f}]",
        f"PE[{p}, 0:4] = " + " ".join(f"{v:.4f}" for v in table[p, :4].tolist()),
    ]


def _noam(args: argparse.Namespace, out: Path) -> list[str]:
    from atencion.plots import draw_noam, noam_data
    from training.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    curve = noam_data(recipe)
    t = recipe.training
    title = f"{args.recipe}: d_model {recipe.model.d_model}, warmup {t.warmup}, factor {t.noam_factor}"
    draw_noam(curve, out, title + (f", cooldown {t.cooldown}" if t.cooldown else ""))
    return [
        title,
        f"peak {curve.peak_rate:.3e} at step {curve.peak_step}; step 1 {curve.rates[0]:.3e}; "
        f"last step {curve.steps[-1]} {curve.rates[-1]:.3e}",
    ]


def _next_token(args: argparse.Namespace, out: Path) -> list[str]:
    from atencion.plots import draw_next_token, next_token_data
    from modeling.checkpoint import load_checkpoint

    if not 1 <= args.top <= 50:
        raise UsageError(f"--top: must be between 1 and 50, got {args.top}")
    checkpoint = load_checkpoint(checkpoint_directory(args.model, "--model"))
    data = next_token_data(checkpoint, args.text, args.position, args.top)
    draw_next_token(data, out)
    return [f"after token {data['position']} «{data['after']}»:"] + [
        f"{p:.4f}  {text!r}" for text, _, p in data["candidates"]
    ]


def _embeddings(args: argparse.Namespace, out: Path) -> list[str]:
    from atencion.plots import draw_embeddings, embeddings_data
    from modeling.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_directory(args.model, "--model"))
    words = [w.strip() for w in args.words.split(",") if w.strip()] if args.words else None
    data = embeddings_data(checkpoint, words, args.top)
    draw_embeddings(data, out)
    first, second = data["explained"]
    return [f"{len(data['ids'])} tokens; the two components explain {first:.1%} and {second:.1%}"] + [
        f"{x:+.3f} {y:+.3f}  {label}"
        for label, (x, y) in zip(data["labels"], data["points"].tolist(), strict=True)
    ]
