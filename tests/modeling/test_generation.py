"""Generation: validated sampling parameters, each logits processor as defined, and the token stream."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from modeling.config import DecoderConfig
from modeling.decoder import Decoder
from modeling.generation import (
    Sampling,
    choose_token,
    generate_text,
    keep_top_k,
    keep_top_p,
    penalize_repetition,
    stream_tokens,
)

WORDS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[MASK]"] + [
    f"w{i:02d}" for i in range(27)
]  # no word inside another


def tiny_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(WORDS[:5])
    return tokenizer


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    torch.manual_seed(0)
    config = DecoderConfig(
        vocab_size=32, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=64, dropout=0.0, position="rope",
        norm="rms", feed_forward="swiglu", bias=False, tie_embeddings=False,
    )  # fmt: skip
    model = Decoder(config).eval()
    with torch.no_grad():  # sharper logits than the init, so that sampling is far from uniform
        model.lm_head.weight.mul_(20)
    return model


# ---- Sampling validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("max_new_tokens", 2.5),
        ("temperature", 0.0),
        ("temperature", float("nan")),
        ("top_k", 0),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("repetition_penalty", -1.0),
        ("seed", "x"),
        ("stop", ("",)),
        ("do_sample", "yes"),
    ],
)
def test_sampling_rejects_bad_values_naming_the_field(field, value) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        Sampling(**{field: value})


def test_sampling_accepts_a_list_of_stops() -> None:
    assert Sampling(stop=["a", "b"]).stop == ("a", "b")


# ---- logits processors -------------------------------------------------------------------------------------
def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    logits = torch.tensor([2.0, -2.0, 3.0, -1.0])
    seen = torch.tensor([True, True, False, False])
    out = penalize_repetition(logits, seen, 2.0)
    assert out.tolist() == [1.0, -4.0, 3.0, -1.0]
    assert torch.equal(penalize_repetition(logits, seen, 1.0), logits)


def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = torch.tensor([[0.1, 5.0, -1.0, 3.0, 2.0]])
    kept = torch.isfinite(keep_top_k(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(keep_top_k(logits, 10), logits)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    # sorted: 0.5, 0.3 (sum 0.8), 0.15 (sum 0.95), 0.05
    assert torch.isfinite(keep_top_p(logits, 0.8)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(keep_top_p(logits, 0.81)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(keep_top_p(logits, 0.1)).tolist() == [[False, True, False, False]]


def test_sampling_draws_only_from_the_truncated_support() -> None:
    logits = torch.tensor([[1.0, 1.2, 0.9, 1.1, 0.0, 0.5]]).expand(2000, 6)
    generator = torch.Generator().manual_seed(0)
    top_k = choose_token(logits, Sampling(do_sample=True, top_k=2), generator)
    assert set(top_k.tolist()) == {1, 3}
    top_p = choose_token(logits, Sampling(do_sample=True, top_p=0.3), generator)
    assert set(top_p.tolist()) <= {1, 3} and len(set(top_p.tolist())) == 2
    everything = choose_token(logits, Sampling(do_sample=True), generator)
    assert set(everything.tolist()) == set(range(6))


def test_temperature_sharpens() -> None:
    logits = torch.tensor([[1.0, 0.0]]).expand(4000, 2)
    generator = torch.Generator().manual_seed(1)
    cold = choose_token(logits, Sampling(do_sample=True, temperature=0.25), generator).float().mean()
    warm = choose_token(logits, Sampling(do_sample=True, temperature=4.0), generator).float().mean()
    # P(token 1) = sigmoid(-1/T): 0.018 cold, 0.438 warm
    assert cold < 0.05 and 0.38 < warm < 0.5


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(do_sample=True, temperature=1e-40),
        Sampling(do_sample=True, temperature=5e-324),  # the smallest double: 0 in float32
        Sampling(do_sample=True, top_p=1e-50),  # 0 in float32
        Sampling(do_sample=True, temperature=1e-30, top_k=3, top_p=1e-45),
    ],
    ids=["temperature-1e-40", "temperature-5e-324", "top_p-1e-50", "all-tiny"],
)
def test_degenerate_but_valid_parameters_pick_the_best_token(sampling) -> None:
    """Tiny temperatures and nucleus sizes are the greedy limit, not NaN probabilities."""
    logits = torch.tensor([[1.0, 3.0, 2.5, -1.0], [0.5, -2.0, 0.0, 7.0]])
    chosen = choose_token(logits, sampling, torch.Generator().manual_seed(0))
    assert chosen.tolist() == [1, 3]


def test_a_tiny_repetition_penalty_keeps_logits_finite() -> None:
    logits = torch.tensor([2.0, -2.0, 3.0])
    out = penalize_repetition(logits, torch.tensor([True, True, False]), 1e-320)  # 0 in float32
    assert torch.isfinite(out).all() and out[0] > out[2]


def test_non_finite_logits_never_reach_multinomial() -> None:
    logits = torch.tensor([[float("nan")] * 4, [0.0, float("inf"), 1.0, float("nan")]])
    chosen = choose_token(logits, Sampling(do_sample=True), torch.Generator().manual_seed(0))
    assert chosen.shape == (2,) and all(0 <= c < 4 for c in chosen.tolist())


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(max_new_tokens=6, do_sample=True, temperature=5e-324, seed=1),
        Sampling(max_new_tokens=6, do_sample=True, top_p=1e-50, seed=1),
        Sampling(max_new_tokens=6, repetition_penalty=1e-320),
        Sampling(max_new_tokens=6, do_sample=True, temperature=100, repetition_penalty=1e-320, seed=1),
    ],
)
def test_degenerate_parameters_stream_finite_log_probabilities(decoder, sampling) -> None:
    tokens = list(stream_tokens(decoder, tiny_tokenizer(), [1, 7, 9], sampling))
    assert len(tokens) >= 1
    assert all(math.isfinite(t.logprob) and t.logprob <= 0 for t in tokens)


# ---- the stream -----------------------------------------------------------------------------------------------
def test_greedy_equals_an_argmax_loop_over_full_forwards(decoder) -> None:
    tokenizer = tiny_tokenizer()
    prompt = [1, 7, 9, 11]
    config = decoder.config
    stream = list(stream_tokens(decoder, tokenizer, prompt, Sampling(max_new_tokens=12)))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(len(stream)):
            ids.append(int(decoder(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == config.eos_token_id:
                break
    assert [t.id for t in stream] == ids[len(prompt) :]
    with torch.no_grad():
        expected_logprob = torch.log_softmax(decoder(torch.tensor([ids[:-1]])).logits[0, -1], -1)[ids[-1]]
    assert stream[-1].logprob == pytest.approx(float(expected_logprob), abs=1e-4)


class SteeredDecoder(torch.nn.Module):
    """The fixture decoder with the end token's logit forced: -inf always, or +inf from step ``eos_at`` on."""

    def __init__(self, decoder: Decoder, eos_at: int | None) -> None:
        super().__init__()
        self.inner, self.config, self.eos_at, self.steps = decoder, decoder.config, eos_at, 0

    def new_cache(self):
        return self.inner.new_cache()

    def next_logits(self, ids, cache):
        logits = self.inner.next_logits(ids, cache).clone()
        forced = self.eos_at is not None and self.steps >= self.eos_at
        logits[:, self.config.eos_token_id] = float("inf") if forced else float("-inf")
        self.steps += 1
        return logits


def test_max_new_tokens_is_respected_and_reported(decoder) -> None:
    steered = SteeredDecoder(decoder, eos_at=None)
    tokens = list(stream_tokens(steered, tiny_tokenizer(), [1, 5], Sampling(max_new_tokens=5)))
    assert len(tokens) == 5
    assert [t.finish_reason for t in tokens] == [None] * 4 + ["length"]


def test_generation_stops_at_max_len(decoder) -> None:
    steered = SteeredDecoder(decoder, eos_at=None)
    prompt = [1] + [5] * 59  # 60 of max_len 64
    tokens = list(stream_tokens(steered, tiny_tokenizer(), prompt, Sampling(max_new_tokens=50)))
    assert len(tokens) == 4 and tokens[-1].finish_reason == "length"


def test_eos_token_ends_the_stream_as_a_special_token(decoder) -> None:
    steered = SteeredDecoder(decoder, eos_at=3)
    tokens = list(stream_tokens(steered, tiny_tokenizer(), [1, 5], Sampling(max_new_tokens=30)))
    assert len(tokens) == 4
    assert tokens[-1].id == 2 and tokens[-1].special and tokens[-1].finish_reason == "eos_token"
    assert tokens[-1].text == "[EOS]"
    assert all(not t.special and t.finish_reason is None for t in tokens[:-1])


def test_seed_reproduces_samples_and_different_seeds_differ(decoder) -> None:
    tokenizer = tiny_tokenizer()

    def sample(seed: int) -> list[int]:
        sampling = Sampling(max_new_tokens=20, do_sample=True, temperature=3.0, seed=seed)
        return [t.id for t in stream_tokens(decoder, tokenizer, [1, 5], sampling)]

    assert sample(3) == sample(3)
    assert len({tuple(sample(s)) for s in range(4)}) > 1


def test_stop_sequence_ends_the_stream(decoder) -> None:
    tokenizer, steered = tiny_tokenizer(), SteeredDecoder(decoder, eos_at=None)
    free = list(stream_tokens(steered, tokenizer, [1, 5], Sampling(max_new_tokens=8)))
    words = [t.text.strip() for t in free]
    stop = words[2]
    first = words.index(stop)
    tokens = list(stream_tokens(steered, tokenizer, [1, 5], Sampling(max_new_tokens=8, stop=(stop,))))
    assert len(tokens) == first + 1
    assert tokens[-1].finish_reason == "stop_sequence"
    assert generate_text(steered, tokenizer, [1, 5], Sampling(max_new_tokens=8, stop=[stop])).endswith(stop)


def test_repetition_penalty_changes_the_stream(decoder) -> None:
    tokenizer = tiny_tokenizer()
    plain = [t.id for t in stream_tokens(decoder, tokenizer, [1, 5], Sampling(max_new_tokens=16))]
    penalized = [
        t.id
        for t in stream_tokens(
            decoder, tokenizer, [1, 5], Sampling(max_new_tokens=16, repetition_penalty=50.0)
        )
    ]
    assert len(set(penalized)) >= len(set(plain))
    assert plain != penalized


@pytest.mark.parametrize("prompt", [[], [99], list(range(1, 65))])
def test_bad_prompts_raise_clear_errors(decoder, prompt) -> None:
    with pytest.raises(ValueError, match="^prompt_ids:"):
        list(stream_tokens(decoder, tiny_tokenizer(), prompt, Sampling()))


class ScriptedDecoder(torch.nn.Module):
    """Emits a fixed list of ids, whatever the input: tests the text side of the stream exactly."""

    def __init__(self, script: list[int], vocab_size: int) -> None:
        super().__init__()
        self.script, self.step = script, 0
        self.config = DecoderConfig(
            vocab_size=vocab_size, d_model=8, n_layers=1, n_heads=1, d_ff=8, max_len=256
        )
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def new_cache(self):
        self.step = 0
        return []

    def next_logits(self, ids, cache):
        logits = torch.zeros(1, self.config.vocab_size)
        logits[0, self.script[self.step]] = 10.0
        self.step += 1
        return logits


def test_byte_level_text_is_streamed_whole_characters_only() -> None:
    from tokenizers import decoders, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["el perro come pan", "la casa es grande"], trainer)
    text = " año, señor ñandú: ¿qué tal? 😀"
    script = tokenizer.encode(text).ids
    assert any("\ufffd" in tokenizer.decode([i]) for i in script)  # some tokens are half a character
    prompt = tokenizer.encode("el perro").ids
    model = ScriptedDecoder(script, tokenizer.get_vocab_size())
    tokens = list(stream_tokens(model, tokenizer, prompt, Sampling(max_new_tokens=len(script))))
    assert [t.id for t in tokens] == script
    assert all("\ufffd" not in t.text for t in tokens)
    assert "".join(t.text for t in tokens) == text
    stopped = list(
        stream_tokens(model, tokenizer, prompt, Sampling(max_new_tokens=len(script), stop=["ñandú"]))
    )
    assert stopped[-1].finish_reason == "stop_sequence"
    assert "".join(t.text for t in stopped).endswith("ñandú")


def test_the_consumer_does_not_run_in_inference_mode(decoder) -> None:
    modes = [
        torch.is_inference_mode_enabled()
        for _ in stream_tokens(decoder, tiny_tokenizer(), [1, 5], Sampling(max_new_tokens=3))
    ]
    assert modes == [False, False, False]


# ---- stop strings that span tokens ------------------------------------------------------------------------------
def _pieces_tokenizer() -> Tokenizer:
    """Tokens are text pieces joined as they are, so a stop string can start inside one token and end in another."""
    from tokenizers import decoders

    pieces = ["<pad>", "<s>", "</s>", "he", "llo", " wo", "rld", "!", "l"]
    tokenizer = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<pad>"))
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(pieces[:3])
    return tokenizer


def _feed(script: list[str], sampling: Sampling) -> list[list]:
    """What ``TokenText.accept`` releases after each token of ``script``."""
    from modeling.generation import TokenText

    tokenizer = _pieces_tokenizer()
    config = DecoderConfig(vocab_size=9, d_model=8, n_layers=1, n_heads=1, d_ff=8, max_len=64, eos_token_id=2)
    text = TokenText(tokenizer, [1], sampling, config, budget=len(script))
    released = []
    for piece in script:
        if text.done:  # the engine and stream_tokens stop feeding here
            break
        released.append(text.accept(tokenizer.token_to_id(piece), -1.0))
    return released


def test_a_stop_string_split_across_tokens_never_shows_early() -> None:
    released = _feed(["he", "llo", " wo", "rld"], Sampling(stop=("lo wo",)))
    assert [[t.text for t in r] for r in released[:3]] == [["he"], [], ["llo", " wo"]]  # "llo" held, then cut
    assert released[2][-1].finish_reason == "stop_sequence"
    openai = _feed(["he", "llo", " wo", "rld"], Sampling(stop=("lo wo",), stop_in_text=False))
    assert (
        "".join(t.text for r in openai for t in r) == "hel" and openai[2][-1].finish_reason == "stop_sequence"
    )


def test_a_held_prefix_that_is_no_stop_goes_out_with_the_next_token() -> None:
    released = _feed(["he", "llo", "!", "l"], Sampling(stop=("lo wo",)))
    assert [[t.text for t in r] for r in released] == [["he"], [], ["llo", "!"], ["l"]]
    assert released[-1][-1].finish_reason == "length"  # the budget flushes what is held


def test_the_end_token_flushes_held_text() -> None:
    released = _feed(["llo", "</s>"], Sampling(stop=("lo wo",)))
    assert released[0] == [] and [t.text for t in released[1]] == ["llo", "</s>"]
    assert released[1][-1].finish_reason == "eos_token" and released[1][-1].special


def test_text_after_the_stop_string_is_dropped() -> None:
    released = _feed(["he", "llo", " wo"], Sampling(stop=("hel",)))
    assert [t.text for r in released for t in r] == ["he", "l"] and released[1][
        -1
    ].finish_reason == "stop_sequence"
