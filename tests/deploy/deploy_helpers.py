"""Helpers for the deployment tests (a plain module, not a conftest, so `from conftest import` elsewhere
keeps meaning tests/conftest.py): read the Dockerfile, the compose file and the dashboard's PromQL.

No Docker engine runs here, so the tests read these files the way Docker would and run their commands directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "atencion.json"
ENV_EXAMPLE = ROOT / "deploy" / "atencion.env.example"
PROMETHEUS_BINARY = "/usr/bin/prometheus"

# Series Prometheus makes itself for every target; a dashboard may query them without the service exporting them.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# The variables the service reads (issue 5), all of which compose must pass to the container.
SERVICE_VARIABLES = (
    "ATENCION_ENCODERS",
    "ATENCION_DECODERS",
    "ATENCION_HOST",
    "ATENCION_PORT",
    "ATENCION_ACCELERATOR",
    "ATENCION_WORKERS_PER_DEVICE",
    "ATENCION_MAX_BATCH_SIZE",
    "ATENCION_BATCH_TIMEOUT",
    "ATENCION_API_KEY",
    "ATENCION_MAX_INPUT_TOKENS",
    "ATENCION_MAX_NEW_TOKENS",
    "ATENCION_MAX_PAYLOAD_BYTES",
    "HF_TOKEN",
    "HF_HOME",
)


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    """A CMD/ENTRYPOINT/HEALTHCHECK CMD argument list; exec (JSON) form only, as PID 1 must get SIGTERM."""
    assert arguments.startswith("["), f"not in exec form: {arguments!r}"
    return json.loads(arguments)


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The ENV the final image sets (KEY=VALUE form)."""
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {item!r} is not KEY=VALUE"
                env[key] = value
    return env


def compose_config(
    env: dict[str, str] | None = None, profiles: tuple[str, ...] = (), check: bool = True
) -> subprocess.CompletedProcess:
    """`docker-compose config` on our compose file with only `env` set (no `.env`, no inherited ATENCION_*)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    empty = Path(tempfile.gettempdir()) / "atencion-deploy-tests-empty.env"
    empty.write_text("")
    command = [
        "docker-compose",
        "--project-directory",
        str(ROOT),
        "--env-file",
        str(empty),
        "-f",
        str(COMPOSE),
    ]
    for profile in profiles:
        command += ["--profile", profile]
    return subprocess.run(
        [*command, "config"], env=base | (env or {}), capture_output=True, text=True, timeout=60, check=check
    )


def resolved_compose(env: dict[str, str] | None = None, profiles: tuple[str, ...] = ()) -> dict:
    return yaml.safe_load(compose_config(env, profiles).stdout)


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression the dashboard sends: panel targets and template-variable queries."""
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        match = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*", query)
        expressions.append(match.group(1) if match else query)
    return expressions


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or"}
_KEYWORDS |= {"unless", "inf", "nan", "atan2"}


def promql_metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels, keywords or Grafana variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # string literals (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors, $__rate_interval
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.:$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        followed_by_call = text[match.end() :].lstrip().startswith("(")
        if not followed_by_call and match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def grafana_to_promql(expression: str, rate_interval: str = "30s") -> str:
    """Replace the Grafana variables the dashboard uses with what Grafana would send for "All"."""
    return (
        expression.replace("$__rate_interval", rate_interval)
        .replace('"$path"', '".*"')
        .replace('"$instance"', '".*"')
    )


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""  # not listening (yet)


def stop_process_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the group `process` leads, then SIGKILL whatever is left after `grace` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, even after the leader exited
    process.wait(5)


class Prometheus:
    """A real Prometheus (the Debian package) on a free 127.0.0.1 port, queried through its HTTP API."""

    def __init__(self, url: str, process: subprocess.Popen) -> None:
        self.url, self.process = url, process

    def query(self, promql: str) -> list[dict]:
        """GET /api/v1/query: the instant vector's samples (raises on an error status)."""
        status, body = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]

    def targets(self) -> list[dict]:
        return json.loads(http_get(f"{self.url}/api/v1/targets")[1])["data"]["activeTargets"]


@contextlib.contextmanager
def running_prometheus(target: str, workdir: Path, interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus with our deploy/prometheus/prometheus.yml's `atencion` job pointed at `target` (host:port).

    Docker's DNS discovery cannot resolve here, so it becomes a static target; everything else in the job
    (metrics path, relabelling) is the shipped configuration. The scrape interval is shortened for the test.
    """
    shipped = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(job for job in shipped["scrape_configs"] if job["job_name"] == "atencion")
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    config = {"global": {"scrape_interval": interval, "scrape_timeout": interval}, "scrape_configs": [job]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            PROMETHEUS_BINARY,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: process.poll() is not None or http_get(f"{url}/-/ready", timeout=1)[0] == 200,
            30,
            "Prometheus not ready after 30 s",
        )
        assert process.poll() is None, (workdir / "prometheus.log").read_text()
        yield Prometheus(url, process)
    finally:
        stop_process_group(process)
        log.close()


def wait_for(condition, timeout: float, message: str, every: float = 0.25):
    """Poll `condition()` until it returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(every)
