"""The structure behind an attention map: which cells a layer may use, and which its kernel computes.

A block-sparse layer (Child et al. 2019; Zaheer et al. 2020) computes whole (query block, key block) tiles and
masks inside them; a cell outside every computed tile costs nothing. The viewer shows three kinds of cell:
allowed (the learned weight), computed-then-masked, and never computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def computed_cells(layout: Any, n_heads: int) -> Tensor:
    """(H, n, n) bool: the cells inside the (query block, key block) pairs the block-sparse kernel computes —
    a superset of the layout's mask; the difference is computed and then masked, the rest is never computed."""
    n = layout.n
    heads = torch.arange(layout.n_heads)[:, None, None]  # (H, 1, 1)
    block_of = layout.ranks()[:, :n] // layout.block_size  # (H, n): the block each token falls in
    cells = layout.blocks[heads, block_of[:, :, None], block_of[:, None, :]]  # (H, n, n)
    return cells.cpu().expand(n_heads, n, n)


def allowed_keys(config: Any, layer: int, n: int) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """One layer's layout: its token mask (H, n, n) bool, the cells its kernel computes (H, n, n) bool or None
    for a dense layer, and its description (pattern, block size, block density)."""
    from modeling.layouts import layout_for

    H = config.n_heads
    layout = layout_for(config.attention, layer, n, H, config.causal)
    computed = None
    if layout is None:
        mask = torch.ones(H, n, n, dtype=torch.bool)
        block_size = None
    else:
        mask = layout.mask().to(torch.bool).cpu().expand(H, n, n)  # (H, n, n): one layout may serve all heads
        computed = computed_cells(layout, H)
        block_size = layout.block_size
    if config.causal:
        mask = mask & torch.ones(n, n, dtype=torch.bool).tril()
    description = {
        "layer": layer,
        "pattern": config.attention.pattern_of_layer(layer) if layout is not None else "dense",
        "block_size": block_size,
        "causal": bool(config.causal),
        "sparse": layout is not None,
        "block_density": round(layout.density(), 6) if layout is not None else 1.0,
        "reordered": layout is not None and layout.order is not None,  # blocks over a permuted sequence
    }
    return mask, computed, description
