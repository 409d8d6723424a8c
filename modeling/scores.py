"""Score functions: how a query scores a key, before the softmax.

Each is a small module mapping ``q (..., T, D)`` and ``k (..., S, D)`` to ``scores (..., T, S)``. Any number of
leading dimensions is accepted, so the block-sparse path applies the very same function to gathered tiles
``(B, H, nb, Bs, D) × (B, H, nb, K·Bs, D)``.

- ``ScaledDotProduct``: q·k / √D (Vaswani et al. 2017, "Attention Is All You Need", eq. 1).
- ``General``: q W kᵀ, a learned bilinear form (Luong et al. 2015, "general" score).
- ``Additive``: vᵀ tanh(W₁q + W₂k) (Bahdanau et al. 2014, the "concat"/MLP score).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from modeling.config import AttentionConfig


class ScaledDotProduct(nn.Module):
    """q·k / √D (Vaswani 2017). The only score that the SDPA fast path may replace."""

    def __init__(self, d_head: int) -> None:
        super().__init__()
        self.d_head = d_head
        self.scale = 1.0 / math.sqrt(d_head)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return (q * self.scale) @ k.transpose(-2, -1)  # (..., T, S); scaling q is cheaper than the scores


class General(nn.Module):
    """q W kᵀ with a learned W (D×D), shared by the heads (Luong 2015, "general").

    W starts as I/√D, so an untrained General score equals the scaled dot product (a stable start).
    """

    def __init__(self, d_head: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(d_head) / math.sqrt(d_head))

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return (q @ self.weight) @ k.transpose(-2, -1)  # (..., T, S)


class Additive(nn.Module):
    """vᵀ tanh(W₁q + W₂k) (Bahdanau 2014), hidden width D.

    Builds a (..., T, S, D) tensor: memory grows with T·S·D, which is why it is a teaching score; on the
    block-sparse path only the computed tiles pay it.
    """

    def __init__(self, d_head: int) -> None:
        super().__init__()
        self.w_q = nn.Linear(d_head, d_head, bias=False)
        self.w_k = nn.Linear(d_head, d_head, bias=True)
        self.v = nn.Linear(d_head, 1, bias=False)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        hidden = torch.tanh(self.w_q(q).unsqueeze(-2) + self.w_k(k).unsqueeze(-3))  # (..., T, S, D)
        return self.v(hidden).squeeze(-1)  # (..., T, S)


SCORE_FUNCTIONS: dict[str, type[nn.Module]] = {
    "dot": ScaledDotProduct,
    "general": General,
    "additive": Additive,
}


def make_score(attention_config: AttentionConfig, d_head: int) -> nn.Module:
    """The score module named by ``attention_config.score``, for heads of width ``d_head``."""
    return SCORE_FUNCTIONS[attention_config.score](d_head)
