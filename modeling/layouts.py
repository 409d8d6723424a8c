"""Sparse attention layouts: which key blocks each query block computes, per head.

A ``Layout`` is a block map ``(H, nb, nb)`` plus an optional per-head token order and a token-level rule
``allow(h, i, j)`` that refines the blocks (exact window edges, causality, strides). The token-level mask is
``blocks[h, rank(i) // Bs, rank(j) // Bs] & allow(h, i, j)``; the block-sparse kernel (``modeling.sparse``)
computes only the listed blocks, so the block map must cover every pair the rule allows — each pattern
function below derives its blocks from the rule exactly.

One function per pattern, each with its picture (q = query rows, k = key columns, ■ = allowed). Blocks are
built the way block-sparse kernels build them (OpenAI blocksparse, DeepSpeed sparse attention, Child et al.
2019; BigBird, Zaheer et al. 2020). Every row allows at least its own token, so no row is empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import Tensor

from modeling.config import AttentionConfig

Allow = Callable[[Tensor, Tensor, Tensor], Tensor]  # (h, i, j) broadcastable long tensors → bool


@dataclass(frozen=True)
class Tiles:
    """What the block-sparse kernel gathers: per (head, query block) its K key blocks and their tokens."""

    key_blocks: Tensor  # (H, nb, K) long: the key blocks of each query block (padded with masked dummies)
    q_tok: Tensor  # (H, nb, Bs) long: natural index of each query token (>= n: padding)
    k_tok: Tensor  # (H, nb, K·Bs) long: natural index of each gathered key token
    mask: Tensor  # (H, nb, Bs, K·Bs) bool: the layout's token-level mask on the tiles


@dataclass(frozen=True, eq=False)
class Layout:
    """Which (query, key) pairs attention computes, expressed at block level (see the module docstring)."""

    n: int  # sequence length the layout was built for
    block_size: int  # Bs
    blocks: Tensor  # (H, nb, nb) bool, in the token order below: query block i computes key block j
    order: Tensor | None = None  # (H, n) long: token at each rank (Child 2019's transpose); None = natural
    allow: Allow | None = (
        None  # token-level refinement inside blocks, on natural indices; None = whole blocks
    )
    causal: bool = False  # the rule already forbids j > i
    _tiles: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        nb = math.ceil(self.n / self.block_size)
        if self.blocks.dim() != 3 or self.blocks.shape[1:] != (nb, nb) or self.blocks.dtype != torch.bool:
            raise ValueError(f"Layout.blocks must be (H, {nb}, {nb}) bool, got {tuple(self.blocks.shape)}")
        if self.order is not None and self.order.shape != (self.blocks.shape[0], self.n):
            raise ValueError(f"Layout.order must be (H, {self.n}), got {tuple(self.order.shape)}")

    @property
    def n_heads(self) -> int:
        return self.blocks.shape[0]

    @property
    def n_blocks(self) -> int:
        return self.blocks.shape[1]

    def density(self) -> float:
        """Fraction of the (query block, key block) pairs that are computed."""
        return float(self.blocks.float().mean())

    def padded_order(self) -> Tensor:
        """(H, nb·Bs) long: token at each rank, padding tokens n… appended at the end."""
        H, n_pad = self.n_heads, self.n_blocks * self.block_size
        if self.order is None:
            return torch.arange(n_pad).expand(H, n_pad)
        return torch.cat((self.order, torch.arange(self.n, n_pad).expand(H, n_pad - self.n)), dim=1)

    def ranks(self) -> Tensor:
        """(H, nb·Bs) long: rank of each natural token index (inverse of ``padded_order``)."""
        order = self.padded_order()
        if self.order is None:
            return order
        return torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))

    def mask(self, rows: slice | None = None) -> Tensor:
        """(H, T, n) bool: the exact token-level mask for query rows ``rows``, in natural order."""
        i = torch.arange(self.n)[rows if rows is not None else slice(None)]  # (T,)
        return self.token_mask(i[None], self.n)[0]

    def token_mask(self, q_pos: Tensor, n_keys: int) -> Tensor:
        """(B, H, T, n_keys) bool on ``q_pos``'s device: the mask of queries at positions ``q_pos (B, T)`` (each
        row its own, all < n) over keys 0 … n_keys − 1. Built on the device, without host synchronisation."""
        blocks, rank = self._indexing(q_pos.device)
        i = q_pos[:, None, :, None]  # (B, 1, T, 1)
        j = torch.arange(n_keys, device=q_pos.device)[None, None, None, :]  # (1, 1, 1, S)
        h = torch.arange(self.n_heads, device=q_pos.device)[None, :, None, None]  # (1, H, 1, 1)
        allowed = blocks[h, rank[h, i] // self.block_size, rank[h, j] // self.block_size]  # (B, H, T, S)
        if self.allow is not None:
            allowed = allowed & self.allow(h, i, j)
        return allowed

    def _indexing(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The block map and the token ranks on ``device``, moved there once."""
        key = ("mask", str(device))
        if key not in self._tiles:
            with torch.inference_mode(False):  # cached: plain tensors, which a later autograd pass may save
                self._tiles[key] = (self.blocks.to(device), self.ranks().to(device))
        return self._tiles[key]

    def tiles(self, device: torch.device | str = "cpu") -> Tiles:
        """The gather plan of the block-sparse kernel, built once per layout and device."""
        key = ("tiles", str(device))
        if key not in self._tiles:
            self._tiles[key] = _build_tiles(self, torch.device(device))
        return self._tiles[key]


@torch.inference_mode(False)  # cached: plain tensors, which a later autograd pass may save for backward
def _build_tiles(layout: Layout, device: torch.device) -> Tiles:
    H, nb, Bs, n = layout.n_heads, layout.n_blocks, layout.block_size, layout.n
    K = int(layout.blocks.sum(-1).max())
    listed, key_blocks = torch.sort(layout.blocks.to(torch.uint8), dim=-1, descending=True, stable=True)
    key_blocks, valid = key_blocks[..., :K], listed[..., :K].bool()  # (H, nb, K): listed blocks first
    tok = layout.padded_order().reshape(H, nb, Bs)  # (H, nb, Bs)
    h = torch.arange(H)[:, None, None]  # (H, 1, 1)
    k_tok = tok[h, key_blocks].reshape(H, nb, K * Bs)  # (H, nb, K·Bs)
    mask = (valid[..., None].expand(H, nb, K, Bs).reshape(H, nb, 1, K * Bs)) & (k_tok < n)[:, :, None, :]
    if layout.allow is not None:
        qi, kj = tok.clamp(max=n - 1)[..., :, None], k_tok.clamp(max=n - 1)[..., None, :]
        mask = mask & layout.allow(h[..., None], qi, kj)  # (H, nb, Bs, K·Bs)
    mask = mask.expand(H, nb, Bs, K * Bs).contiguous()
    return Tiles(key_blocks.to(device), tok.to(device), k_tok.to(device), mask.to(device))


# ---- block ranges ------------------------------------------------------------------------------------------
def _block_bounds(n: int, block_size: int) -> tuple[Tensor, Tensor]:
    """First and last natural token of each block, (nb,) each."""
    start = torch.arange(0, n, block_size)
    return start, (start + block_size - 1).clamp(max=n - 1)


def _band_blocks(n: int, block_size: int, back: Tensor, ahead: Tensor) -> Tensor:
    """(H, nb, nb): blocks holding some (i, j) with i − back[h] ≤ j ≤ i + ahead[h]."""
    start, end = _block_bounds(n, block_size)
    back, ahead = back[:, None, None], ahead[:, None, None]  # (H, 1, 1)
    return (start[None, None, :] <= end[None, :, None] + ahead) & (
        end[None, None, :] >= start[None, :, None] - back
    )


def _heads(values: int | Sequence[int], n_heads: int) -> Tensor:
    if isinstance(values, int):
        return torch.full((n_heads,), values, dtype=torch.long)
    if len(values) != n_heads:
        raise ValueError(f"need one window per head ({n_heads}), got {len(values)}")
    return torch.tensor(list(values), dtype=torch.long)


# ---- patterns ----------------------------------------------------------------------------------------------
def dense(n: int, n_heads: int = 1, block_size: int = 64) -> Layout:
    """Every query sees every key.

      k ■■■■
    q ■■■■
      ■■■■
      ■■■■
    """
    nb = math.ceil(n / block_size)
    return Layout(n, block_size, torch.ones(n_heads, nb, nb, dtype=torch.bool))


def causal(n: int, n_heads: int = 1, block_size: int = 64) -> Layout:
    """Query i sees keys j ≤ i (an autoregressive decoder).

    ■···
    ■■··
    ■■■·
    ■■■■
    """
    nb = math.ceil(n / block_size)
    blocks = torch.ones(nb, nb, dtype=torch.bool).tril().expand(n_heads, nb, nb).contiguous()
    return Layout(n, block_size, blocks, allow=lambda h, i, j: j <= i, causal=True)


def local(n: int, n_heads: int, window: int | Sequence[int], *, causal: bool, block_size: int = 64) -> Layout:
    """Sliding window: i sees i−w … i (causal) or i−w … i+w (bidirectional); ``window`` may differ per head.

    causal, w=1     bidirectional, w=1
    ■····           ■■···
    ■■···           ■■■··
    ·■■··           ·■■■·
    ··■■·           ··■■■
    """
    w = _heads(window, n_heads)
    ahead = torch.zeros_like(w) if causal else w
    blocks = _band_blocks(n, block_size, w, ahead)

    def allow(h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        wh = w.to(h.device)[h]
        return (j >= i - wh) & (j <= i if causal else j <= i + wh)

    return Layout(n, block_size, blocks, allow=allow, causal=causal)


def strided(
    n: int, n_heads: int, window: int | Sequence[int], stride: int, *, causal: bool, block_size: int = 64
) -> Layout:
    """Child et al. 2019's strided attention, factorised over heads: even heads local, odd heads strided.

    Local heads see the last ``window`` tokens; strided heads see every ``stride``-th token, j ≡ i (mod l).
    The paper alternates or merges the two steps; splitting them over heads keeps each one really sparse.
    Strided heads are computed on the transposed sequence (tokens sorted by position mod l), where they
    become contiguous groups, so their blocks stay few (a plain block mask of the stride columns would
    touch every block). With one head there is only the local head.

        local head, w=1      strided head, l=2      strided head in its own token order (0 2 4 1 3)
        ■····                ■····                  ■····
        ■■···                ·■···                  ■■···
        ·■■··                ■·■··                  ■■■··
        ··■■·                ·■·■·                  ···■·
        ···■■                ■·■·■                  ···■■
    """
    w = _heads(window, n_heads)
    is_strided = torch.arange(n_heads) % 2 == 1  # (H,)
    position = torch.arange(n)
    transposed = torch.argsort((position % stride) * n + position)  # (n,): grouped by residue
    order = torch.where(is_strided[:, None], transposed[None, :], position[None, :])  # (H, n)
    local_blocks = _band_blocks(n, block_size, w, torch.zeros_like(w) if causal else w)
    blocks = torch.where(
        is_strided[:, None, None], _strided_blocks(n, stride, block_size, transposed, causal), local_blocks
    )

    def allow(h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        wh, sh = w.to(h.device)[h], is_strided.to(h.device)[h]
        in_window = (j >= i - wh) & (j <= i + (0 if causal else 1) * wh)
        on_stride = (i - j) % stride == 0
        if causal:
            on_stride = on_stride & (j <= i)
        return torch.where(sh, on_stride, in_window)

    return Layout(n, block_size, blocks, order=order if n_heads > 1 else None, allow=allow, causal=causal)


def _strided_blocks(n: int, stride: int, block_size: int, transposed: Tensor, causal: bool) -> Tensor:
    """(nb, nb) exact block map of the strided rule in the transposed order."""
    nb = math.ceil(n / block_size)
    residue = transposed % stride  # (n,) residue at each rank
    block = torch.arange(n) // block_size  # (n,) block of each rank
    cell = block * stride + residue  # (n,) one cell per (block, residue)
    first = torch.full((nb * stride,), n, dtype=torch.long).scatter_reduce(0, cell, transposed, "amin")
    last = torch.full((nb * stride,), -1, dtype=torch.long).scatter_reduce(0, cell, transposed, "amax")
    first, last = first.view(nb, stride), last.view(nb, stride)  # (nb, l): positions of residue r in block
    present = last >= 0
    blocks = torch.zeros(nb, nb, dtype=torch.bool)
    for start in range(0, nb, 64):  # (chunk, nb, l) at a time
        rows = slice(start, start + 64)
        shared = present[rows, None, :] & present[None, :, :]  # (chunk, nb, l)
        if causal:
            shared = shared & (first[None, :, :] <= last[rows, None, :])
        blocks[rows] = shared.any(-1)
    return blocks


def fixed(n: int, n_heads: int, stride: int, summary: int, *, causal: bool, block_size: int = 64) -> Layout:
    """Child et al. 2019's fixed attention: i sees its own period of l tokens and the last c tokens of every
    period (the summaries), j ≤ i when causal.

    The block map is exact, so with l ≥ Bs and c ≤ Bs each period adds about one summary block per query
    block: the work is O(n²/l) blocks instead of O(n²). With l < Bs every key block holds summaries and the
    layout is dense at block level — choose l a multiple of the block size.

        l=3, c=1, causal
        ■·····
        ■■····
        ■■■···
        ··■■··
        ··■■■·
        ··■■■■
    """
    start, end = _block_bounds(n, block_size)
    same_period = (start[None, :] // stride <= end[:, None] // stride) & (
        end[None, :] // stride >= start[:, None] // stride
    )
    phase = start % stride
    first_summary = torch.where(phase >= stride - summary, start, start - phase + stride - summary)  # (nb,)
    limit = end[:, None] if causal else torch.full((len(start), 1), n - 1)
    has_summary = first_summary[None, :] <= torch.minimum(end[None, :], limit)  # (nb, nb)
    blocks = same_period | has_summary
    if causal:
        blocks = blocks & (start[None, :] <= end[:, None])

    def allow(h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        rule = (i // stride == j // stride) | (j % stride >= stride - summary)
        return rule & (j <= i) if causal else rule

    return Layout(n, block_size, blocks.expand(n_heads, -1, -1).contiguous(), allow=allow, causal=causal)


def bigbird(
    n: int,
    n_heads: int,
    window: int | Sequence[int],
    globals_: int,
    randoms: int,
    *,
    causal: bool,
    block_size: int = 64,
    seed: int = 0,
) -> Layout:
    """BigBird (Zaheer et al. 2020) at block level: ``globals_`` global blocks, a window of ⌈w/Bs⌉ blocks on
    each side (only behind when causal) and ``randoms`` random key blocks per query block and head.

    Random blocks are drawn from a generator seeded by (seed, head, query block), so a causal row is the same
    for every sequence length (incremental decoding sees the blocks the full pass saw).

        blocks, 1 global, window 1, 1 random (bidirectional)
        ■■■■■■
        ■■■·■·
        ■■■■··
        ■·■■■·
        ■■·■■■
        ■··■■■
    """
    nb = math.ceil(n / block_size)
    reach = (_heads(window, n_heads) + block_size - 1) // block_size  # (H,) window in blocks
    I, J = torch.arange(nb)[:, None], torch.arange(nb)[None, :]
    blocks = (J - I <= (0 if causal else 1) * reach[:, None, None]) & (
        I - J <= reach[:, None, None]
    )  # (H, nb, nb)
    blocks = blocks | (J < globals_)
    if not causal:
        blocks = blocks | (I < globals_)
    for h in range(n_heads):
        for i in range(nb):
            free = (~blocks[h, i]).nonzero().flatten()
            if causal:
                free = free[free < i]
            if randoms and len(free):
                generator = torch.Generator().manual_seed(((seed * 1_000_003 + h) * 1_000_033 + i) % 2**62)
                blocks[h, i, free[torch.randperm(len(free), generator=generator)[:randoms]]] = True
    if causal:
        blocks = blocks & (J <= I)
        return Layout(n, block_size, blocks, allow=lambda h, i, j: j <= i, causal=True)
    return Layout(n, block_size, blocks)


def from_adjacency(adjacency: Tensor, block_size: int = 64) -> Layout:
    """Attention as a graph: i sees j where ``adjacency[(h,) i, j]`` is True (plus itself, so no row is empty).

    adjacency          blocks (Bs=2)
    ■·■·               ■■
    ·■··               ·■
    ■·■■
    ···■
    """
    if (
        adjacency.dtype != torch.bool
        or adjacency.dim() not in (2, 3)
        or adjacency.shape[-1] != adjacency.shape[-2]
    ):
        raise ValueError(
            f"from_adjacency: need an (n, n) or (H, n, n) bool tensor, got {tuple(adjacency.shape)} {adjacency.dtype}"
        )
    adj = adjacency if adjacency.dim() == 3 else adjacency[None]  # (H, n, n)
    H, n = adj.shape[0], adj.shape[-1]
    adj = adj | torch.eye(n, dtype=torch.bool)
    nb = math.ceil(n / block_size)
    padded = torch.zeros(H, nb * block_size, nb * block_size, dtype=torch.bool)
    padded[:, :n, :n] = adj
    blocks = padded.view(H, nb, block_size, nb, block_size).any(dim=(2, 4))  # (H, nb, nb)
    return Layout(n, block_size, blocks, allow=lambda h, i, j: adj.to(i.device)[h, i, j])


# ---- from the config ---------------------------------------------------------------------------------------
def layout_for(
    attention_config: AttentionConfig, layer: int, n: int, n_heads: int, causal: bool
) -> Layout | None:
    """The layout of layer ``layer`` for ``n`` tokens (None = dense). Cached: built once per shape, always
    outside ``torch.inference_mode`` so that a layout first built while serving can be saved for backward."""
    pattern = attention_config.pattern_of_layer(layer)
    if pattern == "dense":
        return None
    return _build(attention_config, pattern, n, n_heads, causal)


# cached and shared: an inference-mode tensor here would break every later backward pass of this shape
@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _build(cfg: AttentionConfig, pattern: str, n: int, n_heads: int, causal: bool) -> Layout:
    window: int | list[int] | None = cfg.window
    if cfg.head_windows != "same":  # growing: window·(h+1); workshop: window·h (head 0 sees only itself)
        first = 1 if cfg.head_windows == "growing" else 0
        window = [cfg.window * (h + first) for h in range(n_heads)]
    bs = cfg.block_size
    if pattern == "local":
        return local(n, n_heads, window, causal=causal, block_size=bs)
    if pattern == "strided":
        return strided(n, n_heads, window, cfg.stride, causal=causal, block_size=bs)
    if pattern == "fixed":
        return fixed(n, n_heads, cfg.stride, cfg.summary, causal=causal, block_size=bs)
    if pattern == "bigbird":
        return bigbird(
            n, n_heads, window, cfg.globals, cfg.randoms, causal=causal, block_size=bs, seed=cfg.seed
        )
    raise ValueError(f"attention.pattern: no layout function for {pattern!r}")
