"""The deployment files are valid and agree with each other (no Docker engine needed).

`docker-compose config` (Debian's docker-compose 1.29) validates the compose file against its schema and
resolves the `${VAR:-default}` settings; `promtool check config` validates Prometheus' configuration.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess

import yaml
from deploy_helpers import (
    COMPOSE,
    DASHBOARD,
    DOCKERFILE,
    ENV_EXAMPLE,
    PROMETHEUS_CONFIG,
    ROOT,
    SERVICE_VARIABLES,
    alert_expressions,
    dashboard_expressions,
    dockerfile_env,
    dockerfile_instructions,
    exec_form,
    load_dashboard,
    promql_metric_names,
    resolved_compose,
)


def test_compose_validates_with_and_without_gpu_profile():
    default = resolved_compose()
    assert {"atencion", "prometheus", "grafana"} <= set(default["services"])
    gpu = resolved_compose(profiles=("gpu",))["services"]["atencion-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["ATENCION_ACCELERATOR"] == "cuda"
    assert "whl/cu" in gpu["build"]["args"]["TORCH_INDEX_URL"]


def test_compose_rejects_a_broken_file(tmp_path):
    """The validation above can fail: a misspelled service key is refused by the schema."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periode:", 1))
    result = subprocess.run(
        ["docker-compose", "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "stop_grace_periode" in result.stderr


def test_service_gets_every_setting_with_defaults_and_drains_on_sigterm():
    service = resolved_compose()["services"]["atencion"]
    env = service["environment"]
    missing = [name for name in SERVICE_VARIABLES if name not in env]
    assert not missing, f"compose does not pass {missing}"
    assert env["ATENCION_MAX_BATCH_SIZE"] == "16" and env["ATENCION_ACCELERATOR"] == "auto"
    assert env["ATENCION_API_KEY"] == "" and env["HF_TOKEN"] == ""
    assert service["stop_signal"] == "SIGTERM" and service["init"] is True
    grace = re.fullmatch(r"(\d+)([ms])", service["stop_grace_period"])
    assert grace and int(grace.group(1)) * (60 if grace.group(2) == "m" else 1) >= 60
    assert f"hf-cache:{env['HF_HOME']}:rw" in service["volumes"]
    assert service["ports"] == [{"published": 8000, "target": 8000}]


def test_compose_settings_follow_the_environment():
    overrides = {
        "ATENCION_MAX_BATCH_SIZE": "32",
        "ATENCION_ENCODERS": "org/enc@v1",
        "ATENCION_PUBLISHED_PORT": "9000",
    }
    service = resolved_compose(overrides)["services"]["atencion"]
    assert service["environment"]["ATENCION_MAX_BATCH_SIZE"] == "32"
    assert service["environment"]["ATENCION_ENCODERS"] == "org/enc@v1"
    assert service["ports"] == [{"published": 9000, "target": 8000}]


def test_env_example_documents_every_compose_variable_with_its_default():
    compose_defaults = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", COMPOSE.read_text()))
    example = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    assert example == compose_defaults
    # and using the example as .env changes nothing: its values are the defaults
    assert resolved_compose(example) == resolved_compose()


def test_compose_mounts_files_that_exist():
    config = yaml.safe_load(COMPOSE.read_text())
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_dockerfile_runs_the_service_as_non_root_with_healthcheck_and_stopsignal():
    instructions = dockerfile_instructions()
    args = dict(arguments.split("=", 1) for keyword, arguments in instructions if keyword == "ARG")
    assert [arguments for keyword, arguments in instructions if keyword == "FROM"] == ["${PYTHON_IMAGE}"]
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"  # users get the official image; the tests a local one
    user = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    cmd = exec_form(next(arguments for keyword, arguments in instructions if keyword == "CMD"))
    assert cmd == ["atencion", "serve"]
    healthcheck = next(arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK")
    probe = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"] and "/health" in probe[2]
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu") and args["TORCH_VERSION"] == "2.13.0"
    assert args["COMPILER_PACKAGES"] == ""  # a compiler for torch.compile is opt-in (+374 MB)


def test_dockerfile_ships_checkpoints_and_keeps_the_hub_cache_on_a_volume():
    instructions = dockerfile_instructions()
    copies = [arguments for keyword, arguments in instructions if keyword == "COPY"]
    assert "checkpoints/ checkpoints/" in copies
    env = dockerfile_env(instructions)
    assert json.loads(next(a for k, a in instructions if k == "VOLUME")) == [env["HF_HOME"]]
    assert env["ATENCION_HOST"] == "0.0.0.0"
    for reference in (env["ATENCION_ENCODERS"] + "," + env["ATENCION_DECODERS"]).split(","):
        assert reference.startswith("/app/checkpoints/"), reference
    # .dockerignore is an allow-list: everything out, then what the Dockerfile copies back in, minus secrets
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {pattern[1:] for pattern in patterns if pattern.startswith("!")}
    copied = {source.rstrip("/") for arguments in copies for source in arguments.split()[:-1]}
    assert allowed == copied, (
        f".dockerignore lets in {sorted(allowed)}, the Dockerfile copies {sorted(copied)}"
    )
    last_allowed = max(i for i, pattern in enumerate(patterns) if pattern.startswith("!"))
    assert {"**/.env", "**/*.env", "**/__pycache__"} <= set(patterns[last_allowed + 1 :])  # after: they win


def test_prometheus_config_is_valid():
    result = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout  # alerts.yml is loaded and valid
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["dns_sd_configs"][0]["names"] == ["atencion", "atencion-gpu"]  # the compose service names


def test_grafana_provisioning_points_the_dashboard_at_the_provisioned_data_source():
    dashboard = load_dashboard()
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert sources[0]["url"] == "http://prometheus:9090" and sources[0]["type"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards" / "atencion.yml").read_text())["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())
    assert (
        f"./deploy/grafana/dashboards:{providers[0]['options']['path']}:ro"
        in compose["services"]["grafana"]["volumes"]
    )
    uids = {source["uid"] for source in sources}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids, panel["title"]


def test_dashboard_json_is_a_well_formed_grafana_dashboard():
    dashboard = load_dashboard()
    json.loads(DASHBOARD.read_text())  # strict JSON
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(grid["x"] + i, grid["y"] + j) for i in range(grid["w"]) for j in range(grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        assert panel["type"] == "row" or panel["targets"], panel["title"]
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("request rate", "errors", "latency", "batch size", "tokens / s", "first token", "finish"):
        assert topic in titles


def test_promql_metric_names_are_parsed_exactly():
    expression = (
        'histogram_quantile(0.99, sum by (le, path) (rate(atencion_request_duration_seconds_bucket{path=~"$path", '
        'instance=~"$instance"}[$__rate_interval]))) / on (path) group_left sum(up{job="a"} offset 5m) * 1e3'
    )
    assert promql_metric_names(expression) == {"atencion_request_duration_seconds_bucket", "up"}
    assert promql_metric_names('max by (model, kind) (atencion_model_info{kind="encoder"})') == {
        "atencion_model_info"
    }


def test_dashboard_queries_only_agreed_metric_families():
    dashboard = load_dashboard()
    """Names must be the agreed ones (docs/deploy.md); that a live service exports them is checked in
    test_deploy_service.py."""
    agreed = {
        "atencion_requests_total",
        "atencion_request_duration_seconds",
        "atencion_batch_size",
        "atencion_input_tokens_total",
        "atencion_generated_tokens_total",
        "atencion_time_to_first_token_seconds",
        "atencion_finish_reason_total",
        "atencion_model_info",
        "atencion_generation_running",
        "atencion_generation_waiting",
        "atencion_generation_batch_size",
        "atencion_generation_queue_seconds",
        "atencion_generation_time_to_first_token_seconds",
        "atencion_generation_time_per_output_token_seconds",
        "atencion_generation_prompt_tokens_total",
        "atencion_generation_generated_tokens_total",
        "atencion_generation_ended_total",
    }
    queried = set().union(*(promql_metric_names(e) for e in dashboard_expressions(dashboard)))
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried}
    assert families - {"up"} == agreed


def test_compose_defaults_are_the_services_own_defaults():
    """The container behaves like `atencion serve` with no settings, apart from where it listens and the models."""
    from service.settings import Settings, load_settings

    env = resolved_compose()["services"]["atencion"]["environment"]
    in_container = load_settings(env={k: str(v) for k, v in env.items()})
    assert (in_container.host, in_container.port) == ("0.0.0.0", 8000)
    assert in_container.encoders == ("/app/checkpoints/encoder-dense", "/app/checkpoints/encoder-sparse")
    assert in_container.decoders == ("/app/checkpoints/decoder-dense", "/app/checkpoints/decoder-sparse")
    defaults = Settings()
    assert dataclasses.replace(in_container, host=defaults.host, encoders=(), decoders=()) == defaults
    every_limit = {f"ATENCION_{f.name.upper()}" for f in dataclasses.fields(defaults.limits)}
    assert every_limit <= set(env), f"compose does not pass {every_limit - set(env)}"


def test_alerting_rules_fire_when_they_should():
    """promtool's rule unit tests: a replica down, 5xx above 5% (4xx ignored), p99 above 10 s."""
    result = subprocess.run(
        ["promtool", "test", "rules", str(ROOT / "tests" / "deploy" / "prometheus_alerts_test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_alerting_rules_query_only_agreed_metrics():
    names = set().union(*(promql_metric_names(e) for e in alert_expressions()))
    assert names == {
        "up",
        "atencion_requests_total",
        "atencion_request_duration_seconds_bucket",
        "atencion_generation_waiting",
        "atencion_generation_time_to_first_token_seconds_bucket",
    }


def test_docs_document_every_setting_and_their_yaml_parses():
    docs = (ROOT / "docs" / "deploy.md").read_text()
    compose_variables = set(re.findall(r"\$\{(\w+):-", COMPOSE.read_text()))
    undocumented = {name for name in compose_variables if f"`{name}`" not in docs}
    assert not undocumented, f"docs/deploy.md does not explain {sorted(undocumented)}"
    blocks = re.findall(r"```yaml\n(.*?)```", docs, re.S)
    manifests = [doc for block in blocks for doc in yaml.safe_load_all(block)]
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"][0]["containerPort"] == 8000
    assert spec["terminationGracePeriodSeconds"] >= 60
    image_uid = int(re.search(r"useradd .*--uid (\d+)", DOCKERFILE.read_text()).group(1))
    assert spec["securityContext"]["runAsUser"] == image_uid
    assert {e["name"] for e in container["env"]} <= set(SERVICE_VARIABLES)


def test_dockerfile_copies_the_whole_installable_project():
    """Every package pyproject.toml installs is copied into the build, and every copied path exists."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    top_level = {name.split(".")[0] for name in project["tool"]["setuptools"]["packages"]}
    copies = [a.split() for k, a in dockerfile_instructions() if k == "COPY"]
    sources = {source.rstrip("/") for *sources, _ in copies for source in sources}
    assert top_level | {"pyproject.toml", project["project"]["readme"]} <= sources
    for source in sources - {"checkpoints"}:  # checkpoints/ is filled by the training engineers' release
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
