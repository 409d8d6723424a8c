"""Normalisation layers written from their definitions.

- ``LayerNorm`` (Ba et al. 2016): subtract the mean, divide by the standard deviation over the last dimension,
  then scale and shift — what Vaswani et al. 2017 and BERT use.
- ``RMSNorm`` (Zhang & Sennrich 2019): divide by the root mean square only, scale, no shift — what Llama uses.
  Computed in float32 and cast back, as Llama does, so bf16 activations do not lose the normaliser.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modeling.config import TransformerConfig


class LayerNorm(nn.Module):
    """``y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` over the last dimension (biased variance)."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        centred = x - mean
        var = centred.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        return centred * torch.rsqrt(var + self.eps) * self.weight + self.bias


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x²) + eps) * weight``, the normaliser computed in float32 (Zhang & Sennrich 2019)."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return self.weight * (x32 * inv_rms).to(x.dtype)


def make_norm(config: TransformerConfig) -> nn.Module:
    """The norm the config names (``layer`` or ``rms``), of width ``d_model`` and epsilon ``norm_eps``."""
    norms = {"layer": LayerNorm, "rms": RMSNorm}
    return norms[config.norm](config.d_model, config.norm_eps)
