"""Log-probabilities: a prompt scored in one forward equals decoding it token by token; top-N alternatives."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from modeling.config import AttentionConfig, DecoderConfig
from modeling.decoder import Decoder
from modeling.generation import Sampling, stream_tokens
from modeling.logprobs import log_probs, prompt_logprobs, token_logprob, top_alternatives

PROMPT = [1, 7, 9, 12, 5, 30, 8, 8, 21]


def tiny_tokenizer() -> Tokenizer:
    words = ["[PAD]", "[BOS]", "[EOS]"] + [f"w{i:02d}" for i in range(29)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[PAD]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(words[:3])
    return tokenizer


def decoder(attention: AttentionConfig | None = None) -> Decoder:
    torch.manual_seed(3)
    config = DecoderConfig(
        vocab_size=32, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=64, dropout=0.0,
        attention=attention or AttentionConfig(),
    )  # fmt: skip
    return Decoder(config).eval()


@pytest.mark.parametrize(
    "attention", [None, AttentionConfig(pattern="local", window=4, block_size=4)], ids=["dense", "local"]
)
def test_prompt_logprobs_equal_decoding_one_token_at_a_time(attention):
    """The full forward's row t-1 against a cached step-by-step decode; 1e-5: fp32 summation order only."""
    model = decoder(attention)
    scored = prompt_logprobs(model, PROMPT, n=3)
    assert scored[0] is None and len(scored) == len(PROMPT)
    cache = model.new_cache()
    with torch.inference_mode():
        for t in range(1, len(PROMPT)):
            logits = model.next_logits(torch.tensor([[PROMPT[t - 1]]]), cache)[0]
            expected = log_probs(logits)[PROMPT[t]]
            assert scored[t].id == PROMPT[t]
            assert abs(scored[t].logprob - float(expected)) < 1e-5


def test_logprobs_are_normalised_and_the_alternatives_sorted():
    model = decoder()
    for entry in prompt_logprobs(model, PROMPT, n=5)[1:]:
        values = [v for _, v in entry.top]
        assert len(entry.top) == 5 and values == sorted(values, reverse=True)
        assert entry.logprob <= values[0] + 1e-7 and all(v <= 0 for v in values)
        if entry.id in dict(entry.top):
            assert dict(entry.top)[entry.id] == entry.logprob  # the same float, not merely close
    row = log_probs(torch.randn(32))
    assert abs(float(row.exp().sum()) - 1) < 1e-5
    assert top_alternatives(row, 0) == () and len(top_alternatives(row, 100)) == 32


def test_the_argmax_has_the_best_alternatives_exact_value():
    """Harnesses call a token greedy when its log-probability equals the best alternative's (float ==)."""
    row = log_probs(torch.randn(50) * 3)
    best = int(row.argmax())
    entry = token_logprob(row, best, 1)
    assert entry.top[0] == (best, entry.logprob)


def test_stream_tokens_reports_the_same_alternatives_as_scoring_the_whole_text():
    """Generated tokens' logprobs and top-N against one forward over prompt + output (1e-4: cache vs full)."""
    model, tokenizer = decoder(), tiny_tokenizer()
    tokens = list(stream_tokens(model, tokenizer, PROMPT, Sampling(max_new_tokens=6), top_n=3))
    assert all(
        len(t.top_logprobs) == 3 and t.top_logprobs[0][0] == t.id for t in tokens
    )  # greedy: the best one
    scored = prompt_logprobs(model, PROMPT + [t.id for t in tokens], n=3)[len(PROMPT) :]
    for token, reference in zip(tokens, scored, strict=True):
        assert abs(token.logprob - reference.logprob) < 1e-4
        assert [i for i, _ in token.top_logprobs] == [i for i, _ in reference.top]
        assert all(
            abs(a - b) < 1e-4 for (_, a), (_, b) in zip(token.top_logprobs, reference.top, strict=True)
        )
    assert all(
        t.top_logprobs == () for t in stream_tokens(model, tokenizer, PROMPT, Sampling(max_new_tokens=2))
    )


def test_an_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="ids"):
        prompt_logprobs(decoder(), [])
