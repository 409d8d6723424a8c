"""File digests, read in 1 MiB chunks: sha256 (``SHA256SUMS``, the Hub's LFS oids) and git's blob sha1 (the
Hub's ids of regular files). Standard library only, so the Hub client's paths stay light."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    """The file's sha256 as hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git (and the Hub, for non-LFS files) gives a file: sha1 of ``blob <size>\\0<bytes>``."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
