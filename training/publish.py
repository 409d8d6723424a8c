"""Push a checkpoint directory to the Hugging Face Hub: model card, repository, branch, one commit.

``push_checkpoint`` stages the allow-listed checkpoint files (``modeling.hub.CHECKPOINT_FILES``: config,
safetensors weights, tokenizer, training/evaluation records, samples) and a README.md model card in a
temporary folder, creates the repository if needed (``HfApi.create_repo(exist_ok=True)``) and the branch if
``revision`` names a new one, and uploads the folder as one commit with ``HfApi.upload_folder``. Allow-listed
files the checkpoint no longer has are deleted from the branch, so the revision holds exactly this checkpoint.
Optimizer state, pickles and anything else in the directory are never uploaded.

The token comes from the argument or ``HF_TOKEN`` (read by huggingface_hub at call time) and never appears in
a message: every error is reduced to one line by ``modeling.hub.describe_error`` and scrubbed of the token.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError

from modeling.config import ConfigError, load_config
from modeling.hub import (
    CHECKPOINT_FILES,
    HUB_ERRORS,
    REQUIRED_FILES,
    HubError,
    describe_error,
    probe_timeout,
)
from training.model_card import build_model_card

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_BRANCH = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)*")


def check_checkpoint(path: Path) -> None:
    """A clear HubError unless ``path`` is a checkpoint directory with a valid config."""
    if not path.is_dir():
        raise HubError(f"{path}: not a checkpoint directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise HubError(f"{path}: not a checkpoint, missing {', '.join(missing)}")
    try:
        load_config(path / "config.json")
    except ConfigError as error:
        raise HubError(f"{path / 'config.json'}: {error}") from error


def stage_checkpoint(path: Path, staging: Path, repo_id: str) -> list[str]:
    """Link (or copy) the allow-listed files into ``staging`` and add a model card; return the file names."""
    names = []
    for name in CHECKPOINT_FILES:
        source = path / name
        if name == "README.md" or not source.is_file():
            continue
        try:
            os.link(source, staging / name)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(source, staging / name)
        names.append(name)
    card = path / "README.md"
    if card.is_file():  # a card written for this checkpoint (the shipped ones) is kept as written
        shutil.copy2(card, staging / "README.md")
    else:
        try:
            text = build_model_card(path, repo_id=repo_id)
        except ValueError as error:
            raise HubError(f"{path}: cannot write the model card: {error}") from error
        (staging / "README.md").write_text(text, encoding="utf-8")
    return [*names, "README.md"]


def _probe(api: HfApi, repo_id: str) -> None:
    """One request with a timeout, so an unreachable Hub fails fast: the client's own calls have none."""
    try:
        api.model_info(repo_id, timeout=probe_timeout())
    except RepositoryNotFoundError:
        pass  # created next


def push_checkpoint(
    path: str | Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    *,
    endpoint: str | None = None,
) -> str:
    """Upload the checkpoint at ``path`` to ``repo_id`` (branch ``revision``, default main); return the commit sha."""
    checkpoint = Path(path).expanduser()
    check_checkpoint(checkpoint)
    if not _REPO_ID.fullmatch(repo_id):
        raise HubError(f"{repo_id!r} is not a repository id of the form ORG/NAME")
    if revision is not None and (not _BRANCH.fullmatch(revision) or ".." in revision):
        raise HubError(f"{revision!r} is not a valid branch name")
    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        raise HubError(f"{revision!r} is a commit sha: push commits to a branch, name one with --revision")
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    token = token or os.environ.get("HF_TOKEN") or None
    api = HfApi(endpoint=endpoint, token=token)
    try:
        with tempfile.TemporaryDirectory(prefix="atencion-push-") as staging:
            stage_checkpoint(checkpoint, Path(staging), repo_id)
            _probe(api, repo_id)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision not in (None, constants.DEFAULT_REVISION):
                api.create_branch(repo_id, branch=revision, exist_ok=True)  # starts from main when new
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=revision,
                commit_message=f"Upload {checkpoint.resolve().name} with atencion",
                delete_patterns=list(CHECKPOINT_FILES),
            )
    except HUB_ERRORS as error:
        message = describe_error(error, repo_id, revision, endpoint, hint="")
        raise HubError(message.replace(token, "***") if token else message) from None
    return info.oid
