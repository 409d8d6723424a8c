"""A linear projection with a fast path for decoding one token at a time.

Same parameters and names as ``nn.Linear``; shared by attention (the fused QKV), the feed-forward and the
decoder's output head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _autocast(device_type: str) -> bool:
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


class Projection(nn.Linear):
    """``nn.Linear`` (same parameters, same names) with a fast path for decoding one token at a time.

    For one input row without autograd, ``F.linear`` multiplies by the transposed view of the ``(out, in)``
    weight. When the projection widens (out > in) that mat-vec is twice as slow as one with a contiguous
    ``(in, out)`` copy; when it narrows, the ``(out, in)`` layout is the faster one. Measured with weights
    streamed from memory (1 thread, µs per call, ``F.linear`` → copy): 256→768 99 → 58, 256→1024 138 → 70,
    256→8000 (an output head) 799 → 355; 1024→256 76 → 136 (so not used there). The copy is made once and
    rebuilt whenever the weight changes (another tensor, dtype or device, or an in-place update, which bumps
    the tensor's version); it costs the weight's size in memory.

    Inside ``torch.compile`` (the compiled decode step, ``modeling.decode_step``) one row is written as a sum
    of products over the ``(out, in)`` rows, which Inductor emits as one vectorised loop fused with what
    surrounds it; more rows stay a matrix product.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # Inductor picks the layout; one row becomes one fused loop
            if x.shape[:-1].numel() != 1:
                return F.linear(x, self.weight, self.bias)
            y = (x[..., None, :] * self.weight).sum(-1)  # (…, out)
            return y if self.bias is None else y + self.bias
        if (
            self.out_features <= self.in_features
            or torch.is_grad_enabled()
            or _autocast(x.device.type)  # a bf16 mat-vec is far slower here
            or x.shape[:-1].numel() != 1
            or self.weight.is_inference()  # inference tensors carry no version counter
        ):
            return F.linear(x, self.weight, self.bias)
        y = x @ self.transposed()  # (…, in) @ (in, out)
        return y if self.bias is None else y + self.bias

    def transposed(self) -> Tensor:
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self.__dict__.get("_transposed")
        if cached is None or cached[0] != key:
            cached = (key, weight.detach().t().contiguous())
            self.__dict__["_transposed"] = cached  # a plain attribute: not a parameter, never saved
        return cached[1]
