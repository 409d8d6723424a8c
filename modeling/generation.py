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
    stop_in_text: bool = True  # the text ends with the stop string (TGI) or just before it (OpenAI)

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
        _check(isinstance(self.stop_in_text, bool), "stop_in_text", "true or false")


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
    top_logprobs: tuple[tuple[int, float], ...] = ()  # the most likely (id, logprob) pairs, when asked for


# ---- one step: logits -> token -------------------------------------------------------------------------------
def penalize_repetition(logits: Tensor, seen: Tensor, penalty: float | Tensor) -> Tensor:
    """CTRL's penalty on already-seen tokens: ``l / p`` where ``l > 0``, ``l * p`` otherwise. (…, V);
    ``penalty`` a number or one per row ``(n, 1)`` (a penalty of 1 leaves a row exactly as it was)."""
    if isinstance(penalty, float | int) and penalty == 1.0:
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


def pick_tokens(
    logits: Tensor, seen: Tensor, samplings: list[Sampling], generators: list[torch.Generator | None]
) -> tuple[Tensor, Tensor]:
    """One step for n rows, each under its own settings: ``logits (n, V)``, ``seen (n, V)`` bool → the chosen
    ids ``(n,)`` and the log-probabilities ``(n, V)`` (after the repetition penalty, before temperature and
    truncation). Row r's result depends on row r alone: the same with 1 row or 32."""
    logits = logits.float()
    if any(s.repetition_penalty != 1.0 for s in samplings):
        penalty = logits.new_tensor([s.repetition_penalty for s in samplings])[:, None]  # (n, 1)
        logits = penalize_repetition(logits, seen, penalty)
    tokens = logits.argmax(dim=-1)  # (n,)
    for row, (sampling, generator) in enumerate(zip(samplings, generators, strict=True)):
        if sampling.do_sample:
            tokens[row] = choose_token(logits[row : row + 1], sampling, generator)[0]
    return tokens, log_probs(logits)  # finite: JSON has no -inf


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


def check_prompt(prompt_ids: list[int], config: object) -> list[int]:
    """The prompt as a list of ints, or a ValueError starting with ``prompt_ids:``."""
    prompt_ids = [int(i) for i in prompt_ids]
    if not prompt_ids:
        raise ValueError("prompt_ids: the prompt is empty; start it with the BOS token at least")
    if any(not 0 <= i < config.vocab_size for i in prompt_ids):
        raise ValueError(f"prompt_ids: token ids must be in [0, {config.vocab_size})")
    if len(prompt_ids) >= config.max_len:
        raise ValueError(f"prompt_ids: {len(prompt_ids)} tokens leave no room under max_len {config.max_len}")
    return prompt_ids


class TokenText:
    """One sequence's side after the token is chosen: its text, its stop strings and why it ends.

    ``accept`` takes each chosen token and returns the tokens that may be sent now, in order. A token whose text
    could be the start of a stop string is held back until the next tokens settle it, so a stop string split
    across tokens never shows part of itself early; once it is complete, the held tokens go out with the text
    cut after the stop string (``stop_in_text``) or before it, and the last carries ``stop_sequence``.
    Text after a stop string is dropped. Without stop strings nothing is ever held.
    """

    def __init__(
        self, tokenizer: Tokenizer, prompt_ids: list[int], sampling: Sampling, config: object, budget: int
    ) -> None:
        self.tokenizer, self.sampling, self.budget = tokenizer, sampling, budget
        self.eos = config.eos_token_id
        self.specials = special_ids(tokenizer)
        self.detokenizer = _Detokenizer(tokenizer, prompt_ids)
        self.held: list[GeneratedToken] = []
        self.steps = 0
        self.done = False

    def accept(
        self, token_id: int, logprob: float, top: tuple[tuple[int, float], ...] = ()
    ) -> list[GeneratedToken]:
        self.steps += 1
        last = self.steps >= self.budget
        special = token_id in self.specials
        if special:
            text = self.tokenizer.id_to_token(token_id) or ""
        else:
            text = self.detokenizer.add(token_id, final=last)
        finish = "eos_token" if token_id == self.eos else ("length" if last else None)
        self.held.append(GeneratedToken(token_id, text, logprob, special, None, top))
        stops = self.sampling.stop
        if stops and not special:
            pending = "".join(t.text for t in self.held if not t.special)
            found = [(pending.find(s), s) for s in stops if s in pending]
            if found:
                at, stop = min(found)
                return self._release(at + len(stop) if self.sampling.stop_in_text else at, "stop_sequence")
            if finish is None:
                keep = max((k for s in stops for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
                return self._release_before(len(pending) - keep)
        if finish is not None:
            return self._release(None, finish)
        return self._release_before(None)

    def _release(self, cut: int | None, finish: str) -> list[GeneratedToken]:
        """Every held token, the text cut to ``cut`` characters (None: whole), the last one finishing."""
        out, used = [], 0
        for token in self.held:
            text = token.text
            if cut is not None and not token.special:
                text = text[: max(0, cut - used)]
                used += len(token.text)
            out.append(GeneratedToken(token.id, text, token.logprob, token.special, None, token.top_logprobs))
        last = out[-1]
        out[-1] = GeneratedToken(last.id, last.text, last.logprob, last.special, finish, last.top_logprobs)
        self.held, self.done = [], True
        return out

    def _release_before(self, safe: int | None) -> list[GeneratedToken]:
        """The held tokens whose text lies wholly within the first ``safe`` characters (None: all)."""
        if safe is None:
            out, self.held = self.held, []
            return out
        out, used = [], 0
        while self.held and (self.held[0].special or used + len(self.held[0].text) <= safe):
            token = self.held.pop(0)
            used += 0 if token.special else len(token.text)
            out.append(token)
        return out


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
    config = model.config
    prompt_ids = check_prompt(prompt_ids, config)
    generator = None
    if sampling.do_sample and sampling.seed is not None:
        generator = torch.Generator().manual_seed(sampling.seed)
    budget = min(sampling.max_new_tokens, config.max_len - len(prompt_ids))
    text = TokenText(tokenizer, prompt_ids, sampling, config, budget)
    device = next(model.parameters()).device

    # inference mode is entered per step, never held across a yield: the consumer runs in its own mode
    with torch.inference_mode():
        cache = model.new_cache()
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
        seen = torch.zeros(1, config.vocab_size, dtype=torch.bool, device=device)
        seen[0, ids[0]] = True
    while not text.done:
        with torch.inference_mode():
            logits = model.next_logits(ids, cache)  # (1, V)
            token, logprobs = pick_tokens(logits, seen, [sampling], [generator])
            token_id = int(token[0])
            scored = token_logprob(logprobs[0], token_id, top_n)
            seen[0, token_id] = True
        yield from text.accept(token_id, scored.logprob, scored.top)
        ids = token.view(1, 1)  # (1, 1)


def generate_text(
    model: torch.nn.Module, tokenizer: Tokenizer, prompt_ids: list[int], sampling: Sampling
) -> str:
    """The whole continuation as one string (special tokens left out)."""
    return "".join(t.text for t in stream_tokens(model, tokenizer, prompt_ids, sampling) if not t.special)
