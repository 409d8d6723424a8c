"""A masked-language-model encoder (Devlin et al. 2019, BERT): bidirectional blocks and a tied MLM head.

    ids ─▶ token (+ token type) (+ absolute position) embeddings ─▶ [norm] ─▶ dropout ─▶ block × L ─▶ [norm]
        ─▶ hidden ─▶ dense ─▶ GELU ─▶ norm ─▶ · Eᵀ + b ─▶ logits

The output projection is the token embedding matrix E (tied, Press & Wolf 2017) plus a separate bias, as in
BERT. ``logits(hidden)`` runs the head alone, so training can score only the masked positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.blocks import Block
from modeling.config import EncoderConfig
from modeling.embeddings import Embeddings, check_ids, check_mask, init_weights
from modeling.layouts import Layout, layout_for
from modeling.norms import make_norm
from modeling.outputs import ModelOutput


class MaskedLMHead(nn.Module):
    """BERT's prediction head: dense → GELU → norm, then the tied embeddings ``Eᵀ`` plus its own bias."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.norm = make_norm(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor, embeddings: Tensor) -> Tensor:
        """``hidden (…, d)`` and the token embedding matrix ``(V, d)`` → logits ``(…, V)``."""
        h = self.norm(F.gelu(self.dense(hidden)))  # (…, d)
        return F.linear(h, embeddings, self.bias)  # (…, V)


class Encoder(nn.Module):
    """Masked-LM encoder built from an ``EncoderConfig`` (BERT when post-norm, learned positions, types 2)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config, config.type_vocab_size, config.embedding_norm)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = make_norm(config) if config.norm_placement == "pre" else None
        self.head = MaskedLMHead(config)
        for module in self.modules():  # parents first: the order a seed's random numbers are drawn in
            init_weights(module)

    def layouts(self, n: int) -> list[Layout | None]:
        """Each layer's layout for ``n`` tokens (None = dense), built once per forward."""
        c = self.config
        return [layout_for(c.attention, layer, n, c.n_heads, causal=False) for layer in range(c.n_layers)]

    def hidden_states(
        self,
        ids: Tensor,
        pad_mask: Tensor | None = None,
        token_types: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """The final hidden states ``(B, T, d)`` and, on request, each layer's probabilities ``(B, H, T, T)``;
        training runs the head on the masked rows only."""
        c = self.config
        check_ids(ids, c.vocab_size, c.max_len)
        B, T = ids.shape
        check_mask(pad_mask, "pad_mask", (B, T))
        check_mask(token_types, "token_types", (B, T))
        if token_types is not None:
            if self.embeddings.types is None:
                raise ValueError("token_types: this encoder has no token types (type_vocab_size = 0)")
            if int(token_types.min()) < 0 or int(token_types.max()) >= c.type_vocab_size:
                raise ValueError(f"token_types must lie in [0, {c.type_vocab_size})")
        if pad_mask is not None:
            pad_mask = pad_mask.bool()
        positions = torch.arange(T, device=ids.device)  # (T,)
        x = self.embeddings(ids, positions, token_types)  # (B, T, d)
        attentions = []
        for block, layout in zip(self.blocks, self.layouts(T), strict=True):
            x, weights = block(
                x, layout=layout, positions=positions, pad_mask=pad_mask, need_weights=need_weights
            )
            attentions.append(weights)
        hidden = x if self.final_norm is None else self.final_norm(x)
        return hidden, (tuple(attentions) if need_weights else None)

    def forward(
        self,
        ids: Tensor,
        pad_mask: Tensor | None = None,
        token_types: Tensor | None = None,
        need_weights: bool = False,
    ) -> ModelOutput:
        """``ids (B, T)``, ``pad_mask (B, T)`` True for real tokens, ``token_types (B, T)`` → ``ModelOutput``."""
        hidden, attentions = self.hidden_states(ids, pad_mask, token_types, need_weights)
        return ModelOutput(self.logits(hidden), hidden, attentions)

    def logits(self, hidden: Tensor) -> Tensor:
        """The MLM head alone: ``hidden (…, d)`` → ``(…, V)``."""
        return self.head(hidden, self.embeddings.tokens.weight)
