"""The masked-LM encoder: padding invariance (dense and sparse), the head alone, tying, token types, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modeling.config import AttentionConfig, EncoderConfig
from modeling.encoder import Encoder

BASE = EncoderConfig(
    vocab_size=60, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=40, dropout=0.0, type_vocab_size=2,
    embedding_norm=True, norm_placement="post", norm_eps=1e-12,
)  # fmt: skip
ATTENTIONS = {
    "dense": AttentionConfig(),
    "local": AttentionConfig(pattern="local", block_size=4, window=3),
    "bigbird": AttentionConfig(pattern="bigbird", block_size=4, window=4, globals=1, randoms=1),
}


def make(attention: str = "dense", **overrides) -> Encoder:
    torch.manual_seed(0)
    return Encoder(dataclasses.replace(BASE, attention=ATTENTIONS[attention], **overrides)).eval()


# Padding is masked out of every key set, so the real tokens' logits match up to float32 rounding (1e-5).
@pytest.mark.parametrize("attention", ["dense", "local"])
@pytest.mark.parametrize("position", ["learned", "rope", "relative"])
def test_padding_does_not_change_real_tokens(attention, position) -> None:
    extra = {"relative_distance": 4} if position == "relative" else {}
    model = make(attention, position=position, norm_placement="pre", **extra)
    short = torch.randint(5, 60, (1, 13), generator=torch.Generator().manual_seed(1))
    padded = torch.cat((short, torch.zeros(1, 11, dtype=torch.long)), 1)  # (1, 24)
    pad = torch.arange(24)[None] < 13
    with torch.no_grad():
        alone = model(short).logits
        together = model(padded, pad_mask=pad).logits
    torch.testing.assert_close(together[:, :13], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_what_the_padding_holds_does_not_matter(attention) -> None:
    """At a fixed padded length. (BigBird's random blocks depend on the length itself, as in Zaheer et al.
    2020, so a bigbird encoder is invariant to the padding's content and batch-mates, not to its length.)"""
    model = make(attention)
    ids = torch.randint(5, 60, (2, 24), generator=torch.Generator().manual_seed(6))
    pad = torch.ones(2, 24, dtype=torch.bool)
    pad[0, 13:] = False
    other = ids.clone()
    other[0, 13:] = torch.randint(5, 60, (11,), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a = model(ids, pad_mask=pad).logits
        b = model(other, pad_mask=pad).logits
        single = model(ids[:1], pad_mask=pad[:1]).logits
    torch.testing.assert_close(a[0, :13], b[0, :13], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0, :13], single[0, :13], atol=1e-5, rtol=0)
    assert torch.equal(a[1], b[1]) or (a[1] - b[1]).abs().max() < 1e-5


def test_encoder_is_bidirectional() -> None:
    model = make()
    ids = torch.randint(5, 60, (1, 10), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 60
    with torch.no_grad():
        assert (model(ids).logits[0, 0] - model(changed).logits[0, 0]).abs().max() > 1e-4


def test_head_alone_at_chosen_positions_equals_full_logits() -> None:
    model = make()
    ids = torch.randint(5, 60, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(ids)
        chosen = torch.tensor([[0, 4], [1, 8]])
        at = model.logits(out.hidden[chosen[:, 0], chosen[:, 1]])  # (2, V)
        assert torch.equal(model.hidden_states(ids)[0], out.hidden)
    assert out.logits.shape == (2, 9, 60) and out.hidden.shape == (2, 9, 32) and out.attentions is None
    torch.testing.assert_close(at, out.logits[chosen[:, 0], chosen[:, 1]])


def test_output_embeddings_are_tied_and_saved_once() -> None:
    model = make()
    names = [name for name, _ in model.named_parameters()]
    assert "embeddings.tokens.weight" in names and "head.bias" in names
    assert not any(
        p is model.embeddings.tokens.weight for n, p in model.named_parameters() if n.startswith("head")
    )
    with torch.no_grad():
        model.embeddings.tokens.weight[7].zero_()
        model.head.bias[7] = 3.5
        logits = model(torch.tensor([[5, 6, 8]])).logits
    assert torch.all(logits[..., 7] == 3.5)  # the decoder row is the (zeroed) embedding row


def test_token_types_change_the_output_and_default_to_zero() -> None:
    model = make()
    ids = torch.randint(5, 60, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        default = model(ids).logits
        zeros = model(ids, token_types=torch.zeros(1, 6, dtype=torch.long)).logits
        ones = model(ids, token_types=torch.ones(1, 6, dtype=torch.long)).logits
    assert torch.equal(default, zeros)
    assert (default - ones).abs().max() > 1e-4


def test_attention_probabilities_respect_padding_and_layout() -> None:
    model = make("local")
    ids = torch.randint(5, 60, (1, 16), generator=torch.Generator().manual_seed(5))
    pad = torch.arange(16)[None] < 14
    with torch.no_grad():
        attentions = model(ids, pad_mask=pad, need_weights=True).attentions
    layout_mask = model.layouts(16)[0].mask()  # (H, T, S)
    for probs in attentions:
        assert probs.shape == (1, 2, 16, 16)
        torch.testing.assert_close(probs[0, :, :14].sum(-1), torch.ones(2, 14))
        assert (probs[..., 14:] == 0).all()
        assert (probs[0][~layout_mask] == 0).all()


def test_pre_norm_encoder_has_a_final_norm() -> None:
    assert make().final_norm is None
    assert make(norm_placement="pre").final_norm is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": torch.tensor([[1, 60]])}, "token ids must lie in"),
        ({"ids": torch.zeros(1, 41, dtype=torch.long)}, "max_len"),
        ({"ids": torch.zeros(1, 0, dtype=torch.long)}, "empty"),
        (
            {"ids": torch.zeros(1, 3, dtype=torch.long), "pad_mask": torch.ones(1, 2, dtype=torch.bool)},
            "pad_mask",
        ),
        ({"ids": torch.zeros(1, 3, dtype=torch.long), "token_types": torch.full((1, 3), 2)}, "token_types"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()(**kwargs)


def test_token_types_rejected_without_type_embeddings() -> None:
    with pytest.raises(ValueError, match="no token types"):
        make(type_vocab_size=0)(
            torch.zeros(1, 3, dtype=torch.long), token_types=torch.zeros(1, 3, dtype=torch.long)
        )


def test_sinusoidal_encoder_runs_and_scales_embeddings() -> None:
    model = make(position="sinusoidal")
    assert model.embeddings.positions is not None and model.embeddings.scale == pytest.approx(32**0.5)
    assert torch.isfinite(model(torch.tensor([[5, 6, 7]])).logits).all()
