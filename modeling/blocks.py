"""A Transformer block: attention and feed-forward sublayers, each wrapped in a residual connection and a norm.

Where the norm sits is the one architectural choice that lives here and nowhere else:

- post-norm (Vaswani et al. 2017, BERT):  ``x = norm(x + dropout(f(x)))``
- pre-norm  (GPT-2, Llama; Xiong et al. 2020):  ``x = x + dropout(f(norm(x)))``

The feed-forward is a two-layer MLP with GELU (Hendrycks & Gimpel 2016; exact erf or its tanh approximation)
or the gated SwiGLU of Shazeer 2020, ``down(silu(gate(x)) * up(x))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.attention import MultiHeadAttention
from modeling.config import TransformerConfig
from modeling.kv_cache import KVCache
from modeling.layouts import Layout
from modeling.norms import make_norm
from modeling.projection import Projection

Sublayer = Callable[[Tensor], Tensor]


# ---- feed-forward variants ----------------------------------------------------------------------------------
class GeluFeedForward(nn.Module):
    """``down(gelu(up(x)))`` (Vaswani 2017 with GELU as in BERT/GPT-2); ``approximate`` is 'none' or 'tanh'."""

    def __init__(self, d_model: int, d_ff: int, bias: bool, approximate: str = "none") -> None:
        super().__init__()
        self.up = Projection(d_model, d_ff, bias=bias)
        self.down = Projection(d_ff, d_model, bias=bias)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x), approximate=self.approximate))


class SwiGLUFeedForward(nn.Module):
    """``down(silu(gate(x)) * up(x))``, the gated linear unit with a Swish gate (Shazeer 2020; Llama).

    Several rows at inference (a batch decoding, a prompt) multiply by gate and up stacked, ``(2·d_ff, d)``: one
    product instead of two on the same input (each product call costs ~10 µs before any arithmetic, and a wider
    one runs faster per column). The stacked copy is made once and rebuilt when either weight changes; it is
    never saved. Training, one row and compiled graphs use the two projections as they are.
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.gate = Projection(d_model, d_ff, bias=bias)
        self.up = Projection(d_model, d_ff, bias=bias)
        self.down = Projection(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        stacked = self._stacked(x)
        if stacked is None:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        gate, up = stacked(x).chunk(2, dim=-1)  # each (…, d_ff)
        return self.down(F.silu(gate) * up)

    def _stacked(self, x: Tensor) -> Projection | None:
        """gate and up as one projection ``d → 2·d_ff`` when ``x`` has several rows at inference, else None."""
        projections = (self.gate, self.up)
        if not all(type(p) is Projection for p in projections):  # e.g. int8 layers (modeling.quantization)
            return None
        tensors = [t for p in projections for t in (p.weight, p.bias) if t is not None]
        if (
            x.shape[:-1].numel() == 1
            or torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or any(t.is_inference() for t in tensors)  # inference tensors carry no version counter
        ):
            return None
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        cached = self.__dict__.get("_stacked_copy")
        if cached is None or cached[0] != key:
            d_ff, d_model = self.gate.weight.shape
            stacked = Projection(d_model, 2 * d_ff, bias=self.gate.bias is not None, device="meta")
            with torch.inference_mode(False):  # a normal tensor: Projection's fast paths need its version
                for name in ("weight", "bias"):
                    if getattr(self.gate, name) is not None:
                        both = torch.cat(
                            [getattr(p, name).detach() for p in projections]
                        )  # gate rows, then up
                        setattr(stacked, name, nn.Parameter(both, requires_grad=False))
            cached = (key, stacked)
            self.__dict__["_stacked_copy"] = cached  # a plain attribute: not a submodule, never saved
        return cached[1]


FEED_FORWARDS: dict[str, Callable[[TransformerConfig], nn.Module]] = {
    "gelu": lambda c: GeluFeedForward(c.d_model, c.d_ff, c.bias, "none"),
    "gelu_tanh": lambda c: GeluFeedForward(c.d_model, c.d_ff, c.bias, "tanh"),
    "swiglu": lambda c: SwiGLUFeedForward(c.d_model, c.d_ff, c.bias),
}


def make_feed_forward(config: TransformerConfig) -> nn.Module:
    """The feed-forward the config names (``gelu`` | ``gelu_tanh`` | ``swiglu``)."""
    return FEED_FORWARDS[config.feed_forward](config)


# ---- residual placements ------------------------------------------------------------------------------------
def pre_norm(x: Tensor, norm: nn.Module, sublayer: Sublayer, dropout: nn.Module) -> Tensor:
    """``x + dropout(f(norm(x)))``: the residual stream is never normalised (Xiong et al. 2020)."""
    return x + dropout(sublayer(norm(x)))


def post_norm(x: Tensor, norm: nn.Module, sublayer: Sublayer, dropout: nn.Module) -> Tensor:
    """``norm(x + dropout(f(x)))``: Vaswani et al. 2017's "Add & Norm", as in BERT."""
    return norm(x + dropout(sublayer(x)))


RESIDUALS = {"pre": pre_norm, "post": post_norm}


def _unchanged(x: Tensor) -> Tensor:
    return x


# ---- the block ----------------------------------------------------------------------------------------------
class Block(nn.Module):
    """Attention then feed-forward, each as ``residual(x, norm, sublayer, dropout)`` (pre- or post-norm)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(config)
        self.attention_norm = make_norm(config)
        self.feed_forward = make_feed_forward(config)
        self.feed_forward_norm = make_norm(config)
        self.dropout = nn.Dropout(config.dropout)
        self.residual = RESIDUALS[config.norm_placement]

    def forward(
        self,
        x: Tensor,
        *,
        layout: Layout | None,
        positions: Tensor,
        pad_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, d)`` → ``(B, T, d)`` and this layer's probabilities ``(B, H, T, S)`` on request."""
        weights: Tensor | None = None

        def attend(h: Tensor) -> Tensor:
            nonlocal weights
            out, weights = self.attention(
                h,
                layout=layout,
                positions=positions,
                pad_mask=pad_mask,
                cache=cache,
                need_weights=need_weights,
            )
            return out

        dropout = self.dropout if self.training else _unchanged  # the identity at inference: skip the call
        x = self.residual(x, self.attention_norm, attend, dropout)
        x = self.residual(x, self.feed_forward_norm, self.feed_forward, dropout)
        return x, weights
