"""Translating with an encoder–decoder: greedy decoding and beam search over the cached decoder.

The source is encoded once; every step feeds only the newest target token through the self-attention KV cache
and reuses the cross-attention keys/values (``Translator.start_cache``).

- ``greedy``: the most probable next token each step, a batch of sources at once; a row stops at ``eos``.
- ``beam_search`` (Sutskever et al. 2014; Wu et al. 2016): keep the ``num_beams`` best live partial
  translations per source by summed log-probability and a pool of finished ones; the winner maximises
  ``score / length ** length_penalty`` (Hugging Face's convention: > 0 favours longer outputs, < 0 shorter,
  0 none). With one beam and no length penalty this is exactly greedy decoding.

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
    no_repeat_ngram_size: int = 0,
) -> list[list[int]]:
    """The best of ``num_beams`` hypotheses for each source row ``source_ids (B, S)``; with
    ``no_repeat_ngram_size`` n > 0 no hypothesis repeats an n-gram of its own tokens.

    Each step extends the K live hypotheses of a source by every token and keeps the 2K best; those ending in
    ``eos`` among the first K join the source's finished pool (scored ``sum log p / length ** length_penalty``,
    ``eos`` counted), the best K others stay live. A source is done when its pool holds K hypotheses and no
    live one can beat the worst of them (Hugging Face's rule); at the end the best of pool and live wins.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0, got {no_repeat_ngram_size}")
    steps = _check(model, source_ids, max_new_tokens)
    c = model.config
    B, K = source_ids.shape[0], num_beams
    device = source_ids.device
    memory, _ = model.encode(source_ids, source_mask)
    cache = model.start_cache(memory, source_mask)
    cache = cache.select(torch.arange(B, device=device).repeat_interleave(K))  # B·K rows, a source's adjacent
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # at the start the K beams are identical: keep one
    tokens = torch.full((B * K, 1), c.bos_token_id, dtype=torch.long, device=device)  # (B·K, 1)
    history: list[list[int]] = [[] for _ in range(B * K)]
    pools: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B

    def normalised(score: float, length: int) -> float:
        return score / max(length, 1) ** length_penalty

    for step in range(steps):
        logprobs = model.step(tokens, cache).float().log_softmax(-1)  # (B·K, V)
        if no_repeat_ngram_size:
            for row, banned in enumerate(repeated_ngram_tokens(history, no_repeat_ngram_size)):
                if banned:
                    logprobs[row, banned] = float("-inf")
        V = logprobs.shape[-1]
        candidates = (scores[..., None] + logprobs.view(B, K, V)).view(B, K * V)  # (B, K·V)
        top, flat = candidates.topk(min(2 * K, K * V), dim=-1)  # (B, 2K)
        top, flat = top.tolist(), flat.tolist()
        rows, next_tokens, next_scores = [], [], []
        for b in range(B):
            live: list[tuple[int, int, float]] = []
            if not done[b]:
                for rank, (score, index) in enumerate(zip(top[b], flat[b], strict=True)):
                    if score == float("-inf"):
                        break
                    parent, token = b * K + index // V, index % V
                    if token == c.eos_token_id:
                        if rank < K:
                            pools[b].append((normalised(score, step + 1), history[parent]))
                    else:
                        live.append((parent, token, score))
                    if len(live) == K:
                        break
                pool = sorted(pools[b], key=lambda h: h[0], reverse=True)[:K]
                pools[b] = pool
                if len(pool) == K and (not live or normalised(live[0][2], step + 1) <= pool[-1][0]):
                    done[b] = True
            live += [(b * K, c.eos_token_id, float("-inf"))] * (K - len(live))  # placeholders, never chosen
            for parent, token, score in live:
                rows.append(parent)
                next_tokens.append(token)
                next_scores.append(score if not done[b] else float("-inf"))
        history = [history[r] + [t] for r, t in zip(rows, next_tokens, strict=True)]
        if all(done):
            break
        index = torch.tensor(rows, device=device)
        cache = cache.select(index)
        tokens = torch.tensor(next_tokens, device=device).view(-1, 1)  # (B·K, 1)
        scores = torch.tensor(next_scores, device=device).view(B, K)
    out = []
    for b in range(B):
        hypotheses = list(pools[b])
        for k in range(K):  # live hypotheses that ran out of steps
            score = float(scores[b, k])
            if not done[b] and score != float("-inf"):
                hypotheses.append((normalised(score, len(history[b * K + k])), history[b * K + k]))
        out.append(max(hypotheses, key=lambda h: h[0])[1] if hypotheses else [])
    return out


def repeated_ngram_tokens(histories: list[list[int]], n: int) -> list[list[int]]:
    """For each token history, the tokens that would complete an n-gram it already holds (Paulus et al. 2018's
    trigram blocking, Hugging Face's ``no_repeat_ngram_size``)."""
    banned = []
    for ids in histories:
        if len(ids) < n:
            banned.append([])
            continue
        prefix = tuple(ids[len(ids) - n + 1 :])
        banned.append(
            [ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix]
        )
    return banned


def translate(
    model: Translator,
    tokenizer: Any,
    texts: list[str],
    *,
    num_beams: int = 1,
    max_new_tokens: int = 128,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
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
        if (
            num_beams == 1 and not no_repeat_ngram_size
        ):  # one beam is greedy decoding, without reordering caches
            ids = greedy(model, source, mask, max_new_tokens=max_new_tokens)
        else:
            ids = beam_search(
                model, source, mask, num_beams=num_beams, length_penalty=length_penalty,
                max_new_tokens=max_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size,
            )  # fmt: skip
        for i, row_ids in zip(rows, ids, strict=True):
            out[i] = tokenizer.decode(row_ids, skip_special_tokens=True).strip()
    return out
