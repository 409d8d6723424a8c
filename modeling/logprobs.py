"""Log-probabilities of tokens: the prompt's own (scoring, ``echo``) and the top-N alternatives at each step.

A causal LM's logits at position t are its distribution over token t + 1, so one forward pass over a prompt
``x_0 … x_{T-1}`` scores every token but the first::

    logprob(x_t | x_<t) = log_softmax(logits[t - 1])[x_t]        t = 1 … T - 1

(the first token has no context, hence no log-probability: ``None``). The same row also gives the N most
likely alternatives, which is what OpenAI's ``logprobs`` / ``top_logprobs`` and TGI's ``top_n_tokens`` report.
Log-softmax is taken in float32 whatever the model's dtype, so a token's log-probability and the best
alternative's are the same float when the token is the argmax (evaluation harnesses test greediness that way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability and the ``top`` (id, log-probability) alternatives at its position, best
    first (the token itself among them when it is one of the N most likely)."""

    id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


LOWEST_LOGPROB = float(torch.finfo(torch.float32).min)  # stands for -inf and NaN: JSON has neither


def log_probs(logits: Tensor) -> Tensor:
    """``(…, V)`` logits → float32 log-probabilities over the vocabulary, always finite."""
    return logits.float().log_softmax(dim=-1).nan_to_num(nan=LOWEST_LOGPROB, neginf=LOWEST_LOGPROB)


def top_alternatives(logprobs: Tensor, n: int) -> tuple[tuple[int, float], ...]:
    """The ``n`` most likely tokens of one ``(V,)`` row of log-probabilities, best first."""
    if n <= 0:
        return ()
    values, ids = torch.topk(logprobs, min(n, logprobs.size(-1)))  # (n,), (n,)
    return tuple(zip(ids.tolist(), values.tolist(), strict=True))


def token_logprob(logprobs: Tensor, token_id: int, n: int = 0) -> TokenLogprob:
    """``token_id``'s entry in one ``(V,)`` row of log-probabilities, with the ``n`` best alternatives."""
    return TokenLogprob(int(token_id), float(logprobs[token_id]), top_alternatives(logprobs, n))


@torch.inference_mode()
def prompt_logprobs(model: torch.nn.Module, ids: list[int], n: int = 0) -> list[TokenLogprob | None]:
    """Score ``ids`` with one forward of ``model`` (a ``Decoder``): ``None`` for the first token, then each
    token's log-probability given the ones before it, with the ``n`` best alternatives at its position."""
    if not ids:
        raise ValueError("ids: nothing to score")
    device = next(model.parameters()).device
    tokens = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    logits = model(tokens).logits[0, :-1]  # (T - 1, V): row t predicts token t + 1
    rows = log_probs(logits).cpu()  # (T - 1, V)
    scored: list[TokenLogprob | None] = [None]
    for t in range(1, len(ids)):
        scored.append(token_logprob(rows[t - 1], ids[t], n))
    return scored
