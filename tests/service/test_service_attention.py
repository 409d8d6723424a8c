"""POST /attention over HTTP: any served model, the sparse layout travels as such, big answers are gzipped."""

import pytest


@pytest.mark.parametrize("model", ["encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse"])
def test_every_served_model_can_be_inspected(server, model):
    text = "El niño juega con su [MASK] en el parque." if model.startswith("encoder") else "El niño juega en"
    response = server.post("/attention", {"inputs": text, "model": model})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["kind"] == model.split("-")[0]
    assert body["n_tokens"] == len(body["tokens"]) and body["n_layers"] == 2 and body["n_heads"] == 2
    assert [a["layer"] for a in body["attentions"]] == [0, 1]
    assert len(body["statistics"]) == 2 * 2
    assert body["gradient"] is not None and body["rollout"]["matrix"]["shape"] == [body["n_tokens"]] * 2
    sparse = model.endswith("sparse")
    assert body["pattern"] == ("local" if sparse else "dense")
    densities = [layout["density"] for layout in body["layouts"]]
    if model == "encoder-dense":
        assert densities == [1.0, 1.0]  # every key allowed; a causal or sparse layout allows fewer
    else:
        assert all(d < 1.0 for d in densities)


def test_a_layer_and_head_filter_and_no_gradient(server):
    body = server.post(
        "/attention",
        {"inputs": "La niña lee un libro.", "parameters": {"layers": [1], "heads": [0], "gradient": False}},
    ).json()
    assert body["layers"] == [1] and body["heads"] == [0] and body["gradient"] is None
    assert len(body["attentions"]) == 1 and len(body["statistics"]) == 1


def test_large_answers_are_compressed(server):
    response = server.post(
        "/attention",
        {"inputs": "El sol brilla y el cielo está azul. " * 4},
        headers={"Accept-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == "gzip"


@pytest.mark.parametrize("model", ["encoder-sparse", "decoder-sparse"])
def test_a_request_without_gradient_does_not_break_later_gradients(server, model):
    """The first request of a length builds (and caches) its layouts under inference mode; the next request
    of that length runs autograd through them and must still answer 200."""
    same_length = {"encoder-sparse": "casa " * 19, "decoder-sparse": "la casa " * 6}[model]
    first = server.post(
        "/attention", {"inputs": same_length, "model": model, "parameters": {"gradient": False}}
    )
    assert first.status_code == 200, first.text
    n = first.json()["n_tokens"]
    second = server.post("/attention", {"inputs": same_length, "model": model})
    assert second.status_code == 200, second.text
    assert second.json()["n_tokens"] == n and second.json()["gradient"] is not None
