"""Start-up, the API key and SIGTERM, each on a server of its own (``start_server``); CLI start-up errors."""

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def test_api_key_env_config_and_sigterm_draining(start_server, tiny_checkpoints):
    """One encoder-only server configured through the environment, as a container would be."""
    key = "llave-secreta-123"
    server = start_server(
        env={
            "ATENCION_ENCODERS": str(tiny_checkpoints / "encoder-sparse"),
            "ATENCION_API_KEY": key,
            "ATENCION_MAX_BATCH_SIZE": "4",
            "ATENCION_BATCH_TIMEOUT": "1.5",  # a lone request waits this long for company: it is in flight
            "ATENCION_MAX_CONCURRENT_REQUESTS": "2",
        }
    )
    body = {"inputs": "El [MASK] duerme."}
    missing = requests.post(server.url + "/fill-mask", json=body, timeout=30)
    assert missing.status_code == 401 and missing.json()["error_type"] == "unauthorized"
    wrong = requests.post(
        server.url + "/fill-mask", json=body, headers={"X-API-Key": "otra-llave"}, timeout=30
    )
    assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]
    assert requests.get(server.url + "/info", timeout=30).status_code == 401
    assert requests.get(server.url + "/health", timeout=30).status_code == 200  # probes carry no key
    assert requests.get(server.url + "/metrics", timeout=30).status_code == 200
    headers = {"X-API-Key": key}
    info = requests.get(server.url + "/info", headers=headers, timeout=30).json()
    assert [m["name"] for m in info["models"]] == ["encoder-sparse"] and info["api_key_required"]
    assert info["batching"] == {"max_batch_size": 4, "batch_timeout": 1.5}
    generate = requests.post(server.url + "/generate", json={"inputs": "Hola"}, headers=headers, timeout=30)
    assert generate.status_code == 404  # no decoder served: no /generate route

    # three at once, two allowed in flight: the third is turned away at once instead of queueing
    with ThreadPoolExecutor(3) as pool:
        calls = [
            pool.submit(requests.post, server.url + "/fill-mask", json=body, headers=headers, timeout=60)
            for _ in range(3)
        ]
        responses = sorted((call.result() for call in calls), key=lambda r: r.status_code)
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].json()["error_type"] == "overloaded"

    answers = []

    def in_flight():
        answers.append(requests.post(server.url + "/fill-mask", json=body, headers=headers, timeout=60))

    caller = threading.Thread(target=in_flight)
    caller.start()
    time.sleep(0.5)  # the request now waits in the worker's batch window
    started = time.monotonic()
    left = server.stop()
    caller.join(timeout=60)
    assert not left, f"processes left after SIGTERM: {left}"
    assert server.process.returncode is not None and time.monotonic() - started < 45
    assert len(answers) == 1 and answers[0].status_code == 200, answers and answers[0].text
    assert answers[0].json()[0]["token_str"]
    with pytest.raises(requests.ConnectionError):  # nobody holds the port any more
        requests.get(server.url + "/health", timeout=5)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ATENCION_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "atencion", "serve", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--port", "80"], {}, ["--port", "1024"]),
        (["--encoder", "/no/such/dir"], {}, ["neither a checkpoint directory"]),
        ([], {"ATENCION_MAX_BATCH_SIZE": "muchos"}, ["ATENCION_MAX_BATCH_SIZE", "int"]),
        ([], {"ATENCION_HOST": "8.8.8.8"}, ["--host", "127.0.0.1"]),
    ],
)
def test_bad_settings_stop_the_cli_with_a_clear_message(args, env, words):
    done = run_cli(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert all(word in done.stderr for word in words), done.stderr
    assert "Traceback" not in done.stderr


def test_a_checkpoint_of_the_wrong_kind_is_refused(tiny_checkpoints):
    done = run_cli("--decoder", str(tiny_checkpoints / "encoder-dense"))
    assert done.returncode == 2 and "pass it with --encoder" in done.stderr


def test_no_models_at_all_says_how_to_pass_them(monkeypatch):
    import service.settings
    from service.models import ServeError, resolve_all
    from service.settings import Settings

    monkeypatch.setattr(service.settings, "shipped_references", lambda: ((), ()))
    monkeypatch.setattr(service.settings, "shipped_translators", lambda: ())
    with pytest.raises(ServeError, match="--encoder .* --decoder"):
        resolve_all(Settings())


def test_a_broken_checkpoint_stops_start_up_with_its_reason(tiny_checkpoints, tmp_path):
    broken = tmp_path / "encoder-broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((tiny_checkpoints / "encoder-dense" / name).read_bytes())
    weights = (tiny_checkpoints / "encoder-dense" / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    done = run_cli("--encoder", str(broken))
    assert done.returncode == 2 and "model.safetensors" in done.stderr and "truncated" in done.stderr, (
        done.stderr
    )


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has CUDA: nothing to refuse"
)
def test_cuda_without_a_device_is_refused_before_any_worker_starts(tiny_checkpoints):
    done = run_cli("--accelerator", "cuda", "--encoder", str(tiny_checkpoints / "encoder-dense"))
    assert done.returncode == 2 and "no CUDA device" in done.stderr, done.stderr
