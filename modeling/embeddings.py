"""The parts every model shares on its input side: checking the ids, embedding them, initialising the weights.

    ids (B, T) ─▶ token embeddings (× √d with sinusoidal positions) [+ token types] [+ absolute positions]
        ─▶ [norm] ─▶ dropout ─▶ x (B, T, d)

RoPE and relative positions act inside attention (``modeling.positions``), so they add nothing here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from modeling.config import TransformerConfig
from modeling.norms import make_norm
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
