"""What a model's forward returns: the same three fields whatever was asked (no flag-dependent tuples)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ModelOutput:
    """``logits (B, T, V)``, the final ``hidden (B, T, d)`` states, and, when asked for, one attention
    probability tensor ``(B, H, T, S)`` per layer (``None`` otherwise)."""

    logits: Tensor
    hidden: Tensor
    attentions: tuple[Tensor, ...] | None = None
