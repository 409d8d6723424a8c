"""The container's command, run directly here, serves; Prometheus scrapes it; the dashboard's metrics exist.

No Docker engine runs on these machines, so the image's CMD is run as a subprocess with the environment the
container would get (the image's ENV, then compose's resolved `environment`, models pointed at the tiny test
checkpoints), in its own process group; its HEALTHCHECK command is run as is. Prometheus is the real one
(Debian's /usr/bin/prometheus) with the shipped scrape job, on a free 127.0.0.1 port.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from deploy_helpers import (
    PROMETHEUS_SYNTHETIC,
    alert_expressions,
    dashboard_expressions,
    grafana_to_promql,
    load_dashboard,
    promql_metric_names,
)
from deploy_live import (
    container_command,
    container_environment,
    exported_samples,
    free_port,
    group_members,
    healthcheck_probe,
    http_get,
    running_prometheus,
    send_traffic,
    wait_for,
)


class Container:
    """The service started the way the image starts it."""

    def __init__(self, process: subprocess.Popen, env: dict[str, str], log: Path) -> None:
        self.process, self.env, self.log = process, env, log
        self.url = f"http://127.0.0.1:{env['ATENCION_PORT']}"

    def probe(self) -> subprocess.CompletedProcess:
        """The image's HEALTHCHECK command, in the container's environment (Docker runs it there)."""
        return subprocess.run(healthcheck_probe(), env=self.env, capture_output=True, text=True, timeout=10)


@pytest.fixture(scope="module")
def container(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("container")
    env = container_environment(tiny_checkpoints, free_port(), workdir / "hf-home")
    log = workdir / "service.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            container_command(),
            env=env,
            cwd=workdir,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Container(process, env, log)
    try:
        wait_for(
            lambda: process.poll() is not None or http_get(started.url + "/health", timeout=2)[0] == 200,
            120,
            "/health never answered 200",
            every=0.25,
        )
        assert process.poll() is None, log.read_text(errors="replace")[-4000:]
        yield started
    finally:
        # `docker stop`: SIGTERM to the main process (tini forwards it), SIGKILL after the grace period.
        was_running = process.poll() is None
        if was_running:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(60)
        deadline = time.monotonic() + 10
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftovers = group_members(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # only our own group, started with start_new_session
        if process.poll() is None:
            process.kill()
            process.wait(10)
        assert not leftovers, f"processes left after SIGTERM: {leftovers}"
        assert not was_running or process.returncode == 0, f"exit status {process.returncode} after SIGTERM"


def test_container_command_starts_the_service_with_the_compose_settings(container):
    status, body = http_get(container.url + "/health")
    assert status == 200, body
    status, body = http_get(container.url + "/info")
    info = json.loads(body)
    assert [m["name"] for m in info["models"]] == [
        "encoder-dense",
        "encoder-sparse",
        "decoder-dense",
        "decoder-sparse",
    ]
    # the compose defaults reached the service
    assert info["batching"]["max_batch_size"] == int(container.env["ATENCION_MAX_BATCH_SIZE"])
    assert info["limits"]["max_new_tokens"] == int(container.env["ATENCION_MAX_NEW_TOKENS"])
    assert info["limits"]["max_payload_bytes"] == int(container.env["ATENCION_MAX_PAYLOAD_BYTES"])
    assert info["workers_per_device"] == int(container.env["ATENCION_WORKERS_PER_DEVICE"])


def test_healthcheck_probe_passes_against_the_service_and_fails_without_one(container):
    assert container.probe().returncode == 0
    nothing = container.env | {"ATENCION_PORT": str(free_port())}
    failed = subprocess.run(healthcheck_probe(), env=nothing, capture_output=True, text=True, timeout=10)
    assert failed.returncode == 1 and "urlopen error" in failed.stderr


def test_healthcheck_probe_fails_while_the_service_is_loading():
    """/health answers 503 until every worker has loaded: the probe must report unhealthy, not crash or pass."""

    class Loading(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Loading) as stub:
        thread = threading.Thread(target=stub.serve_forever, daemon=True)
        thread.start()
        try:
            env = {"PATH": os.environ["PATH"], "ATENCION_PORT": str(stub.server_address[1])}
            result = subprocess.run(healthcheck_probe(), env=env, capture_output=True, text=True, timeout=10)
        finally:
            stub.shutdown()
            thread.join(5)
    assert result.returncode == 1 and "HTTP Error 503" in result.stderr


def test_every_metric_the_dashboard_queries_is_exported(container):
    seen = send_traffic(container.url)
    assert seen.get("/fill-mask 200") == 6 and seen.get("/generate 200") == 3, seen
    exported = {name for name, _ in exported_samples(container.url)}
    queried = set().union(*(promql_metric_names(e) for e in dashboard_expressions(load_dashboard())))
    missing = queried - exported - PROMETHEUS_SYNTHETIC
    assert not missing, f"the dashboard queries metrics the service does not export: {sorted(missing)}"


def test_prometheus_scrapes_the_service_and_answers_every_dashboard_query(container, tmp_path):
    target = container.url.removeprefix("http://")
    with running_prometheus(target, tmp_path) as prometheus:
        wait_for(lambda: any(t["health"] == "up" for t in prometheus.targets()), 20, "target never scraped")
        seen = send_traffic(container.url)  # traffic between scrapes, so rates are above zero
        time.sleep(1.0)
        seen2 = send_traffic(container.url)
        assert seen == seen2, (seen, seen2)
        exported = exported_samples(container.url)  # no more traffic from here on
        fill_mask_ok = exported[("atencion_requests_total", (("path", "/fill-mask"), ("status", "200")))]

        def scraped_latest() -> list[dict]:
            result = prometheus.query('atencion_requests_total{path="/fill-mask", status="200"}')
            return result if result and float(result[0]["value"][1]) == fill_mask_ok else []

        result = wait_for(scraped_latest, 15, "Prometheus never caught up with /metrics")
        assert result[0]["metric"]["job"] == "atencion" and result[0]["metric"]["instance"] == target

        models = prometheus.query("atencion_model_info")
        assert sorted(m["metric"]["model"] for m in models) == [
            "decoder-dense",
            "decoder-sparse",
            "encoder-dense",
            "encoder-sparse",
        ]
        errors = prometheus.query('sum by (path) (atencion_requests_total{status=~"4.."})')
        assert {e["metric"]["path"]: float(e["value"][1]) for e in errors}.get("/fill-mask", 0) >= 2

        empty = []
        for expression in dashboard_expressions(load_dashboard()):
            if not prometheus.query(grafana_to_promql(expression)):
                empty.append(expression)
        assert not empty, f"dashboard queries with no data after traffic: {empty}"

        # the shipped alerting rules loaded and evaluate without error against the live series; none fires
        rules = wait_for(
            lambda: [r for r in prometheus.rules() if r.get("lastEvaluation", "").startswith("20")],
            10,
            "rules never evaluated",
        )
        assert len(rules) == len(alert_expressions())
        assert all(r["health"] == "ok" and r["state"] == "inactive" for r in rules), rules
