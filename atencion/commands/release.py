"""`atencion release RUN OUT [--corpus DIR] [--examples FILE]`: a training run made into a folder to ship.

The command of ``training.release`` (also ``python -m training.release``): clean records, the works trained
on, the fixed first-tried examples, the model card and ``SHA256SUMS``. A translator's run (``kind`` =
``translator`` in its checkpoint's config) is released by ``training.translation_release`` instead: its
scores beside the baselines on the held-out blocks, its samples and its card (no corpus, no examples file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.release import add_arguments as add_arguments
from training.release import run_command


def _is_translator_run(run: Path) -> bool:
    try:
        config = json.loads((run / "checkpoint" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the language-model release names what is missing
    return isinstance(config, dict) and config.get("kind") == "translator"


def run(args: argparse.Namespace) -> int:
    if not _is_translator_run(Path(args.run)):
        return run_command(args)
    if args.corpus or args.examples:
        print("error: --corpus and --examples are for language models, not a translator", file=sys.stderr)
        return 2
    from training.translation_release import release

    try:
        print(release(Path(args.run), Path(args.out)))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
