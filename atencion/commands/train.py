"""`atencion train RECIPE --corpus DIR --out DIR [--set KEY=VALUE …] [--resume]`.

The same command runs under ``torchrun --nproc_per_node N -m atencion train …`` for data-parallel training.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from training.recipe import RECIPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
    parser.add_argument("recipe", help=f"a recipe .toml file or a shipped recipe's name ({names})")
    parser.add_argument(
        "--corpus",
        help="a folder of UTF-8 .txt files, one document each (translator recipes read their corpus from elotl)",
    )
    parser.add_argument("--out", required=True, help="the run's folder: checkpoint/, metrics.jsonl, loss.png")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override recipe values, e.g. training.steps=100 model.attention.window=64",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def run(args: argparse.Namespace) -> int:
    from training.data import DataError
    from training.recipe import RecipeError, load_recipe
    from training.seq2seq import is_translation_recipe
    from training.tokenizer import TokenizerError

    if is_translation_recipe(args.recipe):
        return _train_translator(args)
    if not args.corpus:
        print("atencion train: error: --corpus is required for this recipe", file=sys.stderr)
        return 2
    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as error:
        print(f"atencion train: error: {error}", file=sys.stderr)
        return 2
    from modeling.checkpoint import CheckpointError
    from training.loop import TrainingError, train

    command = shlex.join(["atencion", *sys.argv[1:]])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        command = f"torchrun --nproc_per_node {world} -m {command}"
    try:
        path = train(
            recipe, args.corpus, args.out, overrides=args.overrides, resume=args.resume, command=command
        )
    except (TrainingError, DataError, TokenizerError, CheckpointError, FileNotFoundError) as error:
        print(f"atencion train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("atencion train: interrupted; continue from the last checkpoint with --resume", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0


def _train_translator(args: argparse.Namespace) -> int:
    from training.parallel import CorpusError
    from training.recipe import RecipeError
    from training.seq2seq import load_translation_recipe, train_translator

    try:
        recipe = load_translation_recipe(args.recipe, args.overrides)
        path = train_translator(recipe, args.out, command=shlex.join(["atencion", *sys.argv[1:]]))
    except (RecipeError, CorpusError) as error:
        print(f"atencion train: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, RecipeError) else 1
    print(path)
    return 0
