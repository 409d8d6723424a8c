"""A Hub reference ``ORG/NAME@REVISION`` is pulled at start-up (the project's test Hub on 127.0.0.1) and served."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
from hub_server import HubHTTPServer  # noqa: E402
from hub_support import publish  # noqa: E402


@pytest.fixture
def hub(tmp_path):
    server = HubHTTPServer(tmp_path / "hub-data").start()
    yield server
    server.stop()


def test_a_hub_reference_is_pulled_and_served_with_its_commit(start_server, hub, tiny_checkpoints, tmp_path):
    files = {
        name: (tiny_checkpoints / "encoder-sparse" / name).read_bytes()
        for name in ("config.json", "model.safetensors", "tokenizer.json")
    }
    commit = publish(hub, "atencion/tiny-encoder", files)
    server = start_server(
        "--encoder",
        "atencion/tiny-encoder@main",
        env={
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_OFFLINE": None,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        },
    )
    served = server.get("/info").json()["models"][0]
    assert served["name"] == "atencion/tiny-encoder" and served["repo_id"] == "atencion/tiny-encoder"
    assert served["revision"] == "main" and served["commit"] == commit
    body = {"inputs": "El [MASK] duerme.", "model": "atencion/tiny-encoder"}
    answer = server.post("/fill-mask", body)
    assert answer.status_code == 200 and len(answer.json()) == 5
    metrics = server.get("/metrics").text
    assert (
        f'atencion_model_info{{kind="encoder",model="atencion/tiny-encoder",revision="{commit}"}} 1.0'
        in metrics
    )
