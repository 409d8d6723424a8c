"""The encoder–decoder Transformer (Vaswani et al. 2017): the workshop's full model, for translation.

    source ids ─▶ embeddings ─▶ [norm] ─▶ block × Lₑ ─▶ [norm] ─▶ memory (B, S, d)
                                                                      │ keys, values (computed once)
    target ids ─▶ embeddings ─▶ [norm] ─▶ (causal self-attention ─▶ cross-attention ─▶ feed-forward) × L
               ─▶ [final norm] ─▶ · Eᵀ ─▶ logits (B, T, V)

Both stacks reuse the project's parts: ``Block`` for the encoder, ``MultiHeadAttention`` (with its layouts,
sparse ones included, and its KV cache) for the decoder's self-attention; ``CrossAttention`` is the new
sublayer. With one vocabulary the encoder and decoder share one embedding matrix; the output projection is the
target embedding matrix (tied, Press & Wolf 2017).

Incremental decoding: ``encode`` runs the source once; ``start_cache`` keeps its keys and values per layer and an
empty self-attention ``KVCache`` per layer; each ``step`` appends the new target tokens. The result equals the
full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modeling.attention import MultiHeadAttention
from modeling.blocks import RESIDUALS, Block, make_feed_forward
from modeling.config import TranslatorConfig
from modeling.cross_attention import CrossAttention, MemoryKV
from modeling.embeddings import Embeddings, check_ids, check_mask, init_weights
from modeling.kv_cache import KVCache
from modeling.layouts import Layout, layout_for
from modeling.norms import make_norm
from modeling.projection import Projection


@dataclass
class TranslationOutput:
    """``logits (B, T, V)``, the decoder's final ``hidden (B, T, d)``, and, when asked for, per layer: the
    encoder's self-attention ``(B, H, S, S)``, the decoder's ``(B, H, T, T)`` and the cross-attention
    ``(B, H, T, S)`` (``None`` otherwise)."""

    logits: Tensor
    hidden: Tensor
    encoder_attentions: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


@dataclass
class TranslatorCache:
    """What decoding keeps between steps: the source's mask and per-layer cross-attention keys/values
    (computed once), and per-layer self-attention caches (growing)."""

    source_mask: Tensor  # (B, S) bool, True = real token
    memory: list[MemoryKV]  # per layer: k, v (B, H, S, D)
    self_caches: list[KVCache]

    @property
    def length(self) -> int:
        return self.self_caches[0].length

    def select(self, index: Tensor) -> TranslatorCache:
        """A cache for rows ``index (B',)`` of this one (beam search keeps, drops and copies hypotheses)."""
        caches = []
        for cache in self.self_caches:
            new = KVCache()
            if cache.length:
                new.append(cache.k[index], cache.v[index])
            caches.append(new)
        memory = [(k[index], v[index]) for k, v in self.memory]
        return TranslatorCache(self.source_mask[index], memory, caches)


class TranslatorBlock(nn.Module):
    """A decoder layer: causal self-attention, cross-attention, feed-forward, each in the config's residual."""

    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__()
        side = config.decoder_config()  # causal
        self.attention = MultiHeadAttention(side)
        self.attention_norm = make_norm(side)
        self.cross_attention = CrossAttention(side)
        self.cross_attention_norm = make_norm(side)
        self.feed_forward = make_feed_forward(side)
        self.feed_forward_norm = make_norm(side)
        self.dropout = nn.Dropout(side.dropout)
        self.residual = RESIDUALS[side.norm_placement]

    def forward(
        self,
        x: Tensor,
        memory_kv: MemoryKV,
        *,
        layout: Layout | None,
        positions: Tensor,
        source_mask: Tensor | None,
        target_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``x (B, T, d)`` → ``(B, T, d)``, self-attention ``(B, H, T, S_t)`` and cross ``(B, H, T, S)``."""
        weights: dict[str, Tensor | None] = {"self": None, "cross": None}

        def attend(h: Tensor) -> Tensor:
            out, weights["self"] = self.attention(
                h, layout=layout, positions=positions, pad_mask=target_mask, cache=cache,
                need_weights=need_weights,
            )  # fmt: skip
            return out

        def cross(h: Tensor) -> Tensor:
            out, weights["cross"] = self.cross_attention(
                h, memory_kv, source_mask=source_mask, need_weights=need_weights
            )
            return out

        x = self.residual(x, self.attention_norm, attend, self.dropout)
        x = self.residual(x, self.cross_attention_norm, cross, self.dropout)
        x = self.residual(x, self.feed_forward_norm, self.feed_forward, self.dropout)
        return x, weights["self"], weights["cross"]


class Translator(nn.Module):
    """Encoder–decoder built from a ``TranslatorConfig`` (BART when post-norm, learned positions, an embedding
    norm, GELU and one shared vocabulary)."""

    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__()
        self.config = config
        source, target = config.encoder_config(), config.decoder_config()
        self.source_embeddings = Embeddings(source, 0, config.embedding_norm)
        self.encoder_blocks = nn.ModuleList(Block(source) for _ in range(source.n_layers))
        self.encoder_norm = make_norm(source) if config.norm_placement == "pre" else None
        self.target_embeddings = Embeddings(target, 0, config.embedding_norm)
        self.decoder_blocks = nn.ModuleList(TranslatorBlock(config) for _ in range(config.n_layers))
        self.final_norm = make_norm(target) if config.norm_placement == "pre" else None
        self.lm_head = Projection(config.d_model, config.vocab_size, bias=False)
        for module in self.modules():  # parents first: the order a seed's random numbers are drawn in
            init_weights(module)
        if config.shared_vocabulary:
            self.target_embeddings.tokens = self.source_embeddings.tokens  # one matrix for both sides
        if config.tie_embeddings:
            self.lm_head.weight = self.target_embeddings.tokens.weight
        self._layouts: dict[tuple[int, bool], list[Layout | None]] = {}

    def layouts(self, n: int, causal: bool) -> list[Layout | None]:
        """Each layer's self-attention layout for ``n`` tokens (None = dense), remembered per length."""
        key = (n, causal)
        if key not in self._layouts:
            c = self.config
            if len(self._layouts) > 4 * c.max_len:
                self._layouts.clear()
            layers = c.n_layers if causal else (c.encoder_layers or c.n_layers)
            self._layouts[key] = [
                layout_for(c.attention, i, n, c.n_heads, causal=causal) for i in range(layers)
            ]
        return self._layouts[key]

    # ---- encoder ------------------------------------------------------------------------------------------
    def encode(
        self, source_ids: Tensor, source_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """``source_ids (B, S)``, ``source_mask (B, S)`` True for real tokens → memory ``(B, S, d)`` and, on
        request, the encoder's self-attention per layer ``(B, H, S, S)``."""
        c = self.config
        check_ids(source_ids, c.source_vocab_size or c.vocab_size, c.max_len)
        B, S = source_ids.shape
        check_mask(source_mask, "source_mask", (B, S))
        source_mask = None if source_mask is None else source_mask.bool()
        positions = torch.arange(S, device=source_ids.device)  # (S,)
        x = self.source_embeddings(source_ids, positions)  # (B, S, d)
        attentions = []
        for block, layout in zip(self.encoder_blocks, self.layouts(S, causal=False), strict=True):
            x, weights = block(
                x, layout=layout, positions=positions, pad_mask=source_mask, need_weights=need_weights
            )
            attentions.append(weights)
        memory = x if self.encoder_norm is None else self.encoder_norm(x)
        return memory, (tuple(attentions) if need_weights else None)

    def start_cache(self, memory: Tensor, source_mask: Tensor | None = None) -> TranslatorCache:
        """The decoding cache for ``memory (B, S, d)``: cross-attention keys/values computed once per layer."""
        B, S, _ = memory.shape
        if source_mask is None:
            source_mask = torch.ones(B, S, dtype=torch.bool, device=memory.device)
        kv = [block.cross_attention.memory_kv(memory) for block in self.decoder_blocks]
        return TranslatorCache(source_mask.bool(), kv, [KVCache() for _ in self.decoder_blocks])

    # ---- decoder ------------------------------------------------------------------------------------------
    def decode(
        self,
        target_ids: Tensor,
        memory_kv: list[MemoryKV],
        source_mask: Tensor | None,
        *,
        target_mask: Tensor | None = None,
        caches: list[KVCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        """Decoder hidden states ``(B, T, d)`` and, on request, self- and cross-attention per layer."""
        c = self.config
        past = caches[0].length if caches else 0
        check_ids(target_ids, c.vocab_size, c.max_len, past)
        B, T = target_ids.shape
        check_mask(target_mask, "target_mask", (B, past + T))
        target_mask = None if target_mask is None else target_mask.bool()
        positions = torch.arange(past, past + T, device=target_ids.device)  # (T,)
        x = self.target_embeddings(target_ids, positions)  # (B, T, d)
        caches = caches if caches is not None else [None] * c.n_layers
        selfs, crosses = [], []
        layers = zip(self.decoder_blocks, self.layouts(past + T, causal=True), memory_kv, caches, strict=True)
        for block, layout, kv, cache in layers:
            x, self_weights, cross_weights = block(
                x, kv, layout=layout, positions=positions, source_mask=source_mask, target_mask=target_mask,
                cache=cache, need_weights=need_weights,
            )  # fmt: skip
            selfs.append(self_weights)
            crosses.append(cross_weights)
        hidden = x if self.final_norm is None else self.final_norm(x)
        if not need_weights:
            return hidden, None, None
        return hidden, tuple(selfs), tuple(crosses)

    def step(self, target_ids: Tensor, cache: TranslatorCache) -> Tensor:
        """One decoding step: feed ``target_ids (B, T)`` through the cache → last position's logits ``(B, V)``."""
        hidden, _, _ = self.decode(target_ids, cache.memory, cache.source_mask, caches=cache.self_caches)
        return self.logits(hidden[:, -1])

    def forward(
        self,
        source_ids: Tensor,
        target_ids: Tensor,
        source_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> TranslationOutput:
        """Teacher-forced pass: ``source_ids (B, S)``, decoder inputs ``target_ids (B, T)`` (starting with
        ``bos``), masks True for real tokens → ``TranslationOutput`` with logits ``(B, T, V)``."""
        memory, encoder_weights = self.encode(source_ids, source_mask, need_weights)
        if source_mask is not None:
            source_mask = source_mask.bool()
        kv = [block.cross_attention.memory_kv(memory) for block in self.decoder_blocks]
        hidden, selfs, crosses = self.decode(
            target_ids, kv, source_mask, target_mask=target_mask, need_weights=need_weights
        )
        return TranslationOutput(self.logits(hidden), hidden, encoder_weights, selfs, crosses)

    def logits(self, hidden: Tensor) -> Tensor:
        """The output head alone: ``hidden (…, d)`` → ``(…, V)``."""
        return self.lm_head(hidden)
