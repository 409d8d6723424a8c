"""Weight-only int8 for a decoder's linear layers (absmax per output channel, as in LLM.int8's vector-wise
quantization, Dettmers et al. 2022, without its outlier decomposition).

Each weight row ``w_o`` (one output feature) is stored as int8 ``q_o = round(w_o / s_o)`` with the scale
``s_o = max|w_o| / 127``; activations stay float. A layer computes ``(x @ q.T) · s``: the int8 weights are
widened to the activations' dtype inside the product, so the only error is the weights' rounding (at most
``s_o / 2`` per entry). A quarter of the bytes to stream per token is what pays at batch 1, where decoding
is bound by reading the weights; that needs the compiled step (``modeling.decode_step``), which fuses the
widening into the product — in eager PyTorch the widened copy is materialised on every call and int8 is slower
than float32 (measured in docs/benchmarks.md).

The embedding table stays float (a lookup reads one row); a tied output head gets an int8 copy of its own.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.decoder import Decoder

QUANTIZATIONS = ("int8",)


class Int8Linear(nn.Module):
    """``nn.Linear``'s product with int8 weights ``(out, in)`` and float scales ``(out,)``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # (out,)
        q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", q)
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.to(x.dtype)  # (out, in); fused into the product when compiled
        if x.shape[:-1].numel() == 1 and torch.compiler.is_compiling():
            y = (x[..., None, :] * weight).sum(-1)  # (…, out): one fused loop over the int8 rows
        else:
            y = F.linear(x, weight)
        y = y * self.scale
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize(model: Decoder, method: str) -> Decoder:
    """A copy of ``model`` whose blocks' linear layers and output head hold int8 weights (``method`` "int8")."""
    if method not in QUANTIZATIONS:
        raise ValueError(f"quantize: {method!r} is not one of {', '.join(QUANTIZATIONS)}")
    if not isinstance(model, Decoder):
        raise ValueError(f"quantize: int8 weights are for decoders, got {type(model).__name__}")
    quantized = copy.deepcopy(model)
    for parent in [*quantized.blocks.modules(), quantized]:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))  # a tied head copies the embedding into its own int8
    return quantized.eval()
