"""Multi-head attention (Vaswani et al. 2017, §3.2) and the pure function ``attend`` behind it.

Shapes: B batch, H heads, T queries, S keys, D head width, d = H·D model width.

``attend`` chooses one of four compute paths and returns ``(output, probabilities | None)``:

- dense fast path: ``F.scaled_dot_product_attention`` — only for the scaled dot-product score without relative
  positions when no probabilities are requested (``is_causal=True`` when causality is the only mask);
- one-query path (``attend_one_query``): the same case with one query per row (decoding), float32 on the CPU
  without autograd, on ``modeling.matvec``'s one-query kernel where it is built; SDPA's CPU kernel works on
  blocks of queries and pays its setup per (row, head);
- dense explicit path: scores → masked softmax → weighted values; it returns the probabilities it used;
- block-sparse path (``modeling.sparse``): when a ``Layout`` covers the whole sequence (no cache); only the
  layout's blocks are computed. Decoding with a cache uses the layout's token mask on the dense paths instead
  (T new queries against S keys is linear in S anyway).

``attend_in_segments`` runs ``attend`` per group of rows of a running batch, each group reading only the keys it
needs (a cache view's ``segments``, ``modeling.kv_cache``).

``dense_plan`` computes the dense paths' ``(mask, is_causal)`` in one place, from shapes alone: nothing in a
decode step reads a tensor's value on the host, and every mask is built on the queries' device. Positions are
shared ``(T,)`` or per row ``(B, T)`` (a running batch whose sequences sit at different positions; see
``modeling.kv_cache``).

Mask semantics: key j is allowed for query i when the layout allows (i, j), j is not later than i if causal,
and ``pad_mask[b, j]`` is True. A query with no allowed key (only possible through padding) gets probability
0 everywhere and output 0, never NaN. Probabilities are returned before dropout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling import matvec
from modeling.config import TransformerConfig
from modeling.kv_cache import KVCache
from modeling.layouts import Layout
from modeling.positions import RelativePositions, Rope
from modeling.projection import Projection
from modeling.scores import ScaledDotProduct, make_score
from modeling.sparse import block_sparse_attend, masked_softmax


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    score: nn.Module,
    layout: Layout | None,
    causal: bool,
    pad_mask: Tensor | None,
    q_pos: Tensor,
    k_pos: Tensor,
    relative: RelativePositions | None = None,
    need_weights: bool = False,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """Attention of ``q (B, H, T, D)`` over ``k, v (B, H, S, D)`` → ``(B, H, T, D)``, probs ``(B, H, T, S)``.

    ``k_pos (S,)`` are the keys' positions. ``q_pos (T,)``: the queries are the last T of the S keys
    (self-attention, possibly after a cache). ``q_pos (B, T)``: each row's queries at its own positions, the keys
    being a cache's columns, which may run past a row's own end (``dense_plan`` masks them).
    """
    B, H, T, D = q.shape
    S = k.shape[2]
    if k.shape != (B, H, S, D) or v.shape[:3] != (B, H, S):
        raise ValueError(f"attend: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit")
    if q_pos.shape not in ((T,), (B, T)) or k_pos.shape != (S,):
        raise ValueError(
            f"attend: q_pos must be ({T},) or ({B}, {T}) and k_pos ({S},), "
            f"got {tuple(q_pos.shape)}, {tuple(k_pos.shape)}"
        )
    if pad_mask is not None and (pad_mask.shape != (B, S) or pad_mask.dtype != torch.bool):
        raise ValueError(
            f"attend: pad_mask must be a ({B}, {S}) bool tensor, got {tuple(pad_mask.shape)} {pad_mask.dtype}"
        )
    if layout is not None:
        if layout.n < S:
            raise ValueError(f"attend: the layout was built for {layout.n} tokens, the keys are {S}")
        if q_pos.dim() == 1 and T == S == layout.n:
            return block_sparse_attend(
                q, k, v, score=score, layout=layout, causal=causal, pad_mask=pad_mask,
                positions=k_pos, relative=relative, need_weights=need_weights, dropout_p=dropout_p,
            )  # fmt: skip
    fused = isinstance(score, ScaledDotProduct) and relative is None and not need_weights
    mask, is_causal = dense_plan(layout, causal, pad_mask, q_pos, k_pos, fused=fused)
    row_ok = None if pad_mask is None else mask.any(-1, keepdim=True)  # (B, H|1, T, 1)
    if fused and T == 1 and pad_mask is None and dropout_p == 0 and _one_query_fits(q, k, v):
        return attend_one_query(q, k, v, mask, score.scale), None
    if fused:
        if row_ok is not None:
            mask = mask | ~row_ok  # a query without keys attends to anything; zeroed below
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=score.scale
        )  # (B, H, T, D)
        return (out if row_ok is None else out * row_ok), None
    scores = score(q, k)  # (B, H, T, S)
    index = None
    if relative is not None:
        index = relative.distance_index(q_pos, k_pos)  # (T, S) or (B, T, S)
        index = index if q_pos.dim() == 1 else index[:, None]  # (T, S) or (B, 1, T, S)
        scores = scores + relative.score_term(q, index)
    probs = masked_softmax(scores, mask, row_ok)  # (B, H, T, S)
    used = F.dropout(probs, dropout_p) if dropout_p > 0 else probs
    out = used @ v  # (B, H, T, D)
    if relative is not None:
        out = out + relative.value_term(used, index)
    return out, (probs if need_weights else None)


def attend_one_query(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """SDPA for one query per row on the one-query kernel (``modeling.matvec``, ``attention_kernel.h``): scores,
    softmax and the weighted sum of values in one pass per (row, head) over its keys. ``q (B, H, 1, D)``,
    ``k, v (B, H, S, D)`` float32, ``mask (B|1, H|1, 1, S)`` bool (True = allowed; every row allows a key) or
    None → ``(B, H, 1, D)``."""
    additive = None if mask is None else torch.where(mask, 0.0, -math.inf).to(q.dtype)  # (B|1, H|1, 1, S)
    return torch.ops.atencion.attend_one(q, k, v, additive, scale)


def _one_query_fits(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether ``attend_one_query`` takes these (``T = 1`` and no padding checked by the caller)."""
    return (
        q.device.type == "cpu"
        and q.dtype == k.dtype == v.dtype == torch.float32
        and q.shape[-1] % 16 == 0
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()  # the compiled step swaps SDPA for the kernel itself
        and matvec.available()
    )


def attend_in_segments(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    segments: tuple[tuple[int, int, int], ...],
    *,
    q_pos: Tensor,
    k_pos: Tensor,
    **options,
) -> Tensor:
    """``attend`` for a running batch grouped by length: rows ``first … end − 1`` read only their first
    ``columns`` keys, for each ``(first, end, columns)`` of ``segments`` (covering the rows in order). Decoding
    a batch, attention costs the keys and values it reads; a group of short rows need not read as far as the
    longest row. ``q (B, H, T, D)``, ``q_pos (B, T)``, ``k, v (B, H, S, D)`` → ``(B, H, T, D)``."""
    out = [
        attend(
            q[first:end],
            k[first:end, :, :columns],
            v[first:end, :, :columns],
            q_pos=q_pos[first:end],
            k_pos=k_pos[:columns],
            pad_mask=None,
            **options,
        )[0]  # fmt: skip
        for first, end, columns in segments
    ]
    return out[0] if len(out) == 1 else torch.cat(out)  # (B, H, T, D)


def dense_plan(
    layout: Layout | None,
    causal: bool,
    pad_mask: Tensor | None,
    q_pos: Tensor,
    k_pos: Tensor,
    *,
    fused: bool,
) -> tuple[Tensor | None, bool]:
    """The dense paths' ``(mask, is_causal)``, decided in one place from shapes alone (no host synchronisation).

    ``mask`` is ``(B|1, H|1, T, S)`` bool on the queries' device (True = allowed) or None when every key is
    allowed; ``is_causal`` asks SDPA for its own causal kernel (only when ``fused`` and causality is the whole
    mask: queries = keys, no layout, no padding). Causality needs no mask when the queries are the last T keys
    and T = 1 (decoding the newest token after a growing cache); per-row positions ``q_pos (B, T)`` always mask
    it, since a row's cache columns may run past its own position.
    """
    T, S = q_pos.shape[-1], k_pos.shape[0]
    per_row = q_pos.dim() == 2
    rows = q_pos if per_row else q_pos[None]  # (B|1, T)
    mask = None if layout is None else layout.token_mask(rows, S)  # (B|1, H, T, S)
    if causal and (per_row or T > 1) and not (layout is not None and layout.causal):
        if fused and mask is None and pad_mask is None and not per_row and T == S:
            return None, True
        future = k_pos[None, None, None, :] <= rows[:, None, :, None]  # (B|1, 1, T, S)
        mask = future if mask is None else mask & future
    if pad_mask is not None:
        keys = pad_mask[:, None, None, :]  # (B, 1, 1, S)
        mask = keys if mask is None else mask & keys
    return mask, False


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection (Vaswani 2017, §3.2.2).

    ``qkv`` weight rows are [q; k; v], head-major inside each, so BERT's query/key/value or Llama's
    q/k/v_proj weights load by concatenation. Positions inside attention come from the config:
    RoPE (Su 2021) rotates q and k, relative positions (Shaw 2018) add score and value terms; absolute
    positions belong to the embeddings.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads, self.d_head, self.d_model = config.n_heads, config.d_head, config.d_model
        self.causal = config.causal
        self.dropout = config.dropout
        self.qkv = Projection(config.d_model, 3 * config.d_model, bias=config.bias)
        self.out = Projection(config.d_model, config.d_model, bias=config.bias)
        self.score = make_score(config.attention, config.d_head)
        self.rope = (
            Rope(config.d_head, config.rope_theta, config.max_len) if config.position == "rope" else None
        )
        self.relative = (
            RelativePositions(config.d_head, config.relative_distance)
            if config.position == "relative"
            else None
        )

    def forward(
        self,
        x: Tensor,
        *,
        layout: Layout | None,
        positions: Tensor,
        pad_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, d)`` at ``positions (T,)`` (or each row at its own, ``(B, T)``, with a cache) → ``(B, T, d)``
        and, on request, probabilities ``(B, H, T, S)``."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MultiHeadAttention: x must be (B, T, {self.d_model}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        if positions.shape not in ((T,), (B, T)):
            raise ValueError(
                f"MultiHeadAttention: positions must be ({T},) or ({B}, {T}), got {tuple(positions.shape)}"
            )
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head)  # (B, T, 3, H, D)
        if self.rope is not None:  # queries and keys rotated together
            qk = self.rope.rotate(qkv.narrow(2, 0, 2), positions)  # (B, T, 2, H, D)
            q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
            v = qkv.select(2, 2).transpose(1, 2)  # (B, H, T, D)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
        k_pos, segments = positions, None
        if cache is not None and positions.dim() == 2:  # each row at its own positions
            k, v = cache.write(k, v, positions)  # (B, H, span, D)
            k_pos = torch.arange(cache.span, device=positions.device)  # (span,)
            segments = None if need_weights or pad_mask is not None else cache.segments
        elif cache is not None:
            past = cache.length
            k, v = cache.append(k, v)  # (B, H, S, D)
            k_pos = torch.arange(past + T, device=positions.device)  # (S,)
        elif positions.dim() == 2:
            raise ValueError("MultiHeadAttention: per-row positions (B, T) need a cache to write into")
        options = dict(
            score=self.score, layout=layout, causal=self.causal, relative=self.relative,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        if segments is not None:
            out, probs = attend_in_segments(q, k, v, segments, q_pos=positions, k_pos=k_pos, **options), None
        else:
            out, probs = attend(
                q, k, v, pad_mask=pad_mask, q_pos=positions, k_pos=k_pos, need_weights=need_weights, **options
            )
        out = out.transpose(1, 2).reshape(B, T, self.d_model)  # (B, T, d)
        return self.out(out), probs
