"""Block-sparse attention: compute only the (query block, key block) pairs a ``Layout`` lists.

As in OpenAI's blocksparse (Child et al. 2019), DeepSpeed's sparse attention and BigBird (Zaheer et al.
2020): pad the sequence to whole blocks, take the tokens in the layout's per-head order (the transposed
sequence of strided heads), split into blocks of Bs tokens, gather for each query block its K listed key
blocks (rows with fewer are padded with masked dummies), score the (Bs × K·Bs) tiles with the model's score
function, apply the token-level mask, softmax, weight the gathered values and put the rows back in natural
order. Work and memory are O(n·K·Bs): linear in n for a fixed window. No n×n tensor is built unless the
probabilities are requested, and then only from the tiles. Plain tensor ops, so autograd just works.

Query blocks are processed in chunks so that the transient tiles stay small. For the scaled dot-product
score without relative positions, probabilities or dropout (the common training and serving case), a custom
autograd function recomputes each chunk's probabilities in the backward from one saved log-sum-exp per row
(Dao et al. 2022), so training memory is O(n·D) plus one chunk, not O(n·K·Bs); every other case runs the same
tiles through plain autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.layouts import Layout
from modeling.positions import RelativePositions
from modeling.scores import ScaledDotProduct

TILE_ELEMENTS = 1 << 20  # scores computed at once (per chunk of query blocks): 4 MiB in float32


def masked_softmax(scores: Tensor, mask: Tensor | None, row_ok: Tensor | None = None) -> Tensor:
    """Softmax over the last dim where ``mask`` is True; exactly 0 elsewhere.

    Masked scores become the dtype's lowest finite value, so exp underflows to an exact 0 and a fully masked
    row stays finite (no NaN); ``row_ok`` (…, 1) then zeroes rows that have no allowed key at all.
    ``scores`` is overwritten in place (it is a fresh matmul output; autograd does not need it).
    """
    if mask is not None:
        scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    return probs if row_ok is None else probs * row_ok


def _dot_tile(
    qc: Tensor,
    kb: Tensor,
    vb: Tensor,
    keys: Tensor,
    allowed: Tensor,
    score: nn.Module,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Masked scores ``(B, H, C, Bs, K·Bs)`` of one chunk of query blocks ``qc`` against their ``keys (H, C, K)``
    blocks (plus ``bias``, e.g. relative-position terms), and the gathered keys and values ``(B, H, C, K·Bs, D)``.
    Masked scores are the dtype's lowest value: exp gives an exact 0, a row without keys stays finite."""
    B, H, _, Bs, D = kb.shape
    C, K = keys.shape[1:]
    head = torch.arange(H, device=kb.device)[:, None, None]  # (H, 1, 1)
    kg = kb[:, head, keys].reshape(B, H, C, K * Bs, D)  # (B, H, C, K·Bs, D)
    vg = vb[:, head, keys].reshape(B, H, C, K * Bs, vb.shape[-1])
    scores = score(qc, kg)  # (B, H, C, Bs, K·Bs)
    if bias is not None:
        scores = scores + bias
    return scores.masked_fill_(~allowed, torch.finfo(scores.dtype).min), kg, vg


class _BlockSparseDot(torch.autograd.Function):
    """Block-sparse scaled dot-product attention whose backward recomputes each chunk's probabilities from
    the saved row log-sum-exp (the FlashAttention recipe, Dao et al. 2022): it keeps q, k, v, the output and
    one number per row instead of the gathered key/value tiles and the probabilities."""

    @staticmethod
    def forward(ctx, qb, kb, vb, key_blocks, tile_mask, key_real, score, step):  # noqa: ANN001, ANN205
        B, H, nb, Bs, _ = qb.shape
        out = qb.new_empty(B, H, nb, Bs, vb.shape[-1])  # (B, H, nb, Bs, D)
        lse = qb.new_empty(B, H, nb, Bs, 1)  # log Σ exp(score) per row; +inf for a row without keys
        for rows in _chunks(nb, step):
            allowed = _allowed(tile_mask, key_real, rows)
            scores, _, vg = _dot_tile(qb[:, :, rows], kb, vb, key_blocks[:, rows], allowed, score)
            peak = scores.amax(-1, keepdim=True)
            probs = scores.sub_(peak).exp_()  # in place: scores are not needed again
            total = probs.sum(-1, keepdim=True)
            probs.div_(total)
            row_lse = peak + total.log()
            if key_real is not None:
                row_ok = allowed.any(-1, keepdim=True)
                probs.mul_(row_ok)
                row_lse = row_lse.masked_fill(~row_ok, float("inf"))
            out[:, :, rows] = probs @ vg
            lse[:, :, rows] = row_lse
        ctx.save_for_backward(qb, kb, vb, out, lse, key_blocks, tile_mask, key_real)
        ctx.score, ctx.step = score, step
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        qb, kb, vb, out, lse, key_blocks, tile_mask, key_real = ctx.saved_tensors
        B, H, nb, Bs, D = qb.shape
        dq = torch.zeros_like(qb)
        # contiguous whatever kb/vb's strides (zeros_like would copy a permuted view's), so the views work
        dk = kb.new_zeros(kb.shape).view(B, H * nb, Bs, D)  # (B, H·nb, Bs, D): one row per (head, block)
        dv = vb.new_zeros(vb.shape).view(B, H * nb, Bs, vb.shape[-1])
        head = torch.arange(H, device=qb.device)[:, None, None]  # (H, 1, 1)
        for rows in _chunks(nb, ctx.step):
            keys = key_blocks[:, rows]  # (H, C, K)
            C, K = keys.shape[1:]
            qc, grad = qb[:, :, rows], grad_out[:, :, rows]
            allowed = _allowed(tile_mask, key_real, rows)
            scores, kg, vg = _dot_tile(qc, kb, vb, keys, allowed, ctx.score)
            probs = scores.sub_(lse[:, :, rows]).exp_()  # (B, H, C, Bs, K·Bs), 0 where masked
            d_probs = grad @ vg.transpose(-2, -1)  # (B, H, C, Bs, K·Bs)
            row_dot = (grad * out[:, :, rows]).sum(-1, keepdim=True)  # rowsum(dO ∘ O)
            d_scores = probs * (d_probs - row_dot) * ctx.score.scale  # softmax backward, then the 1/√D
            dq[:, :, rows] = d_scores @ kg
            flat = (head * nb + keys).reshape(-1)  # (H·C·K,) block rows that receive gradient
            dk.index_add_(1, flat, (d_scores.transpose(-2, -1) @ qc).reshape(B, H * C * K, Bs, D))
            dv.index_add_(1, flat, (probs.transpose(-2, -1) @ grad).reshape(B, H * C * K, Bs, -1))
        return dq, dk.view_as(kb), dv.view_as(vb), None, None, None, None, None


def _chunks(nb: int, step: int):  # noqa: ANN202
    return (slice(c, min(nb, c + step)) for c in range(0, nb, step))


def _allowed(tile_mask: Tensor, key_real: Tensor | None, rows: slice) -> Tensor:
    """(B|1, H, C, Bs, K·Bs) bool: the layout's tile mask, and the keys that are real tokens."""
    mask = tile_mask[:, rows]  # (H, C, Bs, K·Bs)
    return mask if key_real is None else mask & key_real[:, :, rows, None, :]


def block_sparse_attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    score: nn.Module,
    layout: Layout,
    causal: bool,
    pad_mask: Tensor | None,
    positions: Tensor,
    relative: RelativePositions | None = None,
    need_weights: bool = False,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """Self-attention of ``q, k, v (B, H, n, D)`` over ``layout`` → ``(B, H, n, D)``, probs ``(B, H, n, n)``.

    ``positions (n,)`` are the tokens' positions (for relative distances); ``pad_mask (B, n)`` True = real.
    """
    B, H, n, D = q.shape
    if layout.n != n or layout.n_heads not in (1, H):
        raise ValueError(
            f"block-sparse attention: layout is for {layout.n} tokens × {layout.n_heads} heads, got {n} × {H}"
        )
    Bs, nb = layout.block_size, layout.n_blocks
    n_pad = nb * Bs
    tiles = layout.tiles(q.device)
    key_blocks, q_tok, k_tok, tile_mask = (
        t.expand(H, *t.shape[1:]) for t in (tiles.key_blocks, tiles.q_tok, tiles.k_tok, tiles.mask)
    )
    K = key_blocks.shape[-1]
    if causal and not layout.causal:
        tile_mask = tile_mask & (k_tok[:, :, None, :] <= q_tok[:, :, :, None])

    def blocked(x: Tensor) -> Tensor:  # (B, H, n, D) → (B, H, nb, Bs, D) in the layout's token order
        if n_pad > n:
            x = F.pad(x, (0, 0, 0, n_pad - n))  # (B, H, n_pad, D)
        if layout.order is not None:
            x = x.gather(2, q_tok.reshape(1, H, n_pad, 1).expand(B, H, n_pad, x.shape[-1]))
        return x.view(B, H, nb, Bs, x.shape[-1])  # (B, H, nb, Bs, D)

    qb, kb, vb = blocked(q), blocked(k), blocked(v)
    key_real = None
    if pad_mask is not None:
        real = F.pad(pad_mask, (0, n_pad - n), value=False)  # (B, n_pad)
        key_real = real[:, k_tok]  # (B, H, nb, K·Bs)
    index = None
    if relative is not None:
        where = positions[q_tok.clamp(max=n - 1)], positions[k_tok.clamp(max=n - 1)]
        index = relative.distance_index(*where)  # (H, nb, Bs, K·Bs)

    step = max(1, TILE_ELEMENTS // max(1, B * H * Bs * K * Bs))  # query blocks per chunk
    if isinstance(score, ScaledDotProduct) and relative is None and not need_weights and dropout_p == 0:
        out = _BlockSparseDot.apply(qb, kb, vb, key_blocks, tile_mask, key_real, score, step)
        return _natural_order(out, layout, n), None
    out = q.new_empty(B, H, nb, Bs, vb.shape[-1])  # (B, H, nb, Bs, D), filled chunk by chunk
    probs_out = []
    for rows in _chunks(nb, step):
        qc = qb[:, :, rows]
        bias = None if index is None else relative.score_term(qc, index[:, rows])
        allowed = _allowed(tile_mask, key_real, rows)  # (B|1, H, C, Bs, K·Bs)
        scores, kg, vg = _dot_tile(qc, kb, vb, key_blocks[:, rows], allowed, score, bias)
        row_ok = None if key_real is None else allowed.any(-1, keepdim=True)
        probs = masked_softmax(scores, None, row_ok)  # (B, H, C, Bs, K·Bs); masked by _dot_tile
        used = F.dropout(probs, dropout_p) if dropout_p > 0 else probs
        heads = used @ vg  # (B, H, C, Bs, D)
        if index is not None:
            heads = heads + relative.value_term(used, index[:, rows])
        out[:, :, rows] = heads
        if need_weights:
            probs_out.append(probs)

    out = _natural_order(out, layout, n)
    if not need_weights:
        return out, None
    probs = torch.cat(probs_out, dim=2).reshape(B, H, -1)  # (B, H, nb·Bs·K·Bs)
    flat = (q_tok[..., :, None] * n_pad + k_tok[..., None, :]).reshape(1, H, -1).expand(B, H, -1)
    full = probs.new_zeros(B, H, n_pad * n_pad).scatter_add(-1, flat, probs)  # (B, H, n_pad²)
    return out, full.view(B, H, n_pad, n_pad)[:, :, :n, :n]


def _natural_order(out: Tensor, layout: Layout, n: int) -> Tensor:
    """(B, H, nb, Bs, D) in the layout's token order → (B, H, n, D) in natural order."""
    B, H, nb, Bs, _ = out.shape
    out = out.view(B, H, nb * Bs, -1)  # (B, H, n_pad, D)
    if layout.order is not None:
        rank = layout.ranks().to(out.device).expand(H, nb * Bs)  # (H, n_pad)
        out = out.gather(2, rank.reshape(1, H, nb * Bs, 1).expand_as(out))
    return out[:, :, :n]  # (B, H, n, D)
