"""`atencion push CKPT ORG/NAME [--revision BRANCH] [--private]`: upload a checkpoint, print the commit sha.

The token comes from ``HF_TOKEN`` and is never printed; the endpoint from ``HF_ENDPOINT``.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="checkpoint directory (config.json, model.safetensors, tokenizer.json)"
    )
    parser.add_argument("repo_id", metavar="ORG/NAME", help="Hub repository, created if it does not exist")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created from main if new)")
    parser.add_argument(
        "--private",
        action="store_true",
        help="create the repository as private (an existing one keeps its visibility)",
    )


def run(args: argparse.Namespace) -> int:
    from modeling.hub import HubError
    from training.publish import push_checkpoint

    token = os.environ.get("HF_TOKEN") or None
    try:
        commit = push_checkpoint(args.checkpoint, args.repo_id, revision=args.revision, private=args.private)
    except (HubError, OSError) as error:
        message = str(error).replace(token, "***") if token else str(error)
        print(f"atencion push: error: {message}", file=sys.stderr)
        return 1
    print(f"pushed {args.checkpoint} to {args.repo_id}@{args.revision or 'main'}", file=sys.stderr)
    print(commit)
    return 0
