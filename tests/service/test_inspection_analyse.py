"""``analyse`` (the body of POST /attention) on the four tiny checkpoints: dense/sparse × encoder/decoder."""

import base64

import numpy as np
import pytest
import torch

from modeling.checkpoint import build_model, load_checkpoint
from modeling.config import EncoderConfig
from service.encoding import QUANTISATION_ERROR, decode, decode_bits
from service.gradients import attention_gradients
from service.inspection import InspectionError, InspectionTooLarge, analyse
from service.rollout import gradient_times_attention
from service.structure import allowed_keys

TEXT = "¿Dónde está la niña? El gato [MASK] en la casa."
NAMES = ["encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse"]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints):
    return {name: load_checkpoint(tiny_checkpoints / name) for name in NAMES}


def _model_probs(checkpoint, text):
    ids = torch.tensor([checkpoint.tokenizer.encode(text).ids])  # (1, n)
    with torch.inference_mode():
        return [a[0] for a in checkpoint.model(ids, need_weights=True).attentions]  # per layer (H, n, n)


@pytest.mark.parametrize("name", NAMES)
def test_decoded_probabilities_equal_the_models(loaded, name):
    checkpoint = loaded[name]
    payload = analyse(checkpoint.model, checkpoint.tokenizer, TEXT)
    reference = _model_probs(checkpoint, TEXT)
    layouts = {entry["layer"]: entry for entry in payload["layouts"]}
    assert [b["layer"] for b in payload["attentions"]] == list(range(checkpoint.config.n_layers))
    for block in payload["attentions"]:
        mask = decode_bits(layouts[block["layer"]]["mask"])
        got = decode(block, mask)
        want = reference[block["layer"]].numpy()
        # one byte per weight: |round(p·255)/255 − p| ≤ 0.5/255
        assert np.abs(got - want).max() <= QUANTISATION_ERROR + 1e-6
        assert (want[~mask] == 0).all(), "the model put weight where its layout forbids it"


@pytest.mark.parametrize("name", ["encoder-sparse", "decoder-sparse", "decoder-dense"])
def test_layout_encoding_holds_only_the_layouts_entries(loaded, name):
    checkpoint = loaded[name]
    payload = analyse(checkpoint.model, checkpoint.tokenizer, TEXT)
    n, H = payload["n_tokens"], checkpoint.config.n_heads
    for block, layout in zip(payload["attentions"], payload["layouts"], strict=True):
        mask = decode_bits(layout["mask"])
        assert block["encoding"] == "layout-u8"
        assert len(base64.b64decode(block["data"])) == block["cells"] == int(mask.sum()) < H * n * n
        assert layout["sparse"] == name.endswith("sparse")
        assert layout["causal"] == name.startswith("decoder")
        if layout["sparse"]:  # the kernel computes whole blocks: a superset of the mask, and not everything
            computed = decode_bits(layout["computed"])
            assert (computed | ~mask).all() and computed.sum() < H * n * n
            assert 0 < layout["block_density"] < 1
        else:
            assert layout["computed"] is None
    if name == "encoder-sparse":  # window 4 in blocks of 4: a query sees at most 3 blocks
        assert payload["layouts"][0]["block_size"] == 4
        assert payload["layouts"][0]["density"] < 0.75
        assert payload["layouts"][0]["mask"]["shape"] == [1, n, n]  # every head shares the window: sent once


def test_dense_encoding_on_request_round_trips_for_a_sparse_model(loaded):
    checkpoint = loaded["encoder-sparse"]
    payload = analyse(checkpoint.model, checkpoint.tokenizer, TEXT, encoding="dense", gradient=False)
    reference = _model_probs(checkpoint, TEXT)
    for block in payload["attentions"]:
        assert block["encoding"] == "dense-u8"
        assert np.abs(decode(block) - reference[block["layer"]].numpy()).max() <= QUANTISATION_ERROR + 1e-6
    assert payload["gradient"] is None


def test_layer_and_head_filters(loaded):
    checkpoint = loaded["decoder-sparse"]
    payload = analyse(checkpoint.model, checkpoint.tokenizer, TEXT, layers=[1], heads=[1])
    n = payload["n_tokens"]
    assert payload["layers"] == [1] and payload["heads"] == [1]
    assert payload["attentions"][0]["shape"] == [1, n, n]
    assert [(s["layer"], s["head"]) for s in payload["statistics"]] == [(1, 1)]
    got = decode(payload["attentions"][0], payload["layouts"][0]["mask"])[0]
    assert np.abs(got - _model_probs(checkpoint, TEXT)[1][1].numpy()).max() <= QUANTISATION_ERROR + 1e-6


def test_tokens_carry_surface_text_and_offsets(loaded):
    checkpoint = loaded["encoder-dense"]
    payload = analyse(checkpoint.model, checkpoint.tokenizer, TEXT, gradient=False)
    words = [t for t in payload["tokens"] if not t["special"]]
    assert all(t["text"] == TEXT[t["start"] : t["end"]] for t in words)
    assert "niña" in {t["text"] for t in words}
    flags = {t["text"]: t["punctuation"] for t in words}
    assert flags["¿"] and flags["?"] and flags["."] and not flags["niña"]
    assert payload["tokens"][0]["special"] and payload["tokens"][0]["token"] == "[CLS]"
    assert payload["kind"] == "encoder" and payload["n_layers"] == 2 and payload["n_heads"] == 2
    assert {block["encoding"] for block in payload["attentions"]} == {"dense-u8"}  # nothing to skip


@pytest.mark.parametrize("name", ["encoder-dense", "decoder-sparse"])
def test_rollout_rows_are_distributions(loaded, name):
    checkpoint = loaded[name]
    checkpoint.model.train()
    payload = analyse(checkpoint.model, checkpoint.tokenizer, TEXT, gradient=False)
    assert checkpoint.model.training, "analyse must leave the model's mode as it found it"
    checkpoint.model.eval()
    rolled = decode(payload["rollout"]["matrix"])
    n = payload["n_tokens"]
    # each of n entries is off by at most half a quantisation step
    assert np.abs(rolled.sum(-1) - 1).max() <= n * QUANTISATION_ERROR
    assert payload["rollout"]["row"] == (0 if name.startswith("encoder") else n - 1)
    if name.startswith("decoder"):
        assert np.triu(rolled, 1).max() == 0  # causal layers compose to a causal rollout


@pytest.mark.parametrize("name", NAMES)
def test_gradient_times_attention_is_non_negative_and_zero_outside_the_layout(loaded, name):
    checkpoint = loaded[name]
    payload = analyse(checkpoint.model, checkpoint.tokenizer, TEXT)
    gradient = payload["gradient"]
    assert "error" not in gradient
    layouts = {entry["layer"]: decode_bits(entry["mask"]) for entry in payload["layouts"]}
    for block in gradient["maps"]:
        values = decode(block, block.get("mask"))
        allowed_by_any_head = layouts[block["layer"]].any(0)
        assert (values >= 0).all()
        assert (values[~allowed_by_any_head] == 0).all()
        assert values.max() > 0, "the target's gradient reached no attention weight"
    if name.startswith("decoder"):  # nothing after the target can explain its next-token prediction
        target = gradient["target"]["position"]
        assert all(v == 0 for v in gradient["relevance"][target + 1 :])


@pytest.mark.parametrize("name", ["encoder-sparse", "decoder-sparse"])
def test_gradient_map_before_encoding_is_zero_outside_the_layout(loaded, name):
    """The property itself, on the float32 maps (the payload's layout-u8 encoding would hide a violation)."""
    checkpoint = loaded[name]
    ids = checkpoint.tokenizer.encode(TEXT).ids
    n = len(ids)
    explained = attention_gradients(checkpoint.model, ids, position=n - 2)
    assert set(explained.routes) == {"values"}  # the block-sparse kernel: ∂L/∂A through the values
    for layer, (A, G) in enumerate(zip(explained.attentions, explained.gradients, strict=True)):
        mask, _, _ = allowed_keys(checkpoint.config, layer, n)
        per_head = (A * G).clamp_min(0)  # (H, n, n)
        assert (per_head[~mask] == 0).all()
        assert (gradient_times_attention(A, G)[~mask.any(0)] == 0).all()
        assert G[mask].abs().max() > 0


def test_encoder_targets(loaded):
    checkpoint = loaded["encoder-dense"]
    tokens = checkpoint.tokenizer.encode(TEXT)
    mask_position = tokens.ids.index(4)
    target = analyse(checkpoint.model, checkpoint.tokenizer, TEXT)["gradient"]["target"]
    assert target["position"] == mask_position and not target["masked_input"]
    unknown = analyse(checkpoint.model, checkpoint.tokenizer, "😀")  # [UNK] is a word of the text
    assert unknown["gradient"]["target"]["position"] == 1 and not unknown["tokens"][1]["special"]
    plain = "La niña lee un libro."
    target = analyse(checkpoint.model, checkpoint.tokenizer, plain)["gradient"]["target"]
    first_word = checkpoint.tokenizer.encode(plain).ids[1]
    assert target["position"] == 1 and target["masked_input"] and target["token_id"] == first_word


@pytest.mark.parametrize("position", ["learned", "relative"])
def test_gradient_routes_agree(position):
    """Through the returned probabilities (autograd) and through the values (∂L/∂O·vᵀ): same ∂log p/∂A."""
    extra = {"relative_distance": 2} if position == "relative" else {}
    config = EncoderConfig(
        vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=16, dropout=0.0,
        position=position, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config).eval()
    ids = [2, 7, 9, 4, 11, 3]
    auto = attention_gradients(model, ids, position=3)
    values = attention_gradients(model, ids, position=3, token_id=auto.token_id, route="values")
    assert auto.routes == ["autograd", "autograd"] and values.routes == ["values", "values"]
    for a, b in zip(auto.gradients, values.gradients, strict=True):
        # float32 sums in a different order: agreement to ~1e-6 relative to the largest entry
        assert torch.allclose(a, b, atol=1e-5 * float(a.abs().max()))


def test_frozen_model_under_inference_mode(loaded):
    checkpoint = loaded["decoder-dense"]
    for p in checkpoint.model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():  # as a service worker may call it
        payload = analyse(checkpoint.model, checkpoint.tokenizer, "Hola, ¿qué tal?")
    assert payload["gradient"]["maps"] and not any(p.requires_grad for p in checkpoint.model.parameters())


def test_caps_and_bad_requests_raise_clear_errors(loaded):
    checkpoint = loaded["encoder-sparse"]
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    with pytest.raises(InspectionTooLarge, match="shorter text"):
        analyse(model, tokenizer, TEXT, max_tokens=5)
    with pytest.raises(InspectionTooLarge, match="fewer layers or heads"):
        analyse(model, tokenizer, TEXT, max_cells=100)
    with pytest.raises(InspectionTooLarge, match="64"):  # the model's own max_len caps too
        analyse(model, tokenizer, "gato " * 100)
    bad = [
        (dict(layers=[2]), "layers: 2 is not a layer"),
        (dict(heads=[-1]), "heads"),
        (dict(layers=[]), "layers"),
        (dict(target=99), "target: 99"),
        (dict(target=0), "special token"),
        (dict(encoding="float"), "encoding"),
    ]
    for kwargs, message in bad:
        with pytest.raises(InspectionError, match=message):
            analyse(model, tokenizer, TEXT, **kwargs)
    with pytest.raises(InspectionError, match="empty"):
        analyse(model, tokenizer, "   ")
    assert InspectionTooLarge.status == 413 and InspectionError.status == 422
