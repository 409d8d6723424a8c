"""Text generation as a stream of tokens: greedy, temperature, top-k, top-p, repetition penalty, seed, stop.

One decode step turns the last position's logits into a token:

1. repetition penalty (Keskar et al. 2019, CTRL): a token already in the prompt or the output has its logit
   divided by ``penalty`` if positive, multiplied by it if negative;
2. greedy: the argmax; sampling: divide by the temperature, keep the ``top_k`` largest logits (Fan et al.
   2018), keep the smallest set of tokens whose probability sums to ``top_p`` (Holtzman et al. 2020), draw
   one from what is left with the seeded generator.

The loop is a bare ``for`` under ``torch.inference_mode()``: the prompt fills the KV cache once, then each
token is one forward of length 1 and logits are computed for the last position only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor

from modeling.logprobs import log_probs, token_logprob


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token. Invalid values raise ``ValueError`` starting with the field's name."""

    max_new_tokens: int = 64
    do_sample: bool = False  # False: greedy (temperature, top_k, top_p and seed are ignored)
    temperature: float = 1.0  # > 0; < 1 sharpens, > 1 flattens the distribution
    top_k: int | None = None  # keep only the k most likely tokens
    top_p: float | None = None  # keep the smallest set of tokens with total probability >= top_p
    repetition_penalty: float = 1.0  # 1.0: off; > 1 discourages tokens already seen (CTRL)
    seed: int | None = None  # None: torch's global generator
    stop: tuple[str, ...] = ()  # stop once the generated text contains one of these strings

    def __post_init__(self) -> None:
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        _check(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1")
        _check(isinstance(self.do_sample, bool), "do_sample", "true or false")
        _check(_is_real(self.temperature) and self.temperature > 0, "temperature", "a number > 0")
        _check(self.top_k is None or (_is_int(self.top_k) and self.top_k >= 1), "top_k", "an integer >= 1")
        _check(self.top_p is None or (_is_real(self.top_p) and 0 < self.top_p <= 1), "top_p", "in (0, 1]")
        _check(
            _is_real(self.repetition_penalty) and self.repetition_penalty > 0,
            "repetition_penalty",
            "a number > 0",
        )
        _check(self.seed is None or _is_int(self.seed), "seed", "an integer")
        _check(
            isinstance(self.stop, tuple) and all(isinstance(s, str) and s for s in self.stop),
            "stop",
            "a list of non-empty strings",
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _check(condition: bool, field: str, wanted: str) -> None:
    if not condition:
        raise ValueError(f"{field}: must be {wanted}")


@dataclass(frozen=True)
class GeneratedToken:
    """One streamed token. ``logprob`` is the model's own log-probability of it (after the repetition penalty,
    before temperature and truncation); ``top``: the ``top_n`` most likely (id, log-probability) at its step,
    on the same scale, best first; ``finish_reason`` is set on the last token only."""

    id: int
    text: str
    logprob: float
    special: bool
    finish_reason: str | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


# ---- one step: logits -> token -------------------------------------------------------------------------------
def penalize_repetition(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty on already-seen tokens: ``l / p`` where ``l > 0``, ``l * p`` otherwise. (…, V)."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    big = torch.finfo(logits.dtype).max  # a penalty near 0 (or huge) must not overflow a logit to ±inf
    return torch.where(seen, penalized.clamp(-big, big), logits)


def keep_top_k(logits: Tensor, k: int) -> Tensor:
    """Set every logit below the k-th largest to -inf (ties with the k-th are kept). (…, V)."""
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (…, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def keep_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus: keep the most likely tokens until their probability reaches ``p`` (always at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (…, V)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # drop a token when the tokens before it already reach p
    drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= p
    drop_sorted[..., 0] = False  # the most likely token stays, even for a p that rounds to 0
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_token(logits: Tensor, sampling: Sampling, generator: torch.Generator | None) -> Tensor:
    """Greedy argmax, or a draw from the tempered, truncated distribution. (B, V) -> (B,) long.

    Any temperature > 0 works, however small: the best logit is shifted to 0 before dividing, so the scaled
    row is 0 at the best token and ≤ 0 (possibly -inf) elsewhere, never inf - inf. A row that still has no
    finite probability (non-finite logits) falls back to its argmax, so NaN never reaches ``multinomial``.
    """
    if not sampling.do_sample:
        return logits.argmax(dim=-1)
    logits = logits.float()
    temperature = max(sampling.temperature, torch.finfo(logits.dtype).tiny)  # 5e-324 is 0 in float32
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature  # (B, V), max 0
    if sampling.top_k is not None:
        logits = keep_top_k(logits, sampling.top_k)
    if sampling.top_p is not None:
        logits = keep_top_p(logits, sampling.top_p)
    probs = logits.softmax(dim=-1).nan_to_num(nan=0.0)  # (B, V)
    usable = probs.sum(dim=-1, keepdim=True) > 0  # (B, 1)
    fallback = F.one_hot(logits.nan_to_num(nan=float("-inf")).argmax(dim=-1), probs.size(-1)).to(probs.dtype)
    probs = torch.where(usable, probs, fallback)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


# ---- the stream -----------------------------------------------------------------------------------------------
class _Detokenizer:
    """Incremental text with constant work per token: decode a short window of ids twice, emit the difference.

    ``prefix`` ids are those whose text was already emitted (kept so that a tokenizer's decoder sees the
    context, e.g. the space before a word); ``read`` marks where the not-yet-emitted ids start. Text ending
    in U+FFFD is half a UTF-8 character (byte-level BPE): held back until the rest arrives.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = prompt_ids[-4:]
        self.prefix, self.read = 0, len(self.ids)
        self.text = ""  # the generated text so far, special tokens left out

    def add(self, token_id: int, final: bool) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if not final and (len(after) <= len(before) or after.endswith("\ufffd")):
            return ""
        new = after[len(before) :]
        self.prefix, self.read = self.read, len(self.ids)
        self.text += new
        return new


def special_ids(tokenizer: Tokenizer) -> set[int]:
    return {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}


def stream_tokens(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    sampling: Sampling,
    top_n: int = 0,
) -> Iterator[GeneratedToken]:
    """Continue ``prompt_ids`` with ``model`` (a ``Decoder``), yielding one ``GeneratedToken`` per new token
    (with the ``top_n`` most likely alternatives at each step).

    Stops at the end-of-sequence token ("eos_token"), once the text contains a stop string
    ("stop_sequence"), or after ``max_new_tokens`` or at the model's ``max_len`` ("length").
    """
    prompt_ids = [int(i) for i in prompt_ids]
    config = model.config
    if not prompt_ids:
        raise ValueError("prompt_ids: the prompt is empty; start it with the BOS token at least")
    if any(not 0 <= i < config.vocab_size for i in prompt_ids):
        raise ValueError(f"prompt_ids: token ids must be in [0, {config.vocab_size})")
    if len(prompt_ids) >= config.max_len:
        raise ValueError(f"prompt_ids: {len(prompt_ids)} tokens leave no room under max_len {config.max_len}")
    generator = None
    if sampling.do_sample and sampling.seed is not None:
        generator = torch.Generator().manual_seed(sampling.seed)
    budget = min(sampling.max_new_tokens, config.max_len - len(prompt_ids))
    specials = special_ids(tokenizer)
    detokenizer = _Detokenizer(tokenizer, prompt_ids)
    longest_stop = max((len(s) for s in sampling.stop), default=0)
    device = next(model.parameters()).device

    # inference mode is entered per step, never held across a yield: the consumer runs in its own mode
    with torch.inference_mode():
        cache = model.new_cache()
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
        seen = torch.zeros(config.vocab_size, dtype=torch.bool, device=device)
        seen[ids[0]] = True
    for step in range(budget):
        with torch.inference_mode():
            logits = model.next_logits(ids, cache)[0].float()  # (V,)
            logits = penalize_repetition(logits, seen, sampling.repetition_penalty)
            token = choose_token(logits[None], sampling, generator)  # (1,)
            token_id = int(token)
            scored = token_logprob(log_probs(logits), token_id, top_n)
            seen[token_id] = True
        special = token_id in specials
        finish = "eos_token" if token_id == config.eos_token_id else None
        if special:
            text = tokenizer.id_to_token(token_id) or ""
        else:
            text = detokenizer.add(token_id, final=step == budget - 1)
            tail = detokenizer.text[-(len(text) + longest_stop) :] if text else ""
            if any(stop in tail for stop in sampling.stop):
                finish = "stop_sequence"
        if finish is None and step == budget - 1:
            finish = "length"
        yield GeneratedToken(token_id, text, scored.logprob, special, finish, scored.top)
        if finish is not None:
            return
        ids = token.view(1, 1)  # (1, 1)


def generate_text(
    model: torch.nn.Module, tokenizer: Tokenizer, prompt_ids: list[int], sampling: Sampling
) -> str:
    """The whole continuation as one string (special tokens left out)."""
    return "".join(t.text for t in stream_tokens(model, tokenizer, prompt_ids, sampling) if not t.special)
