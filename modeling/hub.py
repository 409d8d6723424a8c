"""Pull a checkpoint from the Hugging Face Hub: ``ORG/NAME[@REVISION]`` → a verified local snapshot.

``resolve_model`` accepts a local checkpoint directory (returned as is) or a Hub reference. A branch or tag is
resolved to a commit sha once, and every file is then downloaded at that commit with ``snapshot_download``
into the usual Hugging Face cache, so a later call works offline (``HF_HUB_OFFLINE=1``) from the cache.

The client checks only the size of what it downloads, so the files are verified here against the Hub's own
checksums for that commit (the cached tree listing): the sha256 LFS oid for LFS files, the git blob sha1 for
regular files. Only an allow-list of checkpoint files is ever downloaded — never pickles or code.

Every failure surfaces as a ``HubError`` whose message is one clear line: missing repository, missing
revision, an unreachable Hub (bounded: no multi-second retry loop), a file that fails verification.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, get_cached_repo_tree, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    RevisionResolutionError,
)

from modeling import SHIPPED
from modeling.config import ConfigError, load_config
from modeling.digests import git_blob_sha1, sha256

# The only files a checkpoint repository is read from (and pushed to): data, never code or pickles.
CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "README.md",
    "training.json",
    "evaluation.json",
    "samples.json",
    "SHA256SUMS",
)
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
UNREACHABLE_HINT = "; HF_HUB_OFFLINE=1 uses what the cache already holds"
MAX_FILE_BYTES = 4 * 1024**3  # a small model's weights are far below this; a hostile repo's may not be
PROBE_TIMEOUT_S = 10.0  # one request decides whether the Hub answers, before any retrying download
# What a Hub call may raise that describe_error turns into one line.
HUB_ERRORS = (
    HfHubHTTPError,
    httpx2.TransportError,
    LocalEntryNotFoundError,
    RevisionResolutionError,
    OfflineModeIsEnabled,
    HFValidationError,
)
_REFERENCE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[^\s@]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
logger = logging.getLogger(__name__)


class HubError(Exception):
    """A Hub operation that failed; the message is one line that names the problem."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference landed on disk, and which exact commit it is."""

    path: Path  # the checkpoint directory (a cache snapshot for a Hub reference)
    repo_id: str | None  # ORG/NAME, None for a local directory
    revision: str | None  # as requested (branch, tag or sha); None for a local directory
    commit: str | None  # the 40-hex commit sha the revision resolved to; None for a local directory
    sha256: dict[str, str] = field(default_factory=dict)  # file name → verified sha256 (Hub references)


def probe_timeout() -> float:
    """Seconds the first request to the Hub may take: ``ATENCION_HUB_TIMEOUT``, default ``PROBE_TIMEOUT_S``."""
    value = os.environ.get("ATENCION_HUB_TIMEOUT", "")
    try:
        return float(value) if value and float(value) > 0 else PROBE_TIMEOUT_S
    except ValueError:
        return PROBE_TIMEOUT_S


def parse_reference(reference: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` → (repo id, revision or None); a clear ``HubError`` for anything else."""
    match = _REFERENCE.fullmatch(reference.strip())
    if match is None:
        raise HubError(f"{reference!r} is not a Hub reference ORG/NAME[@REVISION]")
    revision = match["revision"]
    if revision is not None and (".." in revision or revision.startswith("/") or "\\" in revision):
        raise HubError(f"{reference!r}: {revision!r} is not a valid revision")  # it names a path in the cache
    return match["repo"], revision


def describe_error(
    error: Exception, repo_id: str, revision: str | None, endpoint: str, hint: str = UNREACHABLE_HINT
) -> str:
    """One line naming what went wrong with a Hub call, without the client's multi-line details."""
    where = f"{repo_id}@{revision}" if revision else repo_id
    cause = error.__cause__
    if isinstance(error, LocalEntryNotFoundError | RevisionResolutionError) and isinstance(
        cause, httpx2.TransportError | HfHubHTTPError
    ):
        error = cause  # the cache could not help because the Hub could not be reached: say that
    if isinstance(error, HFValidationError):
        return f"{where} is not a valid Hub reference: {str(error).strip().splitlines()[0]}"
    if isinstance(error, RevisionNotFoundError):
        return f"revision {revision or 'main'!r} not found in {repo_id} on {endpoint}"
    if isinstance(error, GatedRepoError):
        return f"{repo_id} is gated on {endpoint}: accept its conditions and set HF_TOKEN"
    if isinstance(error, RepositoryNotFoundError):
        return f"repository {repo_id} not found on {endpoint} (or it is private and HF_TOKEN does not grant access)"
    if isinstance(error, OfflineModeIsEnabled | LocalEntryNotFoundError | RevisionResolutionError):
        return f"{where} is not in the local cache and the Hub may not be used (offline mode)"
    if isinstance(error, httpx2.TransportError):
        return f"cannot reach the Hub at {endpoint} ({type(error).__name__}){hint}"
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "?"
        if status == 401:
            return f"the Hub at {endpoint} refused the credentials (HTTP 401): check HF_TOKEN"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"the Hub at {endpoint} answered HTTP {status} for {where}: {first_line}"
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def resolve_model(
    reference: str,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    endpoint: str | None = None,
) -> ResolvedModel:
    """The one model-reference resolver: a local checkpoint directory, a shipped name (``checkpoints/NAME`` of
    this repository or of the working directory), or ``ORG/NAME[@REVISION]`` downloaded (or found in the cache)
    and verified.

    ``offline=None`` follows ``HF_HUB_OFFLINE``. ``endpoint`` defaults to ``HF_ENDPOINT``. A local directory
    or shipped name wins over a Hub reference with the same spelling.
    """
    local = Path(reference).expanduser()
    for candidate in (local, SHIPPED / reference, Path.cwd() / "checkpoints" / reference):
        if reference.strip() and candidate.is_dir():
            return ResolvedModel(path=candidate.resolve(), repo_id=None, revision=None, commit=None)
    if reference.startswith((".", "/", "~")) or not _REFERENCE.fullmatch(reference.strip()):
        shipped = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) if SHIPPED.is_dir() else []
        names = f" (shipped: {', '.join(shipped)})" if shipped else ""
        raise HubError(
            f"{reference!r} is neither a checkpoint directory, a shipped name{names} nor a Hub reference "
            "ORG/NAME[@REVISION]"
        )
    repo_id, revision = parse_reference(reference)
    return pull_model(repo_id, revision, cache_dir=cache_dir, offline=offline, endpoint=endpoint)


def pull_model(
    repo_id: str,
    revision: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    endpoint: str | None = None,
    force_download: bool = False,
) -> ResolvedModel:
    """Download ``repo_id`` at ``revision`` (default main) into the cache, or find it there; verify it.

    ``force_download`` fetches every file again even if cached (the way to repair a corrupted cache).
    """
    offline = constants.is_offline_mode() if offline is None else offline
    if offline and force_download:
        raise HubError("a forced download needs the Hub: it cannot be combined with offline mode")
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    api = HfApi(endpoint=endpoint)
    try:
        commit = _resolve_commit(api, repo_id, revision, cache, offline, force_download)
        cached = offline or (not force_download and _snapshot_is_complete(repo_id, commit, cache))
        if not cached:
            _check_listing(api, repo_id, commit)
        path = snapshot_download(
            repo_id,
            revision=commit,
            cache_dir=cache,
            endpoint=endpoint,
            allow_patterns=list(CHECKPOINT_FILES),
            local_files_only=cached,
            force_download=force_download,
        )
    except HUB_ERRORS as error:
        raise HubError(describe_error(error, repo_id, revision, endpoint)) from error
    snapshot = Path(path)
    missing = [name for name in REQUIRED_FILES if not (snapshot / name).is_file()]
    if missing:
        raise HubError(f"{repo_id}@{commit} is not an atencion checkpoint: missing {', '.join(missing)}")
    sha256 = verify_snapshot(repo_id, commit, snapshot, cache)
    try:
        load_config(snapshot / "config.json")  # strict: unknown keys (auto_map, …) and bad ranges are refused
    except ConfigError as error:
        raise HubError(f"{repo_id}@{commit}: config.json is refused: {error}") from error
    return ResolvedModel(path=snapshot, repo_id=repo_id, revision=revision, commit=commit, sha256=sha256)


def _resolve_commit(
    api: HfApi, repo_id: str, revision: str | None, cache: Path, offline: bool, force: bool = False
) -> str:
    """Branch / tag / sha → commit sha, asking the Hub at most once, with a timeout.

    A sha whose snapshot is complete in the cache needs no request. Otherwise one ``model_info`` request
    (bounded by ``probe_timeout()``, no retries: the client's session has no timeout of its own) resolves the
    revision and proves the Hub answers before any retrying download starts; a branch or tag is then recorded
    in the cache's ``refs/`` for offline use. Offline, or with the Hub unreachable or failing, ``refs/`` and
    complete snapshots are all there is.
    """
    is_commit = revision is not None and bool(_COMMIT.fullmatch(revision))
    ref = cache / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or constants.DEFAULT_REVISION)
    cached = revision if is_commit else (ref.read_text().strip() if ref.is_file() else None)
    if offline or (is_commit and not force and _snapshot_is_complete(repo_id, revision, cache)):
        if cached is None:
            raise LocalEntryNotFoundError(f"no cached ref {ref}")
        return cached
    try:
        info = api.model_info(repo_id, revision=revision, timeout=probe_timeout())
    except (httpx2.TransportError, HfHubHTTPError) as error:
        answered = isinstance(error, HfHubHTTPError) and error.response is not None
        if (answered and error.response.status_code < 500) or cached is None:
            raise
        if not _snapshot_is_complete(repo_id, cached, cache):
            raise
        logger.warning("the Hub at %s did not answer (%s); using the cached %s", api.endpoint, error, cached)
        return cached
    if not is_commit:  # written the way huggingface_hub writes it: refs/<revision> holds the sha
        ref.parent.mkdir(parents=True, exist_ok=True)
        temporary = ref.with_name(ref.name + ".tmp")
        temporary.write_text(info.sha)
        temporary.replace(ref)
    return info.sha


def max_file_bytes() -> int:
    """Largest file a pull downloads: ``ATENCION_HUB_MAX_BYTES``, default ``MAX_FILE_BYTES``."""
    value = os.environ.get("ATENCION_HUB_MAX_BYTES", "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_FILE_BYTES


def _check_listing(api: HfApi, repo_id: str, commit: str) -> None:
    """Before downloading anything: the commit must hold a checkpoint, and no file of it may be oversized."""
    sizes = {entry.path: getattr(entry, "size", 0) for entry in api.list_repo_tree(repo_id, revision=commit)}
    missing = [name for name in REQUIRED_FILES if name not in sizes]
    if missing:
        raise HubError(f"{repo_id}@{commit} is not an atencion checkpoint: missing {', '.join(missing)}")
    limit = max_file_bytes()
    for name in CHECKPOINT_FILES:
        if (sizes.get(name) or 0) > limit:
            raise HubError(
                f"{repo_id}@{commit}: {name} is {sizes[name]:,} bytes, above the {limit:,}-byte limit "
                "(ATENCION_HUB_MAX_BYTES)"
            )


def _snapshot_is_complete(repo_id: str, commit: str, cache: Path) -> bool:
    """True when the cache holds this commit's listing and every allow-listed file of it: no request needed."""
    try:
        tree = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return False
    snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit
    wanted = [entry.path for entry in tree if entry.path in CHECKPOINT_FILES]
    return bool(wanted) and all((snapshot / name).is_file() for name in wanted)


def verify_snapshot(repo_id: str, commit: str, snapshot: Path, cache: Path) -> dict[str, str]:
    """Check every file of the snapshot against the Hub's checksums for ``commit``; return their sha256.

    The expected values come from the tree listing ``snapshot_download`` cached for that commit (sha256 of
    LFS files, git blob sha1 of the others); without a listing, from the blob names the cache links to
    (which are the ETags the Hub sent: sha256 for LFS, blob sha1 otherwise).
    """
    try:
        tree = {
            entry.path: entry for entry in get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache)
        }
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        tree = {}
    digests: dict[str, str] = {}
    for name in sorted(os.listdir(snapshot)):
        path = snapshot / name
        if name not in CHECKPOINT_FILES or not path.is_file():
            continue
        digest = sha256(path)
        entry = tree.get(name)
        if entry is not None and entry.lfs is not None:
            expected, actual, kind = entry.lfs.sha256, digest, "sha256"
        elif entry is not None:
            expected, actual, kind = entry.blob_id, git_blob_sha1(path), "git blob sha1"
        else:
            expected = Path(os.path.realpath(path)).name
            if re.fullmatch(r"[0-9a-f]{64}", expected):
                actual, kind = digest, "sha256"
            elif _COMMIT.fullmatch(expected):
                actual, kind = git_blob_sha1(path), "git blob sha1"
            else:
                raise HubError(f"{repo_id}@{commit}: no checksum is known for {name}; pull it once online")
        if actual != expected:
            raise HubError(
                f"{repo_id}@{commit}: {name} failed verification ({kind} {actual[:12]}… ≠ Hub's {expected[:12]}…); "
                "pull again with --force (force_download=True) to repair the cache"
            )
        digests[name] = digest
    return digests
