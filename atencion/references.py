"""What the commands accept as a model: a checkpoint directory, a shipped name, or a Hub reference."""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


class UsageError(ValueError):
    """A command-line value that cannot be used; the message says which and why."""


def checkpoint_directory(reference: str, option: str = "checkpoint") -> Path:
    """A checkpoint directory for a local path, a shipped checkpoint name (checkpoints/NAME) or a Hub
    ``ORG/NAME[@REVISION]`` (pulled into the cache); ``option`` names the argument in error messages."""
    local = Path(reference).expanduser()
    if local.is_dir():
        return local
    for folder in (SHIPPED, Path.cwd() / "checkpoints"):
        if (folder / reference).is_dir():
            return folder / reference
    if reference.count("/") == 1 and not reference.startswith((".", "/", "~")):
        from modeling.hub import HubError, resolve_model

        try:
            return Path(resolve_model(reference).path)
        except HubError as error:
            raise UsageError(f"{option}: {error}") from None
    shipped = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) if SHIPPED.is_dir() else []
    names = f" (shipped: {', '.join(shipped)})" if shipped else ""
    raise UsageError(
        f"{option}: {reference!r} is neither a checkpoint directory, a shipped name{names} nor ORG/NAME[@REV]"
    )
