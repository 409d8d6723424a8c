"""Translating with an encoder–decoder: greedy decoding and beam search over the cached decoder.

The source is encoded once; every step feeds only the newest target token through the self-attention KV cache
and reuses the cross-attention keys/values (``Translator.start_cache``).

- ``greedy``: the most probable next token each step, a batch of sources at once; a row stops at ``eos``.
- ``beam_search`` (Sutskever et al. 2014; Wu et al. 2016): keep the ``num_beams`` best partial translations per
  source by summed log-probability; a finished hypothesis keeps its score and competes with the unfinished
  ones. The winner maximises ``score / length ** length_penalty`` (Hugging Face's convention: > 0 favours
  longer outputs, < 0 shorter, 0 none). With one beam this is exactly greedy decoding.

Both return token ids without ``bos`` and without the final ``eos``; ``translate`` goes from texts to texts
(the source is ``x₁ … xₘ </s>``, as in training).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from modeling.translator import Translator


def _check(model: Translator, source_ids: Tensor, max_new_tokens: int) -> int:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if source_ids.dim() != 2:
        raise ValueError(f"source_ids must be (B, S), got {tuple(source_ids.shape)}")
    return min(max_new_tokens, model.config.max_len - 1)


@torch.inference_mode()
def greedy(
    model: Translator, source_ids: Tensor, source_mask: Tensor | None = None, max_new_tokens: int = 64
) -> list[list[int]]:
    """The argmax translation of each source row ``source_ids (B, S)``."""
    steps = _check(model, source_ids, max_new_tokens)
    c = model.config
    B = source_ids.shape[0]
    memory, _ = model.encode(source_ids, source_mask)
    cache = model.start_cache(memory, source_mask)
    token = torch.full((B, 1), c.bos_token_id, dtype=torch.long, device=source_ids.device)  # (B, 1)
    done = torch.zeros(B, dtype=torch.bool, device=source_ids.device)
    out: list[list[int]] = [[] for _ in range(B)]
    for _ in range(steps):
        token = model.step(token, cache).argmax(-1, keepdim=True)  # (B, 1)
        for row in (~done).nonzero().flatten().tolist():
            if int(token[row]) != c.eos_token_id:
                out[row].append(int(token[row]))
        done |= token[:, 0] == c.eos_token_id
        if bool(done.all()):
            break
    return out


@torch.inference_mode()
def beam_search(
    model: Translator,
    source_ids: Tensor,
    source_mask: Tensor | None = None,
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    max_new_tokens: int = 64,
) -> list[list[int]]:
    """The best of ``num_beams`` hypotheses for each source row ``source_ids (B, S)``."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    steps = _check(model, source_ids, max_new_tokens)
    c = model.config
    B, K = source_ids.shape[0], num_beams
    device = source_ids.device
    memory, _ = model.encode(source_ids, source_mask)
    cache = model.start_cache(memory, source_mask)
    cache = cache.select(
        torch.arange(B, device=device).repeat_interleave(K)
    )  # B·K rows, beams of a source adjacent
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # at the start the K beams are identical: keep one
    tokens = torch.full((B * K, 1), c.bos_token_id, dtype=torch.long, device=device)  # (B·K, 1)
    history = torch.empty(B * K, 0, dtype=torch.long, device=device)  # (B·K, t)
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)  # tokens produced, eos included
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    for _ in range(steps):
        logprobs = model.step(tokens, cache).float().log_softmax(-1)  # (B·K, V)
        V = logprobs.shape[-1]
        logprobs = logprobs.view(B, K, V)
        # a finished beam has one continuation: itself, unchanged (it repeats eos at no cost)
        stay = torch.full_like(logprobs, float("-inf"))
        stay[..., c.eos_token_id] = 0.0
        logprobs = torch.where(finished[..., None], stay, logprobs)
        candidates = (scores[..., None] + logprobs).view(B, K * V)  # (B, K·V)
        scores, flat = candidates.topk(K, dim=-1)  # (B, K)
        beam, token = flat // V, flat % V  # (B, K) each
        rows = (beam + torch.arange(B, device=device)[:, None] * K).view(-1)  # (B·K,) parent rows
        was_finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_finished).long()
        finished = was_finished | (token == c.eos_token_id)
        history = torch.cat((history[rows], token.view(-1, 1)), dim=1)  # (B·K, t + 1)
        if bool(finished.all()):
            break
        cache = cache.select(rows)
        tokens = token.view(-1, 1)
    normalised = scores / lengths.clamp(min=1).float() ** length_penalty  # (B, K)
    best = normalised.argmax(-1)  # (B,)
    out = []
    for b in range(B):
        ids = history[b * K + int(best[b])].tolist()
        out.append(ids[: ids.index(c.eos_token_id)] if c.eos_token_id in ids else ids)
    return out


def translate(
    model: Translator,
    tokenizer: Any,
    texts: list[str],
    *,
    num_beams: int = 1,
    max_new_tokens: int = 128,
    length_penalty: float = 1.0,
    batch_size: int = 32,
) -> list[str]:
    """Translate ``texts`` with a ``tokenizers.Tokenizer`` shared by both sides, in batches of similar length;
    a source longer than the model's ``max_len`` is cut. Beam 1 is greedy."""
    c = model.config
    device = next(model.parameters()).device
    encoded = [e.ids[: c.max_len - 1] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows) + 1
        source = torch.full((len(rows), width), c.pad_token_id, dtype=torch.long)  # (B, S)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)  # (B, S)
        for row, i in enumerate(rows):
            ids = encoded[i] + [c.eos_token_id]
            source[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = True
        source, mask = source.to(device), mask.to(device)
        if num_beams == 1:  # the same ids as beam_search with one beam (tested), without reordering caches
            ids = greedy(model, source, mask, max_new_tokens=max_new_tokens)
        else:
            ids = beam_search(
                model, source, mask, num_beams=num_beams, length_penalty=length_penalty,
                max_new_tokens=max_new_tokens,
            )  # fmt: skip
        for i, row_ids in zip(rows, ids, strict=True):
            out[i] = tokenizer.decode(row_ids, skip_special_tokens=True).strip()
    return out
