"""What the commands share: a model reference made into a loaded checkpoint, and failures made into one line.

A reference is a checkpoint directory, a shipped name (checkpoints/NAME) or a Hub ``ORG/NAME[@REVISION]``;
``modeling.hub.resolve_model`` is the one resolver, here, in the service and in the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


class UsageError(ValueError):
    """A command-line value that cannot be used; the message says which and why."""


def checkpoint_directory(reference: str, option: str = "checkpoint") -> Path:
    """The checkpoint directory ``reference`` names (a Hub reference is pulled into the cache); ``option``
    names the argument in error messages."""
    from modeling.hub import HubError, resolve_model

    try:
        return Path(resolve_model(reference).path)
    except HubError as error:
        raise UsageError(f"{option}: {error}") from None


def open_checkpoint(reference: str, kind: str | None):
    """Load a checkpoint and check that it holds the kind of model the command needs (None: any)."""
    from modeling.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_directory(reference))
    if kind is not None and checkpoint.config.kind != kind:
        found = checkpoint.config.kind
        raise UsageError(
            f"checkpoint: {reference!r} is {_a(found)} {found} model, this command needs {_a(kind)} {kind}"
        )
    return checkpoint


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def run_guarded(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``body(args)``; turn every expected failure into one ``error:`` line and exit code 1 or 2."""
    from modeling.checkpoint import CheckpointError
    from modeling.hub import HubError

    try:
        return body(args)
    except (CheckpointError, HubError, OSError) as error:  # before ValueError: CheckpointError is one
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # UsageError, Sampling's checks, bad input
        print(f"error: {error}", file=sys.stderr)
        return 2
