"""Weight-only int8: the rounding error is bounded by half a scale step, logits stay close, the float model is
left alone, and the quantized model decodes through the same loops."""

from __future__ import annotations

import pytest
import torch

from modeling.config import DecoderConfig, EncoderConfig
from modeling.decode_step import CompiledDecoder
from modeling.decoder import Decoder
from modeling.encoder import Encoder
from modeling.quantization import DynamicInt8Linear, Int8Linear, quantize

CONFIG = DecoderConfig(
    vocab_size=61, d_model=32, n_layers=2, n_heads=2, d_ff=48, max_len=64, dropout=0.0, position="rope",
    norm="rms", feed_forward="swiglu", bias=False, tie_embeddings=True,
)  # fmt: skip


def make() -> Decoder:
    torch.manual_seed(0)
    return Decoder(CONFIG).eval()


def test_every_linear_layer_and_the_head_hold_int8_and_the_original_is_untouched() -> None:
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize(model, "int8")
    linears = [m for m in q.modules() if isinstance(m, torch.nn.Linear)]
    int8 = [m for m in q.modules() if isinstance(m, Int8Linear)]
    assert linears == [] and len(int8) == 2 * 5 + 1  # qkv, out, gate, up, down per block; the head
    assert all(m.weight.dtype == torch.int8 for m in int8)
    assert q.embeddings.tokens.weight.dtype == torch.float32  # the lookup table stays float
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_model_that_has_decoded_and_been_compiled_quantizes_too() -> None:
    """Decoding several rows leaves oneDNN's blocked weights (opaque tensors) on the projections, one row the
    mat-vec's copies, a compiled step its packed ones; quantizing deep-copies the model and must not trip on them."""
    model = make()
    CompiledDecoder(model)  # packs the one-row weights
    with torch.inference_mode():
        cache = model.new_cache()
        model.next_logits(torch.randint(3, 61, (4, 5)), cache)  # several rows: oneDNN where available
        model.next_logits(torch.randint(3, 61, (1, 5)), model.new_cache())  # one row
    q = quantize(model, "int8")
    ids = torch.randint(3, 61, (2, 6))
    with torch.inference_mode():
        assert torch.allclose(q(ids).logits, model(ids).logits, atol=0.05)


def test_rounding_error_is_at_most_half_a_scale_step() -> None:
    linear = torch.nn.Linear(40, 24)
    q = Int8Linear(linear)
    restored = q.weight.float() * q.scale[:, None]
    assert ((restored - linear.weight).abs() <= q.scale[:, None] / 2 + 1e-7).all()
    assert (q.weight.abs().amax(1) == 127).all()  # each row's largest weight uses the full range
    x = torch.randn(3, 40)
    with torch.no_grad():
        torch.testing.assert_close(q(x), x @ restored.T + linear.bias, atol=1e-5, rtol=0)


def test_quantized_logits_stay_close_to_float() -> None:
    """A bound, not equality: int8 rounding moves each logit by about 1 % of its spread here."""
    model = make()
    q = quantize(model, "int8")
    ids = torch.randint(3, 61, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact, approx = model(ids).logits, q(ids).logits
    assert (approx - exact).abs().max() < 0.05 * exact.std()


def test_quantized_model_decodes_through_the_static_cache_step_alike() -> None:
    q = quantize(make(), "int8")
    prompt = torch.randint(3, 61, (2, 5), generator=torch.Generator().manual_seed(1))
    step = CompiledDecoder(q, compile=False)
    with torch.inference_mode():
        a, b = q.new_cache(), step.new_cache(2)
        ids_a = ids_b = prompt
        for _ in range(10):
            ids_a = q.next_logits(ids_a, a).argmax(-1, keepdim=True)
            ids_b = step.next_logits(ids_b, b).argmax(-1, keepdim=True)
            assert torch.equal(ids_a, ids_b)


def test_unknown_method_and_other_models_are_refused() -> None:
    with pytest.raises(ValueError, match="'int4' is not one of int8"):
        quantize(make(), "int4")
    with pytest.raises(ValueError, match="for decoders and encoders, got Linear"):
        quantize(torch.nn.Linear(4, 4), "int8")


# ---- encoders: int8 activations × int8 weights ----------------------------------------------------------------
def encoder() -> Encoder:
    torch.manual_seed(0)
    config = EncoderConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=2, d_ff=48, max_len=16, dropout=0.0)
    return Encoder(config).eval()


def test_dynamic_int8_error_is_bounded_by_both_roundings() -> None:
    """|x·w − x̂·ŵ| ≤ s_x/2·Σ|w| + s_w/2·Σ|x| + K·s_x·s_w/4 per output, each rounding at most half its step."""
    linear = torch.nn.Linear(40, 24)
    q = DynamicInt8Linear(linear)
    x = torch.randn(2, 5, 40)
    with torch.no_grad():
        exact, approx = linear(x), q(x)
    s_x = x.abs().amax(-1, keepdim=True) / 127  # (2, 5, 1)
    s_w = q.scale  # (24,)
    bound = (
        s_x / 2 * linear.weight.abs().sum(1) + s_w / 2 * x.abs().sum(-1, keepdim=True) + 40 * s_x * s_w / 4
    )
    assert approx.shape == exact.shape == (2, 5, 24)
    assert ((approx - exact).abs() <= bound + 1e-5).all()
    assert (approx - exact).abs().max() > 0  # it really is int8: not the float product


def test_dynamic_int8_handles_an_all_zero_row() -> None:
    q = DynamicInt8Linear(torch.nn.Linear(8, 4, bias=False))
    with torch.no_grad():
        assert torch.equal(q(torch.zeros(3, 8)), torch.zeros(3, 4))


def test_an_encoder_gets_int8_blocks_and_head_dense_and_keeps_its_float_embeddings() -> None:
    model = encoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize(model, "int8")
    assert [m for m in q.modules() if isinstance(m, torch.nn.Linear)] == []
    assert (
        len([m for m in q.modules() if isinstance(m, DynamicInt8Linear)]) == 2 * 4 + 1
    )  # qkv, out, up, down; head
    assert q.embeddings.tokens.weight.dtype == torch.float32  # the lookup and the tied output head
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    ids = torch.randint(5, 61, (3, 12), generator=torch.Generator().manual_seed(0))
    pad = torch.ones(3, 12, dtype=torch.bool)
    pad[1, 8:] = False
    with torch.no_grad():
        exact, approx = model(ids, pad).logits, q(ids, pad).logits
    assert (approx - exact).abs().max() < 0.05 * exact.std()  # about 1 % of the spread here
