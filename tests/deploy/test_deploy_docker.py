"""The image built and run by a real Docker engine, and `docker-compose up` with Prometheus scraping it.

The build uses a local stand-in for python:3.11-slim and the local torch CPU wheel (docker_engine.py says why
and how). Skipped only where no Docker engine runs and none can be started. Traffic goes to 127.0.0.1 only:
to ports published there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_helpers import (
    COMPOSE,
    DASHBOARD,
    PROMETHEUS_SYNTHETIC,
    dashboard_expressions,
    promql_metric_names,
)
from deploy_live import exported_samples, free_port, http_get, post_json, send_traffic, wait_for
from docker_engine import (
    ROOT,
    Build,
    EngineUnavailable,
    base_image,
    build_image,
    build_prometheus_image,
    docker,
    ensure_engine,
    remove_stale_test_resources,
    torch_index,
    torch_wheels,
)

# one tag per checkout: test runs of other checkouts may build at the same time
IMAGE = "atencion-test:" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
OVERRIDE = Path(__file__).with_name("docker-compose.test.yml")
# The image's HEALTHCHECK command, probed more often and given more time than the image's defaults (15 s,
# 5 s): a shared test machine may be so loaded that starting Python in the probe takes seconds.
HEALTH_TIMING = ("--health-interval=5s", "--health-timeout=60s", "--health-start-period=600s")
IMAGE_UID = int(re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))


@pytest.fixture(scope="module")
def engine() -> None:
    try:
        ensure_engine()
    except EngineUnavailable as why:
        pytest.skip(str(why))
    remove_stale_test_resources()


@pytest.fixture(scope="module")
def image(engine, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The project's image, built once per run (Docker's layer cache keeps unchanged layers between runs)."""
    workdir = tmp_path_factory.mktemp("build")
    previous = docker("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    start = time.monotonic()
    base = base_image()
    print(f"\ndeploy: base image {base} ready in {time.monotonic() - start:.0f} s")
    with torch_index(torch_wheels(), workdir) as index_url:
        build = build_image(IMAGE, base, index_url, workdir / "build.log")
    current = docker("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if previous and previous != current:
        docker("rmi", previous, check=False)  # the last run's image, now untagged
    print(f"\ndeploy: image built in {build.seconds:.0f} s, {build.size / 1e6:.0f} MB")
    return build


@pytest.fixture(scope="module")
def network(engine):
    name = f"atencion-test-{os.getpid()}"
    docker("network", "create", name)
    yield name
    docker("network", "rm", name, check=False)


def state(container: str) -> str:
    """'running healthy', 'running starting', 'exited', …"""
    fmt = "{{.State.Status}}{{if .State.Health}} {{.State.Health.Status}}{{end}}"
    return docker("inspect", "--format", fmt, container, check=False).stdout.strip() or "missing"


def wait_healthy(container: str, timeout: float = 300) -> float:
    """Seconds until Docker reports the HEALTHCHECK healthy; fails at once if it turns unhealthy or exits."""
    start = time.monotonic()

    def settled() -> str:
        status = state(container)
        return "" if status in ("running starting", "created") else status

    status = wait_for(settled, timeout, f"{container} never healthy", 0.5)
    logs = docker("logs", "--tail", "40", container, check=False)
    assert status == "running healthy", f"{container}: {status}\n{logs.stdout}{logs.stderr}"
    return time.monotonic() - start


def published(container: str, port: int = 8000) -> str:
    """The URL of the container's `port` on the host (published on 127.0.0.1)."""
    binding = docker("port", container, f"{port}/tcp").stdout.split()[0]
    assert binding.startswith("127.0.0.1:"), binding
    return f"http://{binding}"


def processes(container: str) -> list[tuple[int, int, str]]:
    """(uid, host pid, command) of every process in the container, as the engine sees them."""
    rows = docker("top", container, "-eo", "uid,pid,comm").stdout.splitlines()[1:]
    return [(int(uid), int(pid), comm) for uid, pid, comm in (row.split(None, 2) for row in rows)]


@dataclass
class Container:
    name: str
    url: str
    seconds_to_healthy: float


@pytest.fixture(scope="module")
def container(image: Build, network: str):
    """`docker run --init` of the image (compose's `init: true`); batches wait 2 s, so requests stay in flight."""
    name = f"atencion-test-run-{os.getpid()}"
    start = time.monotonic()
    docker(
        "run",
        "--detach",
        "--init",
        f"--name={name}",
        f"--network={network}",
        "--publish=127.0.0.1::8000",
        "--env=ATENCION_BATCH_TIMEOUT=2",
        *HEALTH_TIMING,
        image.tag,
    )
    try:
        url = published(name)
        wait_for(
            lambda: http_get(url + "/health", timeout=2)[0] == 200 or not state(name).startswith("running"),
            300,
            "/health never answered 200",
        )
        answering = time.monotonic() - start
        wait_healthy(name)
        started = Container(name, url, time.monotonic() - start)
        print(
            f"\ndeploy: docker run to /health 200 in {answering:.1f} s, "
            f"to healthy (HEALTHCHECK every 5 s) in {started.seconds_to_healthy:.1f} s"
        )
        yield started
    finally:
        docker("rm", "--force", "--volumes", name, check=False)


def test_the_build_context_holds_only_what_the_image_needs(image: Build):
    """.dockerignore: the context the engine received is the packages, the checkpoints and two files."""
    log = image.log.read_text()
    sent = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", log)
    size = float(sent.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[sent.group(2)]
    needed = sum(
        path.stat().st_size
        for top in ("atencion", "modeling", "training", "service", "checkpoints")
        for path in (ROOT / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    needed += sum((ROOT / name).stat().st_size for name in ("pyproject.toml", "README.md", "Dockerfile"))
    assert needed * 0.95 < size < needed * 1.02 + 100_000, (size, needed)


def test_the_healthcheck_turns_healthy_and_the_shipped_models_answer(container: Container):
    from modeling.checkpoint import load_checkpoint
    from modeling.generation import Sampling, generate_text

    status, body = post_json(
        container.url + "/fill-mask", {"inputs": "El gato [MASK] en la casa.", "parameters": {"top_k": 1}}
    )
    assert status == 200, body
    encoder = load_checkpoint(ROOT / "checkpoints" / "encoder-dense")  # the default encoder
    ids = encoder.tokenizer.encode("El gato [MASK] en la casa.").ids
    import torch

    with torch.inference_mode():
        logits = encoder.model(torch.tensor([ids])).logits[0, ids.index(encoder.config.mask_token_id)]
    assert json.loads(body)[0]["token"] == int(logits.argmax())

    prompt = "Había una vez"
    status, body = post_json(
        container.url + "/generate", {"inputs": prompt, "parameters": {"max_new_tokens": 12}}
    )
    assert status == 200, body
    decoder = load_checkpoint(ROOT / "checkpoints" / "decoder-dense")  # the default decoder
    expected = generate_text(
        decoder.model, decoder.tokenizer, decoder.tokenizer.encode(prompt).ids, Sampling(max_new_tokens=12)
    )
    assert json.loads(body)["generated_text"] == expected


def test_every_process_runs_as_the_non_root_user(container: Container):
    assert (
        json.loads(docker("inspect", "--format", "{{json .Config.User}}", container.name).stdout)
        == "atencion"
    )
    running = processes(container.name)
    assert len(running) >= 3, running  # the init, the server, its workers
    assert {uid for uid, _, _ in running} == {IMAGE_UID}, running
    # it can write the Hub cache volume, and nothing of the application
    probe = "import pathlib; pathlib.Path('/var/cache/huggingface/probe').touch(); open('/app/checkpoints/x', 'w')"
    result = docker("exec", container.name, "python", "-c", probe, check=False)
    assert (
        result.returncode == 1
        and "PermissionError" in result.stderr
        and "/app/checkpoints/x" in result.stderr
    )


def test_the_image_holds_the_checkpoints_and_the_installed_package_only(container: Container):
    listing = (
        "import os, pathlib, service; "
        "print(json.dumps([sorted(os.listdir('/app')), os.path.exists('/tmp/src'), "
        "sorted(str(p.relative_to('/app')) for p in pathlib.Path('/app/checkpoints').rglob('*') if p.is_file()), "
        "sorted(p.name for p in (pathlib.Path(service.__file__).parent / 'static').iterdir())]))"
    )
    result = docker("exec", container.name, "python", "-c", "import json; " + listing)
    app, sources_left, checkpoints, static = json.loads(result.stdout)
    assert app == ["checkpoints"] and not sources_left
    local = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "checkpoints").rglob("*") if p.is_file())
    assert checkpoints == local
    assert static == sorted(p.name for p in (ROOT / "service" / "static").iterdir() if p.is_file())


def stream_events(url: str, body: dict, first: threading.Event) -> list[dict]:
    """POST /generate_stream; `first` is set when the first token has arrived."""
    request = urllib.request.Request(
        url + "/generate_stream", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    events = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            if line.startswith(b"data:"):
                events.append(json.loads(line[len(b"data:") :]))
                first.set()
    return events


def test_docker_stop_lets_in_flight_requests_finish(container: Container):
    """Last of the `docker run` tests: it stops the container, while a generation streams and a fill-mask
    request waits in its batch window (2 s); both are answered in full, and the container exits 0."""
    pids = [pid for _, pid, _ in processes(container.name)]
    answers: dict = {}
    first_token = threading.Event()

    def fill_mask() -> None:
        answers["fill-mask"] = post_json(container.url + "/fill-mask", {"inputs": "El [MASK] duerme."}, 120)
        answers["fill-mask done"] = time.monotonic()

    def generate() -> None:
        body = {"inputs": "El tren", "parameters": {"max_new_tokens": 256}}
        answers["stream"] = stream_events(container.url, body, first_token)

    threads = [threading.Thread(target=generate), threading.Thread(target=fill_mask)]
    threads[0].start()
    assert first_token.wait(60), "the generation never started"
    threads[1].start()
    time.sleep(0.5)  # the fill-mask request now waits in its batch window
    stop_sent = time.monotonic()
    docker("stop", "--time=60", container.name, timeout=90)
    stopped_after = time.monotonic() - stop_sent
    for thread in threads:
        thread.join(60)
    status, body = answers["fill-mask"]
    assert status == 200 and json.loads(body)[0]["token_str"], body
    assert answers["fill-mask done"] > stop_sent, "answered before the stop: nothing was in flight"
    events = answers["stream"]
    assert events[-1]["generated_text"] is not None, events[-1]  # the final event: not cut off
    assert events[-1]["details"]["generated_tokens"] == len(events)
    exit_code, oom = docker(
        "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", container.name
    ).stdout.split()
    assert (exit_code, oom) == ("0", "false") and stopped_after < 60, (exit_code, oom, stopped_after)
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not left, f"processes of the container still running: {left}"


# docker-compose ------------------------------------------------------------------------------------------------


def free_port_range(count: int) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (below the ephemeral range; from a random
    start, so that parallel runs do not race for the same ones)."""
    start = 29420 + count * random.randrange(200)
    for first in [*range(start, 32000 - count, count), *range(29420, start, count)]:
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise AssertionError("no free port range")


@dataclass
class Compose:
    project: str
    env: dict[str, str]
    prometheus: str
    service_ports: range
    env_file: str  # an empty one: no developer's .env applies

    def __call__(self, *args: str, timeout: float = 300) -> str:
        import subprocess

        command = [
            "docker-compose",
            "--project-name",
            self.project,
            "--project-directory",
            str(ROOT),
            "--env-file",
            self.env_file,
            "-f",
            str(COMPOSE),
            "-f",
            str(OVERRIDE),
            *args,
        ]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stderr[-3000:]}"
        return result.stdout

    def containers(self, service: str) -> list[str]:
        return self("ps", "--quiet", service).split()

    def query(self, promql: str) -> list[dict]:
        status, body = http_get(
            f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        )
        assert status == 200, body
        return json.loads(body)["data"]["result"]

    def targets(self) -> list[dict]:
        status, body = http_get(f"{self.prometheus}/api/v1/targets?state=active")
        return [t for t in json.loads(body)["data"]["activeTargets"] if t["labels"]["job"] == "atencion"]


@pytest.fixture(scope="module")
def compose(image: Build, engine, tmp_path_factory: pytest.TempPathFactory):
    start = time.monotonic()
    prometheus_port, first = free_port(), free_port_range(10)
    project = f"atencion-test-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")} | {
        "ATENCION_IMAGE": image.tag,
        "ATENCION_PUBLISHED_PORT": f"127.0.0.1:{first}-{first + 9}",
        "PROMETHEUS_PUBLISHED_PORT": str(prometheus_port),
        "ATENCION_TEST_PROMETHEUS_IMAGE": build_prometheus_image(base_image()),
    }
    print(f"\ndeploy: Prometheus image ready in {time.monotonic() - start:.0f} s")
    empty = tmp_path_factory.mktemp("compose") / "empty.env"
    empty.write_text("")
    run = Compose(project, env, f"http://127.0.0.1:{prometheus_port}", range(first, first + 10), str(empty))
    try:
        run("up", "--detach", "--no-build", "atencion", "prometheus")
        yield run
    finally:
        run("down", "--volumes", "--remove-orphans", "--timeout", "30")


def ip_of(container: str) -> str:
    networks = json.loads(
        docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", container).stdout
    )
    return next(iter(networks.values()))["IPAddress"]


def scraped_equals_exported(compose: Compose, replicas: list[str]) -> None:
    """After traffic stops, Prometheus' value of each replica's counter equals that replica's /metrics."""
    key = ("atencion_requests_total", (("path", "/fill-mask"), ("status", "200")))
    for replica in replicas:
        exported = exported_samples(published(replica))[key]
        instance = f"{ip_of(replica)}:8000"

        def caught_up(instance=instance, exported=exported) -> bool:
            result = compose.query(
                f'atencion_requests_total{{path="/fill-mask", status="200", instance="{instance}"}}'
            )
            return bool(result) and float(result[0]["value"][1]) == exported

        wait_for(caught_up, 120, f"Prometheus never caught up with {replica}'s /metrics ({exported})")


def test_compose_up_and_prometheus_scrapes_the_service(compose: Compose):
    (replica,) = compose.containers("atencion")
    wait_healthy(replica)
    assert int(published(replica).rsplit(":", 1)[1]) in compose.service_ports
    targets = wait_for(
        lambda: [t for t in compose.targets() if t["health"] == "up"], 120, "target never up", 1
    )
    assert [t["labels"]["instance"] for t in targets] == [f"{ip_of(replica)}:8000"]
    assert targets[0]["labels"]["service"] == "atencion"
    for i in range(3):
        assert post_json(published(replica) + "/fill-mask", {"inputs": f"El [MASK] duerme {i}."})[0] == 200
    scraped_equals_exported(compose, [replica])
    exported = {
        dict(labels)["model"]
        for (name, labels) in exported_samples(published(replica))
        if name == "atencion_model_info"
    }
    scraped = {m["metric"]["model"] for m in compose.query("atencion_model_info")}
    assert scraped == exported == {"encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse"}


def test_scaled_replicas_are_each_scraped_and_export_every_dashboard_metric(compose: Compose):
    compose("up", "--detach", "--no-build", "--scale", "atencion=2", "atencion", "prometheus")
    replicas = compose.containers("atencion")
    assert len(replicas) == 2
    for replica in replicas:
        wait_healthy(replica)
    ports = {published(replica) for replica in replicas}
    assert len(ports) == 2 and all(int(p.rsplit(":", 1)[1]) in compose.service_ports for p in ports)
    instances = {f"{ip_of(replica)}:8000" for replica in replicas}
    wait_for(
        lambda: {t["labels"]["instance"] for t in compose.targets() if t["health"] == "up"} == instances,
        120,
        f"Prometheus does not scrape both replicas {instances}",
        1,
    )
    # traffic to every route of the second replica only: the two series differ, each matches its own replica
    seen = send_traffic(published(replicas[1]))
    assert seen.get("/fill-mask 200") == 6 and seen.get("/generate 200") == 3, seen
    scraped_equals_exported(compose, replicas)
    # Grafana cannot run here: every metric its dashboard queries is scraped from the live replicas
    queried = set().union(
        *(promql_metric_names(e) for e in dashboard_expressions(json.loads(DASHBOARD.read_text())))
    )
    missing = [name for name in sorted(queried - PROMETHEUS_SYNTHETIC) if not compose.query(f"count({name})")]
    assert not missing, f"the dashboard queries metrics Prometheus does not have: {missing}"


def test_compose_down_leaves_nothing(compose: Compose):
    compose("down", "--volumes", "--remove-orphans", "--timeout", "30")
    label = f"label=com.docker.compose.project={compose.project}"
    assert docker("ps", "--all", "--quiet", "--filter", label).stdout.split() == []
    assert docker("network", "ls", "--quiet", "--filter", label).stdout.split() == []
    assert docker("volume", "ls", "--quiet", "--filter", label).stdout.split() == []
