"""`atencion pull ORG/NAME[@REVISION]`: download a checkpoint into the Hugging Face cache and verify it.

Prints the local snapshot path, then the commit sha the revision resolved to. Works offline from the cache
(``HF_HUB_OFFLINE=1`` or ``--offline``).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reference", metavar="ORG/NAME[@REVISION]", help="Hub repository, optionally @branch, tag or sha"
    )
    parser.add_argument("--cache-dir", help="Hugging Face cache directory (default: HF_HUB_CACHE)")
    parser.add_argument(
        "--offline", action="store_true", help="use only the local cache (like HF_HUB_OFFLINE=1)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="download every file again (repairs a cache that fails verification)",
    )


def run(args: argparse.Namespace) -> int:
    from modeling.hub import HubError, parse_reference, pull_model

    try:
        repo_id, revision = parse_reference(args.reference)  # always the Hub, even if a folder has that name
        offline = True if args.offline else None  # None: follow HF_HUB_OFFLINE
        model = pull_model(
            repo_id, revision, cache_dir=args.cache_dir, offline=offline, force_download=args.force
        )
    except (HubError, OSError) as error:
        print(f"atencion pull: error: {error}", file=sys.stderr)
        return 1
    revision = f"@{model.revision}" if model.revision not in (None, model.commit) else ""
    print(
        f"pulled {model.repo_id}{revision} at commit {model.commit}; sha256 verified for {len(model.sha256)} files",
        file=sys.stderr,
    )
    print(model.path)
    print(model.commit)
    return 0
