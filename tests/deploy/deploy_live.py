"""Running things for the deployment tests: the container's command, a real Prometheus, traffic, /metrics.

Every process started here runs in its own process group and is stopped (then the group killed) on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from deploy_helpers import (
    PROMETHEUS_CONFIG,
    dockerfile_env,
    dockerfile_instructions,
    exec_form,
    resolved_compose,
)

PROMETHEUS_BINARY = "/usr/bin/prometheus"


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

    def rules(self) -> list[dict]:
        return [
            r
            for g in json.loads(http_get(f"{self.url}/api/v1/rules")[1])["data"]["groups"]
            for r in g["rules"]
        ]

    def targets(self) -> list[dict]:
        return json.loads(http_get(f"{self.url}/api/v1/targets")[1])["data"]["activeTargets"]


@contextlib.contextmanager
def running_prometheus(target: str, workdir: Path, interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus with our deploy/prometheus/prometheus.yml's `atencion` job pointed at `target` (host:port).

    Docker's DNS discovery cannot resolve here, so it becomes a static target; everything else in the job
    (metrics path, relabelling) and the alerting rules are the shipped ones. Intervals are shortened.
    """
    shipped = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(job for job in shipped["scrape_configs"] if job["job_name"] == "atencion")
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(PROMETHEUS_CONFIG.parent / name) for name in shipped["rule_files"]],
        "scrape_configs": [job],
    }
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


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def container_environment(tiny_checkpoints: Path, port: int, hf_home: Path) -> dict[str, str]:
    """The environment the container would get: the image's ENV, then compose's resolved `environment`.

    Compose is resolved with the model variables pointing at the tiny test checkpoints (as a user's `.env`
    would). Three values differ from the container, because this is not one: the service listens on
    127.0.0.1 (tests talk to loopback only) on a free port, and the Hub cache is a temporary directory.
    """
    models = {
        "ATENCION_ENCODERS": f"{tiny_checkpoints / 'encoder-dense'},{tiny_checkpoints / 'encoder-sparse'}",
        "ATENCION_DECODERS": f"{tiny_checkpoints / 'decoder-dense'},{tiny_checkpoints / 'decoder-sparse'}",
    }
    compose_env = resolved_compose(models)["services"]["atencion"]["environment"]
    env = dockerfile_env(dockerfile_instructions()) | {k: str(v) for k, v in compose_env.items()}
    env |= {"ATENCION_HOST": "127.0.0.1", "ATENCION_PORT": str(port), "HF_HOME": str(hf_home)}
    env |= {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH")}
    return env


def container_command() -> list[str]:
    """ENTRYPOINT + CMD of the image, with the program resolved in this interpreter's bin directory (where
    pip put the `atencion` script here, as it does in /usr/local/bin in the image)."""
    instructions = dockerfile_instructions()
    entrypoint = [exec_form(a) for k, a in instructions if k == "ENTRYPOINT"]
    command = (entrypoint[-1] if entrypoint else []) + exec_form(
        [a for k, a in instructions if k == "CMD"][-1]
    )
    local = Path(sys.executable).parent / command[0]
    return [str(local) if local.exists() else command[0], *command[1:]]


def healthcheck_probe() -> list[str]:
    """The image's HEALTHCHECK command (exec form), with `python` as this interpreter."""
    healthcheck = next(a for k, a in dockerfile_instructions() if k == "HEALTHCHECK")
    probe = exec_form(healthcheck.split(" CMD ", 1)[1])
    return [sys.executable if probe[0] == "python" else probe[0], *probe[1:]]


def post_json(url: str, body: dict, timeout: float = 60.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def send_traffic(url: str) -> dict[str, int]:
    """A few requests to every endpoint (one of them bad), concurrently where batching can group them.
    Returns the statuses seen, counted as 'PATH STATUS'."""
    requests = [("/fill-mask", {"inputs": f"El gato [MASK] en la casa {i}."}) for i in range(6)]
    requests += [("/generate", {"inputs": "El gato", "parameters": {"max_new_tokens": 3}})] * 2
    requests += [("/generate", {"inputs": "La niña", "parameters": {"max_new_tokens": 2, "stop": ["a"]}})]
    requests += [("/generate_stream", {"inputs": "El sol", "parameters": {"max_new_tokens": 3}})]
    requests += [("/attention", {"inputs": "El gato duerme.", "parameters": {"gradient": False}})]
    requests += [("/fill-mask", {"inputs": "no mask token here"})]  # 4xx: counted as an error
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda r: post_json(url + r[0], r[1])[0], requests))
    seen: dict[str, int] = {}
    for (path, _), status in zip(requests, statuses, strict=True):
        seen[f"{path} {status}"] = seen.get(f"{path} {status}", 0) + 1
    return seen


def exported_samples(url: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics parsed with prometheus_client's parser: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(url + "/metrics")
    assert status == 200, body[:500]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
