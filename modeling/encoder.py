"""A masked-language-model encoder (Devlin et al. 2019, BERT): bidirectional blocks and a tied MLM head.

    ids ─▶ token (+ token type) (+ absolute position) embeddings ─▶ [norm] ─▶ dropout ─▶ block × L ─▶ [norm]
        ─▶ hidden ─▶ dense ─▶ GELU ─▶ norm ─▶ · Eᵀ + b ─▶ logits

The output projection is the token embedding matrix E (tied, Press & Wolf 2017) plus a separate bias, as in
BERT. ``logits(hidden)`` runs the head alone, so training can score only the masked positions.
``Embeddings`` and ``check_ids`` are shared with the decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.blocks import Block
from modeling.config import EncoderConfig, TransformerConfig
from modeling.layouts import Layout, layout_for
from modeling.norms import make_norm
from modeling.outputs import ModelOutput
from modeling.positions import LearnedPositions, SinusoidalPositions

ABSOLUTE_POSITIONS = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}


class Embeddings(nn.Module):
    """Token embeddings, plus token-type and absolute position embeddings when the config has them.

    RoPE and relative positions act inside attention, so they add nothing here. With sinusoidal positions the
    token embeddings are scaled by √d, as Vaswani et al. 2017 (§3.4) pair them.
    """

    def __init__(self, config: TransformerConfig, type_vocab_size: int = 0, norm: bool = False) -> None:
        super().__init__()
        self.tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.types = nn.Embedding(type_vocab_size, config.d_model) if type_vocab_size else None
        absolute = ABSOLUTE_POSITIONS.get(config.position)
        self.positions = absolute(config.max_len, config.d_model) if absolute else None
        self.scale = math.sqrt(config.d_model) if config.position == "sinusoidal" else 1.0
        self.norm = make_norm(config) if norm else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, ids: Tensor, positions: Tensor, token_types: Tensor | None = None) -> Tensor:
        x = self.tokens(ids)  # (B, T, d)
        if self.scale != 1.0:
            x = x * self.scale
        if self.types is not None:
            x = x + self.types(torch.zeros_like(ids) if token_types is None else token_types)
        if self.positions is not None:
            x = x + self.positions(positions)  # (T, d) broadcast over B
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


def check_ids(ids: Tensor, vocab_size: int, max_len: int, past: int = 0) -> None:
    """A clear ValueError for ids that are not a (B, T) long tensor of known tokens within max_len. The values
    are read on the CPU only: elsewhere reading them stalls the device (the embedding lookup still fails)."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"ids must be a (B, T) long tensor, got {shape}")
    if ids.shape[1] == 0:
        raise ValueError("ids: empty sequence (T = 0)")
    if past + ids.shape[1] > max_len:
        raise ValueError(f"ids: {past + ids.shape[1]} positions exceed the model's max_len {max_len}")
    if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"ids: token ids must lie in [0, {vocab_size}), got {int(ids.min())}…{int(ids.max())}"
        )


def check_mask(mask: Tensor | None, name: str, shape: tuple[int, int]) -> None:
    if mask is not None and (not isinstance(mask, Tensor) or tuple(mask.shape) != shape):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must have shape {shape}, got {got}")


def init_weights(module: nn.Module) -> None:
    """GPT-2 / BERT initialisation: N(0, 0.02) for projections and embeddings, zero biases."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


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
        for module in self.modules():  # not self.apply: Rope defines its own apply()
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
