"""`atencion release RUN OUT [--corpus DIR] [--examples FILE]`: a training run made into a folder to ship.

The command of ``training.release`` (also ``python -m training.release``): clean records, the works trained
on, the fixed first-tried examples, the model card and ``SHA256SUMS``.
"""

from __future__ import annotations

import argparse

from training.release import add_arguments as add_arguments
from training.release import run_command


def run(args: argparse.Namespace) -> int:
    return run_command(args)
