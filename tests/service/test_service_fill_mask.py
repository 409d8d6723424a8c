"""POST /fill-mask against the real server: HF pipeline shape, parity with the model, batching, the HF client."""

import concurrent.futures

import pytest
import torch
from huggingface_hub import InferenceClient
from prometheus_client.parser import text_string_to_metric_families

from modeling.checkpoint import load_checkpoint


def test_one_mask_gives_top_k_candidates_sorted(server):
    response = server.post("/fill-mask", {"inputs": "El [MASK] duerme.", "parameters": {"top_k": 3}})
    assert response.status_code == 200, response.text
    candidates = response.json()
    assert len(candidates) == 3
    assert set(candidates[0]) == {"score", "token", "token_str", "sequence"}
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert all("[MASK]" not in c["sequence"] for c in candidates)


def test_scores_match_the_model_run_locally(server, tiny_checkpoints):
    """The service's top candidate and score are the checkpoint's own softmax at the mask (tolerance: float32
    noise between a batch of one and a padded batch)."""
    text = "La niña lee un [MASK] en el jardín."
    top = server.post("/fill-mask", {"inputs": text, "parameters": {"top_k": 1}}).json()[0]
    checkpoint = load_checkpoint(tiny_checkpoints / "encoder-dense")
    ids = checkpoint.tokenizer.encode(text).ids
    position = ids.index(checkpoint.config.mask_token_id)
    with torch.inference_mode():
        probs = checkpoint.model(torch.tensor([ids])).logits[0, position].softmax(-1)
    assert top["token"] == int(probs.argmax())
    assert top["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_several_masks_and_several_inputs_nest_like_the_pipeline(server):
    two_masks = server.post("/fill-mask", {"inputs": "El [MASK] come [MASK].", "parameters": {"top_k": 2}})
    assert two_masks.status_code == 200
    body = two_masks.json()
    assert len(body) == 2 and all(len(per_mask) == 2 for per_mask in body)
    listed = server.post("/fill-mask", {"inputs": ["El [MASK] duerme.", "Mi [MASK] cocina."]}).json()
    assert len(listed) == 2 and all(len(per_input) == 5 for per_input in listed)
    mixed = server.post("/fill-mask", {"inputs": ["El [MASK] duerme.", "El [MASK] come [MASK]."]})
    assert mixed.status_code == 200, mixed.text  # each input nests as it would alone
    assert len(mixed.json()[0]) == 5 and [len(per_mask) for per_mask in mixed.json()[1]] == [5, 5]


def test_targets_restrict_the_candidates(server, tiny_checkpoints):
    from tokenizers import Tokenizer

    body = server.post(
        "/fill-mask",
        {"inputs": "El [MASK] duerme.", "parameters": {"targets": ["gato", "perro"], "top_k": 5}},
    ).json()
    assert len(body) == 2  # top_k is capped by the number of targets
    tokenizer = Tokenizer.from_file(str(tiny_checkpoints / "encoder-dense" / "tokenizer.json"))
    # a word outside the vocabulary counts as its first piece, as in the HF pipeline
    expected = {tokenizer.encode(word, add_special_tokens=False).ids[0] for word in ("gato", "perro")}
    assert {c["token"] for c in body} == expected
    assert body[0]["score"] >= body[1]["score"]


def test_the_sparse_encoder_is_served_by_name(server):
    dense = server.post("/fill-mask", {"inputs": "El [MASK] duerme.", "model": "encoder-dense"}).json()
    sparse = server.post("/fill-mask", {"inputs": "El [MASK] duerme.", "model": "encoder-sparse"}).json()
    assert [c["token"] for c in dense] != [c["token"] for c in sparse] or dense[0]["score"] != sparse[0][
        "score"
    ]


def test_huggingface_inference_client_works_unchanged(server):
    client = InferenceClient(model=server.url + "/fill-mask")
    out = client.fill_mask("El [MASK] duerme.", top_k=2)
    assert len(out) == 2 and out[0].score >= out[1].score and isinstance(out[0].token_str, str)


def _batch_histogram(server) -> dict[str, float]:
    text = server.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "atencion_batch_size":
            return {
                s.name.rsplit("_", 1)[1]: s.value
                for s in family.samples
                if s.labels.get("path") == "/fill-mask" and not s.name.endswith("_bucket")
            }
    return {}


def test_32_concurrent_requests_succeed_in_batches_and_a_bad_one_fails_alone(server):
    before = _batch_histogram(server)

    def call(i: int):
        text = "sin máscara aquí" if i == 7 else f"El [MASK] duerme {i}."
        return server.post("/fill-mask", {"inputs": text})

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(call, range(32)))
    codes = [r.status_code for r in responses]
    assert codes[7] == 422 and responses[7].json()["error_type"] == "no_mask"
    assert codes[:7] + codes[8:] == [200] * 31
    after = _batch_histogram(server)
    requests_run = after["sum"] - before.get("sum", 0)
    batches = after["count"] - before.get("count", 0)
    assert requests_run == 32
    assert batches < 32, "no batch held more than one request"


@pytest.mark.parametrize("model", ["encoder-dense", "encoder-sparse"])
def test_padding_in_a_batch_does_not_change_the_answers(server, model):
    """Texts of different lengths in one request share a padded forward; each must score as it does alone
    (tolerance 1e-5: float32 sums over different lengths round differently)."""
    texts = ["El [MASK] duerme.", "Los niños juegan en el parque después de la [MASK] con sus amigos."]
    together = server.post("/fill-mask", {"inputs": texts, "model": model}).json()
    for text, batched in zip(texts, together, strict=True):
        alone = server.post("/fill-mask", {"inputs": text, "model": model}).json()
        assert [c["token"] for c in batched] == [c["token"] for c in alone]
        assert [c["score"] for c in batched] == pytest.approx([c["score"] for c in alone], abs=1e-5)
