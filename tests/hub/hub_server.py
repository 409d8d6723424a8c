"""A small Hugging Face Hub-protocol server for the tests: files on disk, real commit ids, branches.

It answers the subset of the Hub's HTTP API that the unmodified huggingface_hub 2.4 client uses for
``create_repo``, ``create_branch``, ``create_tag``, ``upload_folder`` (preupload, LFS batch / PUT / verify,
commit),
``repo_info``, ``list_repo_tree``, ``list_repo_refs`` and ``hf_hub_download`` (resolve HEAD / GET), with the
headers the client relies on (``X-Repo-Commit``, ``ETag``, ``X-Error-Code``). Standard library only; not a
production server.

The state (files, commits, branches, tags) lives on disk in ``hub_store.HubStore``; this file is the HTTP side.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

from hub_store import LFS_MIN_SIZE, LFS_SUFFIXES, HubError, HubStore


class HubHandler(BaseHTTPRequestHandler):
    """Routes on the raw path (revisions arrive percent-encoded) and answers JSON or file bytes."""

    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    # ---- plumbing ---------------------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # keep test output clean; remember what was asked
        self.server.requests.append(f"{self.command} {self.path}")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> dict:
        try:
            return json.loads(self._body() or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, "BadRequest", f"malformed JSON: {error}") from error

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _authorized(self) -> bool:
        token = self.server.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _require_write(self) -> None:
        if not self._authorized():
            raise HubError(401, "Unauthorized", "Invalid credentials in Authorization header")
        self.server.authorized_writes += 1

    def _readable(self, repo_id: str) -> None:
        with self.server.store.lock:
            repo = self.server.store.load(repo_id)
        if repo["private"] and not (self.server.token and self._authorized()):
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")

    def _dispatch(self) -> None:
        raw, _, query = self.path.partition("?")
        parts = [unquote(p) for p in raw.strip("/").split("/")]
        params = {k: v[0] for k, v in parse_qs(query).items()}
        try:
            self._route(self.command, parts, params)
        except HubError as error:
            headers = {"X-Error-Code": error.code, "X-Error-Message": error.message}
            self._json(error.status, {"error": error.message}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # ---- routes -----------------------------------------------------------------------------------------
    def _route(self, method: str, parts: list[str], params: dict) -> None:
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo()
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml()
        if method == "GET" and parts == ["api", "agent-harnesses"]:
            return self._json(200, [])
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if method == "GET" and not rest:
                return self._info(repo_id, "main")
            if method == "GET" and rest[0] == "revision" and len(rest) == 2:
                return self._info(repo_id, rest[1])
            if method == "GET" and rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]))
            if method == "GET" and rest == ["refs"]:
                return self._refs(repo_id)
            if method == "POST" and rest[0] == "preupload" and len(rest) == 2:
                return self._preupload(repo_id, rest[1])
            if method == "POST" and rest[0] == "commit" and len(rest) == 2:
                return self._commit(repo_id, rest[1])
            if method == "POST" and rest[0] in ("branch", "tag") and len(rest) == 2:
                return self._create_ref(repo_id, rest[0], rest[1])
        if method == "POST" and len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == LFS_BATCH:
            return self._lfs_batch(f"{parts[0]}/{parts[1][: -len('.git')]}")
        if method == "PUT" and len(parts) == 2 and parts[0] == "lfs":
            return self._lfs_put(parts[1], params.get("sig", ""))
        if method == "POST" and len(parts) == 3 and parts[0] == "lfs" and parts[2] == "verify":
            return self._lfs_verify(parts[1])
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, "NotFound", f"no route for {method} /{'/'.join(parts)}")

    def _create_repo(self) -> None:
        self._require_write()
        body = self._json_body()
        name, namespace = body.get("name") or "", body.get("organization") or "user"
        if not re.fullmatch(r"[\w.-]+", name) or not re.fullmatch(r"[\w.-]+", namespace):
            raise HubError(400, "BadRequest", f"invalid repository name {namespace}/{name}")
        private = body.get("private") is True or body.get("visibility") == "private"
        url = f"{self.server.url}/{namespace}/{name}"
        if self.server.store.create(f"{namespace}/{name}", private):
            return self._json(200, {"url": url, "name": f"{namespace}/{name}"})
        self._json(409, {"error": "You already created this model repo", "url": url})

    def _validate_yaml(self) -> None:
        import yaml  # installed with huggingface_hub

        content = self._json_body().get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return self._json(400, {"errors": [{"message": f"invalid YAML: {error}"}]})
        if not isinstance(data, dict):
            return self._json(400, {"errors": [{"message": "the metadata must be a YAML mapping"}]})
        self._json(200, {"warnings": []})

    def _info(self, repo_id: str, revision: str) -> None:
        self._readable(repo_id)
        sha, files = self.server.store.files(repo_id, revision)
        repo = self.server.store.load(repo_id)
        self._json(
            200,
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "private": repo["private"],
                "lastModified": repo["commits"][sha]["date"],
                "siblings": [{"rfilename": path} for path in sorted(files)],
                "tags": [],
            },
        )

    def _tree(self, repo_id: str, revision: str, prefix: str) -> None:
        self._readable(repo_id)
        _, files = self.server.store.files(repo_id, revision)
        entries = []
        for path, entry in sorted(files.items()):
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            item = {"type": "file", "oid": entry["blob"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": 134}
            entries.append(item)
        self._json(200, entries)

    def _refs(self, repo_id: str) -> None:
        self._readable(repo_id)
        repo = self.server.store.load(repo_id)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in repo["refs"].items()]
        tags = [
            {"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in repo.get("tags", {}).items()
        ]
        self._json(200, {"branches": branches, "tags": tags, "converts": []})

    def _preupload(self, repo_id: str, revision: str) -> None:
        self._require_write()
        self._readable(repo_id)
        _, files = self.server.store.files(repo_id, revision)
        answers = []
        for item in self._json_body().get("files", []):
            path, size = item["path"], item["size"]
            sample = base64.b64decode(item.get("sample", ""))
            lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample
            remote = files.get(path)
            oid = None if remote is None else (remote["sha256"] if remote["lfs"] else remote["blob"])
            answers.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._json(200, {"files": answers})

    def _commit(self, repo_id: str, branch: str) -> None:
        self._require_write()
        self._readable(repo_id)
        try:
            operations = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise HubError(400, "BadRequest", f"malformed ndjson: {error}") from error
        sha = self.server.store.commit(repo_id, branch, operations)
        self._json(
            200, {"commitOid": sha, "commitUrl": f"{self.server.url}/{repo_id}/commit/{sha}", "success": True}
        )

    def _create_ref(self, repo_id: str, kind: str, segment: str) -> None:
        """``/branch/{name}`` {"startingPoint"} or ``/tag/{revision}`` {"tag"}."""
        self._require_write()
        self._readable(repo_id)
        body = self._json_body()
        if kind == "branch":
            self.server.store.create_ref(repo_id, "refs", segment, body.get("startingPoint") or "main")
        else:
            self.server.store.create_ref(repo_id, "tags", body.get("tag", ""), segment)
        self._json(200, {})

    # ---- LFS: batch, signed PUT (no auth header is sent with it), verify ----------------------------------
    def _signature(self, oid: str) -> str:
        return hmac.new(self.server.secret, oid.encode(), hashlib.sha256).hexdigest()

    def _lfs_batch(self, repo_id: str) -> None:
        self._require_write()
        self._readable(repo_id)
        objects = []
        for item in self._json_body().get("objects", []):
            oid, size = item["oid"], item["size"]
            stored = self.server.store.object_path(oid)
            answer = {"oid": oid, "size": size}
            if stored is None or stored.stat().st_size != size:
                answer["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs/{oid}?sig={self._signature(oid)}"},
                    "verify": {"href": f"{self.server.url}/lfs/{oid}/verify"},
                }
            objects.append(answer)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            "application/vnd.git-lfs+json",
        )

    def _lfs_put(self, oid: str, signature: str) -> None:
        if not hmac.compare_digest(signature, self._signature(oid)):
            raise HubError(403, "Forbidden", "bad upload signature")
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "BadRequest", "uploaded bytes do not match the oid")
        self.server.store.put_object(data)
        self._send(200, b"", "text/plain")

    def _lfs_verify(self, oid: str) -> None:
        self._require_write()
        body = self._json_body()
        stored = self.server.store.object_path(oid)
        if stored is None or stored.stat().st_size != body.get("size"):
            raise HubError(404, "EntryNotFound", f"LFS object {oid} is missing")
        self._json(200, {"success": True})

    # ---- downloads --------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        self._readable(repo_id)
        sha, files = self.server.store.files(repo_id, revision)
        entry = files.get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}")
        data = self.server.store.object_path(entry["sha256"]).read_bytes()
        etag = entry["sha256"] if entry["lfs"] else entry["blob"]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(entry["size"])}
        status, ranged = 200, re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and self.command == "GET":
            start = int(ranged.group(1))
            end = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            status, data = 206, data[start : end + 1]
        self._send(status, data, "application/octet-stream", headers)


LFS_BATCH = ["info", "lfs", "objects", "batch"]


class HubHTTPServer(ThreadingHTTPServer):
    """The server and what the tests look at: ``url``, ``requests`` seen, writes that carried the token."""

    daemon_threads = True

    def __init__(self, root: Path, token: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.store = HubStore(root)
        self.token = token
        self.secret = secrets.token_bytes(16)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[str] = []
        self.authorized_writes = 0
        self._thread: threading.Thread | None = None

    def start(self) -> HubHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()
