"""A causal language model (Radford et al. 2018/2019, GPT; Touvron et al. 2023, Llama) with a KV cache.

    ids ─▶ token (+ absolute position) embeddings ─▶ dropout ─▶ causal block × L ─▶ [final norm] ─▶ lm_head

Incremental decoding: ``new_cache()`` gives one empty ``KVCache`` per layer; a forward with a cache appends
the new keys and values and places the new tokens at positions ``cache_len … cache_len + T − 1``. Sparse
decoders build each layer's layout for the whole length ``cache_len + T``; the attention takes the rows of the
new tokens from its token mask, so decoding with a cache equals the full forward pass.

A running batch (continuous batching, a compiled decode step) instead gives each row its
own ``positions (B, T)`` and a preallocated cache (``preallocated_cache``, viewed with a ``span``): the new keys
are written at each row's positions and every row attends over the span's columns up to its own position
(see ``modeling.kv_cache``). That path reads nothing back to the host.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modeling.blocks import Block
from modeling.config import DecoderConfig
from modeling.embeddings import Embeddings, check_ids, check_mask, init_weights
from modeling.kv_cache import KVCache
from modeling.layouts import Layout, layout_for
from modeling.norms import make_norm
from modeling.outputs import ModelOutput
from modeling.projection import Projection


class Decoder(nn.Module):
    """Causal-LM decoder built from a ``DecoderConfig`` (Llama when rms + pre-norm + rope + swiglu, no bias)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = make_norm(config) if config.norm_placement == "pre" else None
        self.lm_head = Projection(config.d_model, config.vocab_size, bias=False)
        for module in self.modules():  # parents first: the order a seed's random numbers are drawn in
            init_weights(module)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.tokens.weight  # one matrix, saved once
        self._layouts: dict[int, list[Layout | None]] = {}

    def new_cache(self) -> list[KVCache]:
        """One empty cache per layer."""
        return [KVCache() for _ in self.blocks]

    def preallocated_cache(
        self, rows: int, max_len: int | None = None, *, dtype: torch.dtype | None = None, device=None
    ) -> list[KVCache]:
        """One fixed ``(rows, H, max_len, D)`` cache per layer (default: the model's max_len, the activations'
        dtype and device: the token embeddings', which stay float when the linear layers hold int8 weights)."""
        c, weight = self.config, self.embeddings.tokens.weight
        return [
            KVCache.preallocated(
                rows,
                c.n_heads,
                max_len or c.max_len,
                c.d_head,
                dtype=dtype or weight.dtype,
                device=device or weight.device,
            )  # fmt: skip
            for _ in self.blocks
        ]

    def layouts(self, n: int) -> list[Layout | None]:
        """Each layer's causal layout for ``n`` tokens (None = dense); remembered per length, since a layout
        depends only on the config and ``n`` and decoding asks for every length in turn."""
        if n not in self._layouts:
            c = self.config  # n <= max_len (check_ids): at most max_len lengths are remembered
            self._layouts[n] = [
                layout_for(c.attention, i, n, c.n_heads, causal=True) for i in range(c.n_layers)
            ]
        return self._layouts[n]

    def hidden_states(
        self,
        ids: Tensor,
        pad_mask: Tensor | None = None,
        cache: list[KVCache] | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """The final hidden states ``(B, T, d)`` and, on request, each layer's probabilities ``(B, H, T, S)``.

        ``positions (B, T)``: each row at its own positions, written into ``cache`` (fixed storage, positions
        below its ``span``); the caller keeps ids in the vocabulary — nothing is read back to check them.
        """
        c = self.config
        if cache is not None and len(cache) != c.n_layers:
            raise ValueError(f"cache: need one KVCache per layer ({c.n_layers}), got {len(cache)}")
        if positions is not None:
            if cache is None or ids.dim() != 2 or positions.shape != ids.shape:
                raise ValueError("positions: per-row positions need a cache and the shape of ids (B, T)")
            if cache[0].span > c.max_len:
                raise ValueError(f"cache: span {cache[0].span} exceeds the model's max_len {c.max_len}")
            n = cache[0].span
        else:
            past = cache[0].length if cache else 0
            check_ids(ids, c.vocab_size, c.max_len, past)
            n = past + ids.shape[1]
            positions = torch.arange(past, n, device=ids.device)  # (T,)
        check_mask(pad_mask, "pad_mask", (ids.shape[0], n))
        if pad_mask is not None:
            pad_mask = pad_mask.bool()
        x = self.embeddings(ids, positions)  # (B, T, d)
        caches = cache if cache is not None else [None] * c.n_layers
        attentions = []
        for block, layout, layer_cache in zip(self.blocks, self.layouts(n), caches, strict=True):
            x, weights = block(
                x,
                layout=layout,
                positions=positions,
                pad_mask=pad_mask,
                cache=layer_cache,
                need_weights=need_weights,
            )
            attentions.append(weights)
        hidden = x if self.final_norm is None else self.final_norm(x)
        return hidden, (tuple(attentions) if need_weights else None)

    def forward(
        self,
        ids: Tensor,
        pad_mask: Tensor | None = None,
        cache: list[KVCache] | None = None,
        need_weights: bool = False,
    ) -> ModelOutput:
        """``ids (B, T)``; ``pad_mask (B, cache_len + T)`` True for real tokens; ``cache`` from ``new_cache()``."""
        hidden, attentions = self.hidden_states(ids, pad_mask, cache, need_weights)
        return ModelOutput(self.logits(hidden), hidden, attentions)

    def next_logits(
        self,
        ids: Tensor,
        cache: list[KVCache],
        pad_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """One decoding step: feed ``ids (B, T)`` through the cache (at ``positions (B, T)`` if given, see
        ``hidden_states``), return the last position's logits ``(B, V)``."""
        hidden, _ = self.hidden_states(ids, pad_mask, cache, positions=positions)
        return self.logits(hidden[:, -1])

    def logits(self, hidden: Tensor) -> Tensor:
        """The output head alone: ``hidden (…, d)`` → ``(…, V)``."""
        return self.lm_head(hidden)
