"""Following attention through the layers: rollout and gradient × attention.

- Rollout (Abnar & Zuidema 2020): the residual stream carries half of each token's own state, so each layer
  mixes tokens by ``½·mean_h A_l + ½·I``; the product over layers, ``R = Â_{L−1} ⋯ Â_0``, says how much of
  input token ``k`` reaches position ``q`` at the top. Rows still sum to 1.
- Gradient × attention (Chefer et al. 2021, "Generic attention-model explainability"): per layer
  ``Ā_l = mean_h (A_l ⊙ ∂ log p / ∂A_l)^+`` — keep only the attention that *raised* the target's
  log-probability; cells outside the layout are 0 because ``A`` is exactly 0 there. Their relevance rule
  accumulates the layers as ``R ← R + Ā_l · R`` starting from ``R = I``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rollout(attentions: list[Tensor]) -> Tensor:
    """Attention rollout. attentions: one (H, n, n) probability tensor per layer, bottom first → (n, n)."""
    n = attentions[0].shape[-1]
    eye = torch.eye(n)
    result = eye.clone()
    for A in attentions:
        mixed = 0.5 * A.detach().to(torch.float32).cpu().mean(0) + 0.5 * eye  # (n, n)
        result = mixed @ result
    return result


def gradient_times_attention(attention: Tensor, gradient: Tensor) -> Tensor:
    """Chefer et al.'s per-layer map: mean over heads of the positive part of A ⊙ ∂log p/∂A. (H, n, n) → (n, n)."""
    product = attention.detach().to(torch.float32) * gradient.detach().to(torch.float32)  # (H, n, n)
    return product.clamp_min(0).mean(0).cpu()


def relevance(maps: list[Tensor]) -> Tensor:
    """Chefer et al.'s accumulation of the per-layer maps (bottom first): R ← R + Ā_l·R from R = I → (n, n)."""
    n = maps[0].shape[-1]
    result = torch.eye(n)
    for layer_map in maps:
        result = result + layer_map @ result
    return result
