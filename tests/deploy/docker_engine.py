"""A real Docker engine for the deployment tests: dockerd, a local base image, a local torch index, the builds.

No image registry can be reached from the test machines, so nothing is pulled:

- the base image is Debian bookworm from `debootstrap` with Python 3.11 and a virtual environment on PATH as
  `python`/`pip` (the layout of the official `python:3.11-slim`), cached between runs under a tag named after
  its recipe's hash;
- torch 2.13.0's CPU wheel comes from this machine's pip configuration (its find-links), never from a CUDA
  index; it and its dependencies are served as a PEP 503 index on 127.0.0.1, which builds reach through
  `--network host`;
- Prometheus is Debian's `prometheus` package on the same base.

Every container, network and volume the tests create carries a name starting with `atencion-test`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atencion" / "deploy-tests"
TORCH_VERSION = "2.13.0"
# Below Linux's ephemeral range (32768-60999), so no test's free port takes it; fixed so that the build's
# TORCH_INDEX_URL, part of Docker's layer cache key, is the same from run to run.
TORCH_INDEX_PORT = 29417

# The local stand-in for python:3.11-slim. The official image also has Python's C headers; the image installs
# no compiler by default, so they would go unused here (add python3-dev if the image builds C++ one day).
BASE_RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "packages": ["python3", "python3-venv", "ca-certificates"],
    "venv": "/opt/venv",
    "env": {
        "PATH": "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    },
}

PROMETHEUS_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends prometheus && rm -rf /var/lib/apt/lists/* \\
    && mkdir /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
"""


class EngineUnavailable(Exception):
    """No Docker engine runs here and none can be started (the tests skip, saying why)."""


def docker(
    *args: str, timeout: float = 120, check: bool = True, stdin=None, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run the docker client; legacy builder (Docker 20.10's engine, no buildx plugin needed)."""
    result = subprocess.run(
        ["docker", *args],
        env=os.environ | {"DOCKER_BUILDKIT": "0"},
        stdin=stdin,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def engine_answers() -> bool:
    return shutil.which("docker") is not None and docker("info", timeout=30, check=False).returncode == 0


def ensure_engine() -> None:
    """A Docker engine answers: the one running, or `dockerd` started here (niced: builds share the CPUs) with
    no iptables and no default bridge (what this machine allows). A started engine is left running, as a
    daemon is: test runs in parallel (other checkouts) may be using it, and its images are the cache."""
    if engine_answers():
        return
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        raise EngineUnavailable(
            "no Docker engine: docker and dockerd are not installed (apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine runs, and only root can start dockerd")
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / "dockerd.log"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            ["nice", "-n", "10", "dockerd", "--iptables=false", "--bridge=none"],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not engine_answers():
        if process.poll() is not None and not engine_answers():  # another run's dockerd may have won the race
            raise AssertionError(f"dockerd did not start:\n{log.read_text(errors='replace')[-3000:]}")
        assert time.monotonic() < deadline, f"dockerd not answering after 60 s (log: {log})"
        time.sleep(0.5)


def remove_stale_test_resources() -> list[str]:
    """Containers, networks and volumes of test runs that died before cleaning up (their names and compose
    projects end in the pid of the run, `atencion-test-…-PID`): removed, so they stop using the machine."""
    removed = []
    for kind, listing in (
        ("container", ["ps", "--all", "--format", "{{.Names}}"]),
        ("network", ["network", "ls", "--format", "{{.Name}}"]),
        ("volume", ["volume", "ls", "--format", "{{.Name}}"]),
    ):
        for name in docker(*listing).stdout.split():
            owner = re.match(r"atencion-test-(?:run-)?(\d+)(?:_|$)", name)
            if owner and not Path(f"/proc/{owner.group(1)}").exists():
                extra = ["--force", "--volumes"] if kind == "container" else []
                if docker(kind, "rm", *extra, name, check=False).returncode == 0:
                    removed.append(name)
    return removed


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else the default one."""
    sources = Path("/etc/apt/sources.list.d")
    for path in [
        *sorted(sources.glob("*.sources")),
        *sorted(sources.glob("*.list")),
        Path("/etc/apt/sources.list"),
    ]:
        text = path.read_text(errors="replace") if path.is_file() else ""
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M
        ):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def base_image() -> str:
    """The local python:3.11-slim stand-in: the Debian root (cached per recipe) trusting this machine's CAs."""
    rootfs = debian_python_image()
    bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return rootfs
    # Package registries may sit behind a TLS proxy whose CA only this machine's trust store holds.
    key = hashlib.sha256(rootfs.encode() + bundle.read_bytes()).hexdigest()[:12]
    tag = f"atencion-test-base:{key}"
    if not image_exists(tag):
        with tempfile.TemporaryDirectory() as context:
            shutil.copy(bundle, Path(context) / "ca-certificates.crt")
            (Path(context) / "Dockerfile").write_text(
                f"FROM {rootfs}\n"
                "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
                "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt\n"
            )
            docker("build", "--force-rm", f"--tag={tag}", context)
    return tag


def debian_python_image() -> str:
    """Debian with Python 3.11 and a venv on PATH, built once per recipe: debootstrap, venv, `docker import`."""
    key = hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode()).hexdigest()[:12]
    tag = f"atencion-test-rootfs:{key}"
    if image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise AssertionError("debootstrap is not installed (apt-get install debootstrap; .ci/run does)")
    with tempfile.TemporaryDirectory(prefix="atencion-base-", dir="/var/tmp") as work:
        root = Path(work) / "root"
        recipe = BASE_RECIPE
        subprocess.run(
            [
                "nice",
                "-n",
                "10",
                "debootstrap",
                f"--variant={recipe['variant']}",
                f"--include={','.join(recipe['packages'])}",
                recipe["suite"],
                str(root),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        subprocess.run(
            ["chroot", str(root), "python3", "-m", "venv", recipe["venv"]], check=True, timeout=300
        )
        changes = [f"--change=ENV {name}={value}" for name, value in recipe["env"].items()]
        with subprocess.Popen(
            [
                "tar",
                "-C",
                str(root),
                "--exclude=./var/cache/apt/archives/*.deb",
                "--exclude=./var/lib/apt/lists/*",
                "-c",
                ".",
            ],
            stdout=subprocess.PIPE,
        ) as tar:
            docker("import", *changes, '--change=CMD ["python3"]', "-", tag, stdin=tar.stdout, timeout=600)
        assert tar.returncode == 0
    return tag


def torch_wheels() -> Path:
    """torch's CPU wheel and its dependencies, from this machine's pip configuration (downloaded once).

    Asking for `+cpu` exactly means pip can only take the CPU build: a CUDA wheel can never stand in for it.
    """
    folder = CACHE / f"torch-{TORCH_VERSION}-cpu-py311"
    if folder.exists():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix="torch-wheels-", dir=CACHE))  # then moved: parallel runs share it
    result = subprocess.run(
        [
            "pip",
            "download",
            f"torch=={TORCH_VERSION}+cpu",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--dest",
            str(download),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"pip cannot get torch {TORCH_VERSION}+cpu here:\n{result.stderr[-2000:]}"
    try:
        download.rename(folder)
    except OSError:  # another run got there first, with the same wheels
        shutil.rmtree(download)
    return folder


@contextlib.contextmanager
def torch_index(wheels: Path, workdir: Path) -> Iterator[str]:
    """`wheels` served as a PEP 503 simple index (one folder per project) on 127.0.0.1; yields its URL."""
    index = workdir / "simple"
    for wheel in wheels.glob("*.whl"):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        (index / project).mkdir(parents=True, exist_ok=True)
        (index / project / wheel.name).symlink_to(wheel)
    handler = functools.partial(Quiet, directory=str(index))
    try:
        server = SharedPortServer(("127.0.0.1", TORCH_INDEX_PORT), handler)
    except OSError:
        server = SharedPortServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class SharedPortServer(http.server.ThreadingHTTPServer):
    """Parallel test runs (other checkouts) bind the same port: each serves the same wheels, so the kernel may
    hand a connection to either, and the port stays served while any of them runs."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@dataclass(frozen=True)
class Build:
    tag: str
    seconds: float
    size: int
    log: Path


def build_image(tag: str, base: str, index_url: str, log: Path, *extra: str) -> Build:
    """`docker build` of the project's Dockerfile on `base`, torch from `index_url`; the output goes to `log`."""
    start = time.monotonic()
    result = docker(
        "build",
        "--force-rm",  # no intermediate container left behind when a step fails
        "--network=host",
        f"--build-arg=PYTHON_IMAGE={base}",
        f"--build-arg=TORCH_INDEX_URL={index_url}",
        *extra,
        f"--tag={tag}",
        str(ROOT),
        timeout=3600,
        check=False,
    )
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"docker build failed:\n{(result.stdout + result.stderr)[-4000:]}"
    return Build(tag, time.monotonic() - start, image_size(tag), log)


def build_prometheus_image(base: str) -> str:
    """Debian's Prometheus on the local base: stands in for prom/prometheus, which cannot be pulled here."""
    key = hashlib.sha256((base + PROMETHEUS_DOCKERFILE).encode()).hexdigest()[:12]
    tag = f"atencion-test-prometheus:{key}"
    if not image_exists(tag):
        docker(
            "build",
            "--force-rm",
            "--network=host",
            f"--build-arg=BASE={base}",
            f"--tag={tag}",
            "-",
            input=PROMETHEUS_DOCKERFILE,
            timeout=1200,
        )
    return tag
