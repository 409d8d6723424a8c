"""Cross-attention (Vaswani et al. 2017, §3.2.3, "encoder-decoder attention").

The queries come from the decoder, the keys and values from the encoder's output (the *memory*): every
target position may look at every real source token, so there is no layout and no causality, only the
source padding mask.

Shapes: B batch, H heads, T target positions (queries), S source positions (keys), D head width, d = H·D.

The keys and values depend on the source alone, so decoding computes them once (``memory_kv``) and every
step reuses them. Two compute paths, as in ``modeling.attention``:

- fast path: ``F.scaled_dot_product_attention`` when no probabilities are asked for;
- explicit path: scores → masked softmax → weighted values, returning the probabilities it used
  ``(B, H, T, S)``: rows sum to 1 over the real source tokens and are exactly 0 on padding.

A source with no real token at all gives output 0 and probabilities 0, never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.config import TransformerConfig
from modeling.projection import Projection
from modeling.scores import ScaledDotProduct, make_score

MemoryKV = tuple[Tensor, Tensor]  # keys and values of the source, each (B, H, S, D)


def cross_attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    score: nn.Module,
    source_mask: Tensor | None,
    need_weights: bool = False,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """``q (B, H, T, D)`` over ``k, v (B, H, S, D)`` with ``source_mask (B, S)`` True for real tokens →
    ``(B, H, T, D)`` and, on request, probabilities ``(B, H, T, S)``."""
    B, H, T, D = q.shape
    S = k.shape[2]
    if k.shape != (B, H, S, D) or v.shape[:3] != (B, H, S):
        raise ValueError(
            f"cross_attend: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit"
        )
    if source_mask is not None and (source_mask.shape != (B, S) or source_mask.dtype != torch.bool):
        raise ValueError(f"cross_attend: source_mask must be a ({B}, {S}) bool tensor")
    mask = None if source_mask is None else source_mask[:, None, None, :]  # (B, 1, 1, S)
    row_ok = None if source_mask is None else source_mask.any(-1)[:, None, None, None]  # (B, 1, 1, 1)
    if isinstance(score, ScaledDotProduct) and not need_weights:
        if mask is not None:
            mask = mask | ~row_ok  # an all-padding source attends to anything; zeroed below
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=score.scale)
        return (out if row_ok is None else out * row_ok), None  # (B, H, T, D)
    scores = score(q, k)  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
        scores = scores.masked_fill(~row_ok, 0.0)  # no -inf-only rows: softmax would give NaN
    probs = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    if mask is not None:
        probs = probs * (mask & row_ok)
    used = F.dropout(probs, dropout_p) if dropout_p > 0 else probs
    return used @ v, (probs if need_weights else None)  # (B, H, T, D)


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder's states (queries) to the encoder's output (keys, values).

    ``kv`` weight rows are [k; v], head-major inside each, so BART's ``k_proj``/``v_proj`` load by
    concatenation. The score is the config's (``make_score``); the block-sparse layouts are for
    self-attention only.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads, self.d_head, self.d_model = config.n_heads, config.d_head, config.d_model
        self.dropout = config.dropout
        self.q = Projection(config.d_model, config.d_model, bias=config.bias)
        self.kv = Projection(config.d_model, 2 * config.d_model, bias=config.bias)
        self.out = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.score = make_score(config.attention, config.d_head)

    def memory_kv(self, memory: Tensor) -> MemoryKV:
        """The source's keys and values from the encoder output ``memory (B, S, d)``: each ``(B, H, S, D)``."""
        B, S, _ = memory.shape
        kv = self.kv(memory).view(B, S, 2, self.n_heads, self.d_head)  # (B, S, 2, H, D)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, S, D)
        return k, v

    def forward(
        self,
        x: Tensor,
        memory_kv: MemoryKV,
        *,
        source_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, d)`` over the source's ``memory_kv`` → ``(B, T, d)`` and, on request, ``(B, H, T, S)``."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"CrossAttention: x must be (B, T, {self.d_model}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, D)
        k, v = memory_kv
        out, probs = cross_attend(
            q, k, v, score=self.score, source_mask=source_mask, need_weights=need_weights,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        out = out.transpose(1, 2).reshape(B, T, self.d_model)  # (B, T, d)
        return self.out(out), probs
