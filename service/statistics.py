"""Per-head attention statistics, after Clark et al. 2019 ("What does BERT look at?").

All statistics are computed in float32 from the model's probabilities (never from the quantised payload), and
each is an average over the query rows where it is defined:

- ``entropy``: ``-Σ_k A[q,k] ln A[q,k]``; ``max_entropy``: ``ln(#keys the layout allows in row q)`` — for a
  causal or sparse layout that is not ``ln n``; ``normalised_entropy``: their ratio over rows with > 1 key
  (1 = uniform over what the head may see, 0 = one key).
- ``distance``: mean attention distance ``Σ_k A[q,k]·|q−k|`` in tokens (local vs global heads).
- ``self`` / ``previous`` / ``next``: ``A[q,q]``, ``A[q,q−1]``, ``A[q,q+1]`` (positional heads).
- ``special``: mass on special tokens ([CLS], [SEP], …; the "no-op" sink of Clark et al.);
  ``punctuation``: mass on punctuation tokens (Spanish ``¿ ? ¡ ! ; :`` included, see ``is_punctuation``).
- ``allowed_keys``: the mean number of keys a query may see (the layout's density per row).
"""

from __future__ import annotations

import math
import unicodedata

import torch
from torch import Tensor


def is_punctuation(surface: str) -> bool:
    """True when a token's surface text is only punctuation (Unicode category P*: . , ¿ ? ¡ ! ; : « » …)."""
    stripped = surface.strip()
    return bool(stripped) and all(unicodedata.category(c).startswith("P") for c in stripped)


def _mean(values: Tensor, where: Tensor) -> Tensor:
    """Mean over the last dim of ``values`` (H, T) restricted to ``where`` (T,); NaN-free (0 if empty)."""
    count = where.sum()
    if count == 0:
        return torch.zeros(values.shape[0])
    return (values * where).sum(-1) / count


def head_statistics(probs: Tensor, allowed: Tensor, special: Tensor, punctuation: Tensor) -> list[dict]:
    """Statistics of every head of one layer.

    probs: (H, T, S) attention probabilities (rows sum to 1 over allowed keys); allowed: (H, T, S) bool,
    the layout's token mask; special, punctuation: (S,) bool flags of the keys. Queries are the last T keys.
    Returns one dict of floats per head.
    """
    A = probs.detach().to(torch.float32).cpu()  # (H, T, S)
    allowed = allowed.cpu()
    H, T, S = A.shape
    offset = S - T
    q = torch.arange(T) + offset  # absolute position of each query row
    k = torch.arange(S)
    every = torch.ones(T, dtype=torch.bool)

    plogp = torch.where(A > 0, A * A.clamp_min(1e-30).log(), torch.zeros(()))
    entropy = -plogp.sum(-1)  # (H, T)
    keys = allowed.sum(-1).to(torch.float32)  # (H, T)
    max_entropy = keys.clamp_min(1).log()  # (H, T)
    wide = keys > 1  # (H, T): rows where entropy can be non-zero
    ratio = torch.where(wide, entropy / max_entropy.clamp_min(1e-30), torch.zeros(()))
    wide_rows = wide.sum(-1).clamp_min(1)

    distance = (A * (q[:, None] - k[None, :]).abs().to(torch.float32)).sum(-1)  # (H, T)
    diagonal = A[:, torch.arange(T), q]  # (H, T)
    previous = torch.zeros(H, T)
    previous[:, q >= 1] = A[:, (q >= 1).nonzero().squeeze(1), q[q >= 1] - 1]
    nxt = torch.zeros(H, T)
    has_next = q + 1 < S
    nxt[:, has_next] = A[:, has_next.nonzero().squeeze(1), q[has_next] + 1]

    to_special = (A * special.to(torch.float32)).sum(-1)  # (H, T)
    to_punct = (A * punctuation.to(torch.float32)).sum(-1)  # (H, T)

    columns = {
        "entropy": _mean(entropy, every),
        "max_entropy": _mean(max_entropy, every),
        "normalised_entropy": (ratio * wide).sum(-1) / wide_rows,
        "distance": _mean(distance, every),
        "self": _mean(diagonal, every),
        "previous": _mean(previous, q >= 1),
        "next": _mean(nxt, has_next),
        "special": _mean(to_special, every),
        "punctuation": _mean(to_punct, every),
        "allowed_keys": _mean(keys, every),
    }
    return [
        {name: _finite(float(values[h])) for name, values in columns.items()} | {"head": h} for h in range(H)
    ]


def _finite(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else 0.0
