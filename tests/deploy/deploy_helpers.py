"""Reading the deployment files for the tests: the Dockerfile, the compose file, the dashboard's PromQL.

A plain module, not a conftest, so that `from conftest import …` elsewhere keeps meaning tests/conftest.py.

No Docker engine runs here, so the tests read these files the way Docker would and run their commands directly.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "atencion.json"
ENV_EXAMPLE = ROOT / "deploy" / "atencion.env.example"

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
    """The compose file as `docker-compose config` resolves it (cached: each run costs ~1 s of CPU)."""
    return yaml.safe_load(_resolved_text(tuple(sorted((env or {}).items())), profiles))


@functools.lru_cache(maxsize=16)
def _resolved_text(env: tuple[tuple[str, str], ...], profiles: tuple[str, ...]) -> str:
    return compose_config(dict(env), profiles).stdout


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


def alert_expressions() -> list[str]:
    """The PromQL of every alerting rule in deploy/prometheus/alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def grafana_to_promql(expression: str, rate_interval: str = "30s") -> str:
    """Replace the Grafana variables the dashboard uses with what Grafana would send for "All"."""
    return (
        expression.replace("$__rate_interval", rate_interval)
        .replace('"$path"', '".*"')
        .replace('"$instance"', '".*"')
    )


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))
