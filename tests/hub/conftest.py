"""Fixtures for the Hub tests: a Hub-protocol server on 127.0.0.1, small checkpoints, the CLI in a subprocess.

The real, unmodified huggingface_hub client runs inside ``python -m atencion push|pull`` subprocesses whose
environment points it at the test server (``HF_ENDPOINT``), at a fresh cache (``HF_HOME``), without Xet or
telemetry: those settings are read once at import, which is why the client never runs in the test process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hub_server import HubHTTPServer
from hub_support import TOKEN, Result, write_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubHTTPServer]:
    """A Hub-protocol server on a free 127.0.0.1 port, accepting writes only with ``TOKEN``."""
    server = HubHTTPServer(tmp_path / "hub-data", token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def unreachable_endpoint() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf-home"


@pytest.fixture
def atencion(hub: HubHTTPServer, hf_home: Path) -> Callable[..., Result]:
    """Run ``python -m atencion ARGS`` against ``hub`` with a fresh cache; ``env`` entries override (None removes)."""

    def run(*args: str, env: dict[str, str | None] | None = None, timeout: float = 60) -> Result:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        environment.update(
            {
                "HF_ENDPOINT": hub.url,
                "HF_HOME": str(hf_home),
                "HF_TOKEN": TOKEN,
                "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "atencion", *args],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr, time.monotonic() - start)

    return run


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "ckpt")
