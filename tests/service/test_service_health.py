"""GET /health, /info, /metrics, /openapi.json and /ui on the shared server."""

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

METRICS = {
    "atencion_requests": "counter",
    "atencion_request_duration_seconds": "histogram",
    "atencion_batch_size": "histogram",
    "atencion_input_tokens": "counter",
    "atencion_generated_tokens": "counter",
    "atencion_time_to_first_token_seconds": "histogram",
    "atencion_finish_reason": "counter",
    "atencion_model_info": "gauge",
}


def test_health_is_ok_once_workers_are_up(server):
    response = server.get("/health")
    assert response.status_code == 200 and response.text == "ok"


def test_info_lists_models_device_limits_and_version(server):
    info = server.get("/info").json()
    names = [m["name"] for m in info["models"]]
    assert names == ["encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse", "translator"]
    sparse = next(m for m in info["models"] if m["name"] == "encoder-sparse")
    assert sparse["pattern"] == "local" and sparse["config"]["attention"]["window"] == 4
    assert {"revision", "commit", "repo_id", "reference"} <= set(sparse)
    assert info["defaults"] == {
        "encoder": "encoder-dense",
        "decoder": "decoder-dense",
        "translator": "translator",
    }
    assert info["device"]["accelerator"] == "cpu"
    assert info["limits"]["max_input_tokens"] >= 1 and info["limits"]["max_new_tokens"] >= 1
    assert info["batching"]["max_batch_size"] == 8
    assert info["version"]
    assert sorted(info["endpoints"]) == [
        "/attention", "/detokenize", "/fill-mask", "/generate", "/generate_stream", "/tokenize", "/translate",
        "/v1/chat/completions", "/v1/completions",
    ]  # fmt: skip


def test_openapi_has_the_request_schemas(server):
    schema = server.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in ("FillMaskRequest", "GenerateRequest", "GenerateParameters", "AttentionRequest"):
        assert name in components
    assert "top_k" in components["FillMaskParameters"]["properties"]
    body = schema["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/GenerateRequest")


def test_metrics_parse_and_count_what_happened(server):
    server.post("/fill-mask", {"inputs": "El [MASK] duerme."})
    server.post("/fill-mask", {"inputs": "sin máscara"})
    server.post("/generate", {"inputs": "El gato", "parameters": {"max_new_tokens": 3}})
    server.post("/generate_stream", {"inputs": "El gato", "parameters": {"max_new_tokens": 3}})
    response = server.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name, kind in METRICS.items():
        assert families[name].type == kind, name
    samples = [s for f in families.values() for s in f.samples]

    def value(name, **labels):
        return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

    assert value("atencion_requests_total", path="/fill-mask", status="200") >= 1
    assert value("atencion_requests_total", path="/fill-mask", status="422") >= 1
    assert value("atencion_requests_total", path="/generate_stream", status="200") >= 1
    assert value("atencion_request_duration_seconds_count", path="/generate") >= 1
    assert value("atencion_generated_tokens_total", path="/generate") >= 1
    assert value("atencion_generated_tokens_total", path="/generate_stream") >= 1
    assert value("atencion_input_tokens_total", path="/fill-mask") >= 5
    assert value("atencion_time_to_first_token_seconds_count", path="/generate_stream") >= 1
    assert value("atencion_finish_reason_total") >= 2
    info = {s.labels["model"]: s for s in samples if s.name == "atencion_model_info"}
    assert set(info) == {"encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse", "translator"}
    assert all(s.value == 1 and s.labels["revision"] == "local" for s in info.values())
    assert info["decoder-sparse"].labels["kind"] == "decoder"


def test_the_viewer_page_is_mounted_when_present(server):
    page = Path(__file__).resolve().parents[2] / "service" / "static" / "index.html"
    response = server.get("/ui/")
    if page.is_file():
        assert response.status_code == 200 and "<html" in response.text.lower()
    else:
        assert response.status_code == 404
