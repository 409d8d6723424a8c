"""An interpolated Kneser-Ney trigram (Kneser & Ney 1995; Chen & Goodman 1998), fully vectorised.

    P3(c|a,b) = max(C(abc) − D3, 0) / C(ab·)  +  D3 · N1+(ab·) / C(ab·) · P2(c|b)        (P2 if C(ab·) = 0)
    P2(c|b)   = max(N1+(·bc) − D2, 0) / N1+(·b·)  +  D2 · N1+(b·) / N1+(·b·) · P1(c)   (P1 if N1+(·b·) = 0)
    P1(c)     = max(N1+(·c) − D1, 0) / N1+(··)  +  D1 · N1+(types) / N1+(··) · 1/V

Lower orders use continuation counts (how many distinct left contexts a suffix follows); each discount is
D = n1 / (n1 + 2 n2) from the counts-of-counts of its order. n-grams are int64 keys ``(a·V + b)·V + c``
looked up with ``searchsorted``, so scoring a whole validation stream is a few tensor ops.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _discount(counts: Tensor) -> float:
    n1 = int((counts == 1).sum())
    n2 = int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5


def _lookup(keys: Tensor, values: Tensor, query: Tensor) -> Tensor:
    """values[key] for each query key, 0 where the key is absent. keys sorted ascending."""
    if keys.numel() == 0:
        return torch.zeros(query.shape, dtype=values.dtype)
    index = torch.searchsorted(keys, query.contiguous()).clamp_(max=keys.numel() - 1)
    return torch.where(keys[index] == query, values[index], torch.zeros((), dtype=values.dtype))


class KneserNeyTrigram:
    """Trained on a (N,) token stream over a vocabulary of ``vocab_size`` ids."""

    def __init__(self, stream: Tensor, vocab_size: int) -> None:
        self.V = V = vocab_size
        s = stream.long()
        if s.numel() < 3:
            raise ValueError("the n-gram baseline needs at least 3 training tokens")
        tri, c3 = torch.unique((s[:-2] * V + s[1:-1]) * V + s[2:], return_counts=True)  # sorted
        self.tri, self.c3 = tri, c3.double()
        # contexts (a, b): C(ab·) and N1+(ab·)
        ab = tri // V
        self.ab, inverse = torch.unique(ab, return_inverse=True)
        self.c_ab = torch.zeros(self.ab.numel(), dtype=torch.float64).index_add_(0, inverse, self.c3)
        self.n_ab = torch.bincount(inverse, minlength=self.ab.numel()).double()
        # middle order from continuation counts: N1+(·bc) = distinct a before (b, c)
        bc = tri % (V * V)
        self.bc, n_bc = torch.unique(bc, return_counts=True)
        self.n_bc = n_bc.double()
        b = self.bc // V
        self.b, inverse = torch.unique(b, return_inverse=True)
        self.n_b_all = torch.zeros(self.b.numel(), dtype=torch.float64).index_add_(0, inverse, self.n_bc)
        self.n_b_types = torch.bincount(inverse, minlength=self.b.numel()).double()
        # lowest order: N1+(·c) = distinct b before c
        c = self.bc % V
        self.n_c = torch.bincount(c, minlength=V).double()
        self.d3, self.d2, self.d1 = _discount(c3), _discount(n_bc), _discount(self.n_c[self.n_c > 0])

    def unigram(self, c: Tensor) -> Tensor:
        total = self.n_c.sum()
        types = (self.n_c > 0).sum()
        return (self.n_c[c] - self.d1).clamp(min=0) / total + self.d1 * types / total / self.V

    def bigram(self, b: Tensor, c: Tensor) -> Tensor:
        lower = self.unigram(c)
        n_bc = _lookup(self.bc, self.n_bc, b * self.V + c)
        n_b_all = _lookup(self.b, self.n_b_all, b)
        n_b_types = _lookup(self.b, self.n_b_types, b)
        seen = n_b_all > 0
        denominator = torch.where(seen, n_b_all, torch.ones_like(n_b_all))
        p = (n_bc - self.d2).clamp(min=0) / denominator + self.d2 * n_b_types / denominator * lower
        return torch.where(seen, p, lower)

    def probability(self, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
        """P(c | a, b) for tensors of ids of one shape (float64)."""
        a, b, c = a.long(), b.long(), c.long()
        lower = self.bigram(b, c)
        c_abc = _lookup(self.tri, self.c3, (a * self.V + b) * self.V + c)
        c_ab = _lookup(self.ab, self.c_ab, a * self.V + b)
        n_ab = _lookup(self.ab, self.n_ab, a * self.V + b)
        seen = c_ab > 0
        denominator = torch.where(seen, c_ab, torch.ones_like(c_ab))
        p = (c_abc - self.d3).clamp(min=0) / denominator + self.d3 * n_ab / denominator * lower
        return torch.where(seen, p, lower)

    def stream_log_probs(self, stream: Tensor) -> Tensor:
        """log P(stream[i] | stream[i-2], stream[i-1]) for i = 2 … N-1, shape (N-2,)."""
        s = stream.long()
        return self.probability(s[:-2], s[1:-1], s[2:]).log()

    def fill(
        self, left2: Tensor, left1: Tensor, right1: Tensor, right2: Tensor, candidates: Tensor
    ) -> Tensor:
        """Score each candidate w for P gaps between (left2, left1) and (right1, right2), using both sides:

        log P(w|l2,l1) + log P(r1|l1,w) + log P(r2|w,r1) — the three trigram factors of the sequence that
        contain w. Contexts are (P,) ids, candidates (C,) ids; returns (P, C) scores.
        """
        w = candidates.long()[None, :].expand(left2.numel(), -1)  # (P, C)
        l2, l1, r1, r2 = (t.long()[:, None].expand_as(w) for t in (left2, left1, right1, right2))  # (P, C)
        return (
            self.probability(l2, l1, w).log()
            + self.probability(l1, w, r1).log()
            + self.probability(w, r1, r2).log()
        )
