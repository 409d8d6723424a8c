"""The test Hub's state on disk: content-addressed objects, and per repository its branches, tags and commits.

``objects/<sha256>`` holds every file's bytes once; ``repos/<org>--<name>.json`` holds the repository's branches
(``refs``), tags and commits. A commit id is the sha1 of a git-like description of the commit (its file list
with git blob ids, its parent, date and message), so it changes whenever the content does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from pathlib import Path

GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores anything from 10 MB on in LFS
SHA1 = re.compile(r"[0-9a-f]{40}")


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob: sha1 of ``b"blob <size>\\0" + data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answer: HTTP status, the ``X-Error-Code`` the client types errors by, and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HubStore:
    """Repositories on disk. Every public method takes the store's lock, so request threads may share it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # ---- objects ----------------------------------------------------------------------------------------
    def put_object(self, data: bytes) -> str:
        oid = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / oid
        if not path.exists():
            path.write_bytes(data)
        return oid

    def object_path(self, oid: str) -> Path | None:
        path = self.root / "objects" / oid
        return path if re.fullmatch(r"[0-9a-f]{64}", oid) and path.exists() else None

    # ---- repositories -----------------------------------------------------------------------------------
    def _repo_file(self, repo_id: str) -> Path:
        return self.root / "repos" / (repo_id.replace("/", "--") + ".json")

    def load(self, repo_id: str) -> dict:
        path = self._repo_file(repo_id)
        if not path.exists():
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        return json.loads(path.read_text())

    def save(self, repo_id: str, repo: dict) -> None:
        self._repo_file(repo_id).write_text(json.dumps(repo, indent=1))

    def create(self, repo_id: str, private: bool) -> bool:
        """Create ``repo_id`` with an initial commit holding ``.gitattributes``; False if it already exists."""
        with self.lock:
            if self._repo_file(repo_id).exists():
                return False
            repo = {"private": private, "refs": {}, "commits": {}}
            entry = self._entry(GITATTRIBUTES, lfs=False)
            self._commit(repo, "main", {".gitattributes": entry}, "initial commit", "", parent=None)
            self.save(repo_id, repo)
            return True

    def _entry(self, data: bytes, lfs: bool) -> dict:
        return {"sha256": self.put_object(data), "size": len(data), "blob": git_blob_id(data), "lfs": lfs}

    def resolve(self, repo: dict, revision: str) -> str:
        """A branch, a tag or a full commit sha → the commit sha."""
        if revision in repo["refs"]:
            return repo["refs"][revision]
        if revision in repo.get("tags", {}):
            return repo["tags"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def files(self, repo_id: str, revision: str) -> tuple[str, dict[str, dict]]:
        with self.lock:
            repo = self.load(repo_id)
            sha = self.resolve(repo, revision)
            return sha, repo["commits"][sha]["files"]

    def _commit(self, repo: dict, branch: str, files: dict, summary: str, description: str, parent) -> str:
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        tree = "".join(f"{path} {entry['blob']}\n" for path, entry in sorted(files.items()))
        text = f"tree {hashlib.sha1(tree.encode()).hexdigest()}\nparent {parent}\ndate {date}\n\n{summary}\n{description}"
        sha = hashlib.sha1(text.encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "summary": summary, "date": date, "files": files}
        repo["refs"][branch] = sha
        return sha

    def commit(self, repo_id: str, branch: str, operations: list[dict]) -> str:
        """Apply the ndjson operations of one ``/commit`` request on top of ``branch``."""
        with self.lock:
            repo = self.load(repo_id)
            if branch not in repo["refs"]:
                raise HubError(404, "RevisionNotFound", f"Branch {branch} does not exist")
            head = repo["refs"][branch]
            header = next((op["value"] for op in operations if op.get("key") == "header"), None)
            if header is None:
                raise HubError(400, "BadRequest", "the commit has no header line")
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, "PreconditionFailed", "parentCommit is not the head of the branch")
            files = dict(repo["commits"][head]["files"])
            for op in operations:
                key, value = op.get("key"), op.get("value", {})
                if key == "file":
                    files[value["path"]] = self._entry(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    path = self.object_path(value["oid"])
                    if path is None or path.stat().st_size != value["size"]:
                        raise HubError(422, "LfsObjectMissing", f"LFS object {value['oid']} was not uploaded")
                    files[value["path"]] = self._entry(path.read_bytes(), lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "EntryNotFound", f"{value['path']} does not exist")
                elif key != "header":
                    raise HubError(400, "BadRequest", f"unsupported commit operation {key!r}")
            sha = self._commit(repo, branch, files, header["summary"], header.get("description", ""), head)
            self.save(repo_id, repo)
            return sha

    def create_ref(self, repo_id: str, kind: str, name: str, revision: str) -> None:
        """A new branch (``kind="refs"``) or tag (``kind="tags"``) pointing at ``revision``'s commit."""
        with self.lock:
            repo = self.load(repo_id)
            if not name or name in repo["refs"] or name in repo.setdefault("tags", {}):
                raise HubError(409, "Conflict", f"Reference {name!r} already exists or is empty")
            repo[kind][name] = self.resolve(repo, revision)
            self.save(repo_id, repo)
