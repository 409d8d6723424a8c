"""The encoder–decoder: cached decoding equals the full pass (dense and sparse self-attention), beam 1 is greedy,
the cross-attention's gradients and masks, shared or separate vocabularies, checkpoints, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tokenizers import Tokenizer, models

from modeling.beam_search import beam_search, greedy
from modeling.checkpoint import load_checkpoint, save_checkpoint
from modeling.config import AttentionConfig, ConfigError, TranslatorConfig, config_from_dict
from modeling.cross_attention import CrossAttention, cross_attend
from modeling.scores import ScaledDotProduct
from modeling.translator import Translator

BASE = TranslatorConfig(
    vocab_size=40, d_model=32, n_layers=2, encoder_layers=1, n_heads=2, d_ff=64, max_len=48, dropout=0.0,
    position="learned",
)  # fmt: skip
ATTENTIONS = {
    "dense": AttentionConfig(),
    "local": AttentionConfig(pattern="local", block_size=4, window=5),
    "bigbird": AttentionConfig(pattern="bigbird", block_size=4, window=4, globals=1, randoms=1),
}


def make(seed: int = 0, **overrides) -> Translator:
    torch.manual_seed(seed)
    return Translator(dataclasses.replace(BASE, **overrides)).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    source = torch.randint(3, 40, (2, 11), generator=g)
    target = torch.randint(3, 40, (2, 20), generator=g)
    source_mask = torch.ones(2, 11, dtype=torch.bool)
    source_mask[1, 6:] = False
    return source, target, source_mask


# Tolerance 1e-5 in float32: the cached steps and the full pass (block-sparse for sparse layouts) add the same
# terms in a different order.
@pytest.mark.parametrize("attention", list(ATTENTIONS))
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_cached_decoding_equals_full_pass(attention, position) -> None:
    model = make(attention=ATTENTIONS[attention], position=position)
    source, target, source_mask = batch()
    with torch.no_grad():
        full = model(source, target, source_mask).logits  # (B, T, V)
        memory, _ = model.encode(source, source_mask)
        cache = model.start_cache(memory, source_mask)
        steps = [model.step(target[:, t : t + 1], cache) for t in range(target.shape[1])]
    assert cache.length == target.shape[1]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=0)


def test_source_padding_changes_nothing() -> None:
    model = make()
    source, target, _ = batch()
    padded = torch.cat((source, torch.zeros(2, 5, dtype=torch.long)), dim=1)
    mask = torch.cat((torch.ones(2, 11), torch.zeros(2, 5)), dim=1).bool()
    with torch.no_grad():
        plain = model(source, target).logits
        with_pad = model(padded, target, mask).logits
    torch.testing.assert_close(with_pad, plain, atol=1e-5, rtol=0)


def test_the_target_is_causal_and_the_source_is_not() -> None:
    model = make()
    source, target, _ = batch()
    changed = target.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 40
    other = source.clone()
    other[:, -1] = (other[:, -1] + 1) % 40
    with torch.no_grad():
        base = model(source, target).logits
        later = model(source, changed).logits
        source_end = model(other, target).logits
    torch.testing.assert_close(later[:, :10], base[:, :10], atol=0, rtol=0)
    assert (later[:, 10:] - base[:, 10:]).abs().max() > 1e-4
    assert (
        source_end[:, 0] - base[:, 0]
    ).abs().max() > 1e-4  # the first target token sees the last source token


def test_probabilities_do_not_change_the_output_and_sum_to_one() -> None:
    model = make()
    source, target, source_mask = batch()
    with torch.no_grad():
        fast = model(source, target, source_mask)
        explicit = model(source, target, source_mask, need_weights=True)
    torch.testing.assert_close(explicit.logits, fast.logits, atol=1e-5, rtol=0)
    for probs in explicit.cross_attentions:
        assert probs.shape == (2, 2, 20, 11)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 20))
        assert probs[1, :, :, 6:].abs().max() == 0.0
    assert [p.shape for p in explicit.attentions] == [(2, 2, 20, 20)] * 2
    assert [p.shape for p in explicit.encoder_attentions] == [(2, 2, 11, 11)]


def test_cross_attention_gradcheck() -> None:
    """float64 gradcheck of the explicit and the fused path, with a padded source row."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    score = ScaledDotProduct(4)
    for need_weights in (True, False):

        def f(q, k, v, need_weights=need_weights):
            return cross_attend(q, k, v, score=score, source_mask=mask, need_weights=need_weights)[0]

        assert torch.autograd.gradcheck(f, (q, k, v))
    out, probs = cross_attend(q, k, v, score=score, source_mask=mask, need_weights=True)
    out.sum().backward()
    assert k.grad[1, :, 2:].abs().max() == 0.0 and v.grad[1, :, 2:].abs().max() == 0.0  # padding: no gradient


def test_an_all_padding_source_gives_zeros_not_nan() -> None:
    torch.manual_seed(0)
    layer = CrossAttention(BASE).eval()
    x, memory = torch.randn(1, 3, 32), torch.randn(1, 4, 32)
    mask = torch.zeros(1, 4, dtype=torch.bool)
    for need_weights in (False, True):
        out, probs = layer(x, layer.memory_kv(memory), source_mask=mask, need_weights=need_weights)
        assert torch.isfinite(out).all()
    assert probs.abs().max() == 0.0


def test_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well() -> None:
    model = make(seed=4)
    source, _, source_mask = batch()
    greedy_ids = greedy(model, source, source_mask, max_new_tokens=12)
    assert (
        beam_search(model, source, source_mask, num_beams=1, length_penalty=0.0, max_new_tokens=12)
        == greedy_ids
    )
    assert all(1 <= len(ids) <= 12 and BASE.eos_token_id not in ids for ids in greedy_ids if ids)

    def logprob(row: int, ids: list[int]) -> float:
        target = torch.tensor([[BASE.bos_token_id, *ids]])
        gold = torch.tensor(ids + [BASE.eos_token_id] if len(ids) < 12 else ids)
        with torch.no_grad():
            logits = model(source[row : row + 1], target, source_mask[row : row + 1]).logits[0]
        return float(logits.log_softmax(-1)[: len(gold)].gather(1, gold[:, None]).sum())

    wide = beam_search(model, source, source_mask, num_beams=4, length_penalty=0.0, max_new_tokens=12)
    for row in range(2):
        assert logprob(row, wide[row]) >= logprob(row, greedy_ids[row]) - 1e-4


def test_shared_and_separate_vocabularies() -> None:
    shared = make()
    assert shared.source_embeddings.tokens is shared.target_embeddings.tokens
    assert shared.lm_head.weight is shared.target_embeddings.tokens.weight
    separate = make(source_vocab_size=25)
    assert separate.source_embeddings.tokens.weight.shape == (25, 32)
    assert separate.lm_head.weight is separate.target_embeddings.tokens.weight
    source, target, _ = batch()
    with pytest.raises(ValueError, match=r"ids: token ids must lie in \[0, 25\)"):
        separate(source + 20, target)
    assert separate(source % 25, target).logits.shape == (2, 20, 40)


def test_config_round_trip_and_errors() -> None:
    config = dataclasses.replace(BASE, source_vocab_size=30, attention=ATTENTIONS["local"])
    assert config_from_dict(config.to_dict()) == config
    assert config.encoder_config().n_layers == 1 and config.decoder_config().causal
    with pytest.raises(ConfigError, match="encoder_layers"):
        dataclasses.replace(BASE, encoder_layers=-1)
    with pytest.raises(ConfigError, match="eos_token_id"):
        dataclasses.replace(BASE, eos_token_id=40)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(make(), batch()[0], num_beams=0)


def test_checkpoint_round_trip(tmp_path) -> None:
    model = make(seed=7)
    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(40)}, unk_token="t0"))
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded.model, Translator) and loaded.config == model.config
    source, target, source_mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model(source, target, source_mask).logits, model(source, target, source_mask).logits
        )
