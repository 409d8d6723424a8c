"""The causal decoder: KV-cache decoding equals the full forward pass (dense and sparse), causality, padding,
tied head, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modeling.config import AttentionConfig, DecoderConfig
from modeling.decoder import Decoder

BASE = DecoderConfig(
    vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=48, dropout=0.0, position="rope",
    norm="rms", feed_forward="swiglu", bias=False,
)  # fmt: skip
ATTENTIONS = {
    "dense": AttentionConfig(),
    "local": AttentionConfig(pattern="local", block_size=4, window=5),
    "strided": AttentionConfig(pattern="strided", block_size=4, window=4, stride=3),
    "bigbird": AttentionConfig(pattern="bigbird", block_size=4, window=4, globals=1, randoms=1),
    "local+dense": AttentionConfig(pattern="local", block_size=4, window=3, dense_every=2),
}
POSITIONS = {
    "rope": {},
    "learned": {"position": "learned", "norm": "layer", "feed_forward": "gelu", "bias": True},
    "sinusoidal": {"position": "sinusoidal", "norm_placement": "post"},
    "relative": {"position": "relative", "relative_distance": 6},
}


def make(attention: str = "dense", position: str = "rope", seed: int = 0, **overrides) -> Decoder:
    torch.manual_seed(seed)
    config = dataclasses.replace(BASE, attention=ATTENTIONS[attention], **POSITIONS[position], **overrides)
    return Decoder(config).eval()


def incremental_logits(model: Decoder, ids: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Feed ``ids`` through a cache in chunks of the given lengths; stack the logits of every position."""
    cache, outputs, start = model.new_cache(), [], 0
    for length in chunks:
        outputs.append(model(ids[:, start : start + length], cache=cache).logits)
        start += length
    assert start == ids.shape[1] and cache[0].length == start
    return torch.cat(outputs, dim=1)  # (B, T, V)


# Tolerance 1e-5 in float32: the cached step and the full pass (block-sparse for sparse layouts) add the same
# terms in a different order.
@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_kv_cache_decoding_equals_full_forward(attention) -> None:
    model = make(attention)
    ids = torch.randint(0, 50, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        one_by_one = incremental_logits(model, ids, [5] + [1] * 25)
        chunked = incremental_logits(model, ids, [7, 9, 1, 13])
    torch.testing.assert_close(one_by_one, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", list(POSITIONS))
def test_kv_cache_decoding_for_every_position_kind(position) -> None:
    model = make("local", position)
    ids = torch.randint(0, 50, (1, 21), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            incremental_logits(model, ids, [3] + [1] * 18), model(ids).logits, atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("attention", ["dense", "bigbird"])
def test_later_tokens_never_change_earlier_logits(attention) -> None:
    model = make(attention)
    ids = torch.randint(0, 50, (1, 24), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, 15:] = (changed[0, 15:] + 7) % 50
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[:, :15], b[:, :15]) or (a[:, :15] - b[:, :15]).abs().max() < 1e-6
    assert (a[:, 15:] - b[:, 15:]).abs().max() > 1e-3


@pytest.mark.parametrize("attention", ["dense", "local"])
def test_right_padding_does_not_change_real_tokens(attention) -> None:
    model = make(attention, "learned")
    short = torch.randint(3, 50, (1, 11), generator=torch.Generator().manual_seed(4))
    long = torch.randint(3, 50, (1, 19), generator=torch.Generator().manual_seed(5))
    batch = torch.cat((torch.cat((short, torch.zeros(1, 8, dtype=torch.long)), 1), long))  # (2, 19)
    pad = torch.ones(2, 19, dtype=torch.bool)
    pad[0, 11:] = False
    with torch.no_grad():
        together = model(batch, pad_mask=pad).logits
        alone = model(short).logits
    torch.testing.assert_close(together[0, :11], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together[1], model(long).logits[0], atol=1e-5, rtol=0)


def test_attention_probabilities_cover_the_cache() -> None:
    model = make("local")
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(6))
    cache = model.new_cache()
    with torch.no_grad():
        model(ids[:, :9], cache=cache)
        step = model(ids[:, 9:], cache=cache, need_weights=True)
        full = model(ids, need_weights=True)
    assert len(step.attentions) == 2
    for cached, whole in zip(step.attentions, full.attentions, strict=True):
        assert cached.shape == (1, 2, 3, 12)
        torch.testing.assert_close(cached.sum(-1), torch.ones(1, 2, 3))
        torch.testing.assert_close(cached, whole[:, :, 9:], atol=1e-6, rtol=0)
        assert (cached[..., 0] == 0).all()  # window 5: the newest rows no longer see token 0


def test_tied_and_untied_heads() -> None:
    tied, untied = make(tie_embeddings=True), make(tie_embeddings=False)
    assert tied.lm_head.weight is tied.embeddings.tokens.weight
    assert untied.lm_head.weight is not untied.embeddings.tokens.weight
    hidden = torch.randn(3, 32)
    torch.testing.assert_close(tied.logits(hidden), hidden @ tied.embeddings.tokens.weight.T)


def test_post_norm_decoder_has_no_final_norm() -> None:
    assert make().final_norm is not None
    assert make(norm_placement="post").final_norm is None


def test_next_logits_is_the_last_position() -> None:
    model = make()
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(model.next_logits(ids, model.new_cache()), model(ids).logits[:, -1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(torch.tensor([[1, 50]])), "token ids must lie in"),
        (lambda m: m(torch.zeros(1, 49, dtype=torch.long)), "exceed the model's max_len"),
        (lambda m: m(torch.zeros(3, dtype=torch.long)), r"\(B, T\) long tensor"),
        (lambda m: m(torch.zeros(1, 3)), r"\(B, T\) long tensor"),
        (
            lambda m: m(torch.zeros(1, 3, dtype=torch.long), pad_mask=torch.ones(1, 4, dtype=torch.bool)),
            "pad_mask",
        ),
        (lambda m: m(torch.zeros(1, 3, dtype=torch.long), cache=m.new_cache()[:1]), "one KVCache per layer"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call(make())


def test_cache_cannot_grow_past_max_len() -> None:
    model = make()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.zeros(1, 47, dtype=torch.long), cache=cache)
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="max_len"):
            model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_decoding_head_follows_weight_updates() -> None:
    """next_logits' cached (d, V) head equals the head, and is rebuilt after an in-place update or a cast."""
    model = make(tie_embeddings=False)
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model.next_logits(ids, model.new_cache()), model(ids).logits[:, -1])
        model.lm_head.weight.mul_(-2.0)
        torch.testing.assert_close(model.next_logits(ids, model.new_cache()), model(ids).logits[:, -1])
    model.to(torch.float64)
    with torch.no_grad():
        logits = model.next_logits(ids, model.new_cache())
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits, model(ids).logits[:, -1].detach())
    logits = model.next_logits(ids, model.new_cache())  # with autograd: the head itself, differentiable
    assert logits.requires_grad
