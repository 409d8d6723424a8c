"""int8 linear layers: weight-only for decoders, weights and activations for encoders (absmax per output
channel, as in LLM.int8's vector-wise quantization, Dettmers et al. 2022, without its outlier decomposition).

Each weight row ``w_o`` (one output feature) is stored as int8 ``q_o = round(w_o / s_o)`` with the scale
``s_o = max|w_o| / 127``; activations stay float. A layer computes ``(x @ q.T) · s``: the int8 weights are
widened to the activations' dtype inside the product, so the only error is the weights' rounding (at most
``s_o / 2`` per entry). A quarter of the bytes to stream per token is what pays at batch 1, where decoding
is bound by reading the weights: one row runs the int8 mat-vec of ``modeling.matvec`` on a transposed ``(in,
out)`` copy, which widens the weights in registers and scales each output once (17 products of one token of
the shipped decoder, 1 thread: 0.12 ms against 0.29 for its float32 kernel), eagerly and as an extern call in
the compiled step. Without the kernels, the compiled step's loop fuses the widening into the product, and in
eager PyTorch the widened copy is materialised on every call (slower than float32, docs/benchmarks.md); more
rows take that path too.

The embedding table stays float (a lookup reads one row); a tied output head gets an int8 copy of its own.

An encoder's forward is the other regime: every token of every text at once, so its products are bound by
arithmetic, not by reading the weights, and widening int8 weights to float saves nothing. ``DynamicInt8Linear``
quantizes the activations too, one absmax scale per row computed on each call, and multiplies int8 by int8
with int32 accumulation (``torch._int_mm``, VNNI on x86); the error is both roundings. Whether that beats bf16
autocast (``modeling.precision``) is measured, not assumed: ``bench/encoder_int8.py``, docs/benchmarks.md.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling import matvec
from modeling.decoder import Decoder
from modeling.encoder import Encoder

QUANTIZATIONS = ("int8",)


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per output row: ``weight (out, in)`` → int8 ``(out, in)`` and float32 scales ``(out,)``."""
    weight = weight.detach().float()  # (out, in)
    scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # (out,)
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


class Int8Linear(nn.Module):
    """``nn.Linear``'s product with int8 weights ``(out, in)`` (and a transposed ``(in, out)`` copy for the
    mat-vec kernel) and float scales ``(out,)``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scale = quantize_rows(linear.weight)  # (out, in) int8, (out,) float32
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", q)
        self.register_buffer("weight_t", q.t().contiguous(), persistent=False)  # (in, out)
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        if self._matvec(x):
            return torch.ops.atencion.matvec_int8(x, self.weight_t, self.scale, self.bias)  # (…, out)
        weight = self.weight.to(x.dtype)  # (out, in); fused into the product when compiled
        if x.shape[:-1].numel() == 1 and torch.compiler.is_compiling():
            y = (x[..., None, :] * weight).sum(-1)  # (…, out): one fused loop over the int8 rows
        else:
            y = F.linear(x, weight)
        y = y * self.scale
        return y if self.bias is None else y + self.bias

    def _matvec(self, x: Tensor) -> bool:
        """One float32 row on the CPU, no autograd, and the kernels loaded (decided before compiling)."""
        one_row = x.shape[:-1].numel() == 1 and x.dtype == self.scale.dtype == torch.float32
        usable = one_row and x.device.type == "cpu" and not torch.is_grad_enabled()
        return usable and matvec.available()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class DynamicInt8Linear(nn.Module):
    """``nn.Linear``'s product in int8: weights ``(out, in)`` quantized once, each input row at every call."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scale = quantize_rows(linear.weight)  # (out, in) int8, (out,) float32
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", q)
        self.register_buffer("scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (N, in)
        # max and -min: two vectorised reductions (the ∞-norm and aminmax run ~15× slower on the CPU)
        absmax = torch.maximum(rows.amax(1, keepdim=True), rows.amin(1, keepdim=True).neg())  # (N, 1)
        x_scale = absmax.clamp(min=torch.finfo(torch.float32).tiny) / 127  # (N, 1)
        q = torch.round(rows * (1 / x_scale)).to(torch.int8)  # (N, in), |q| ≤ 127
        y = torch._int_mm(q, self.weight.t())  # (N, out), exact int32 sums
        y = y.float().mul_(x_scale).mul_(self.scale)  # (N, out); int32 × float in one op is ~10× slower
        y = y if self.bias is None else y.add_(self.bias)
        return y.view(*x.shape[:-1], self.out_features)  # (…, out)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int8 weights and activations"
        )


def quantize(model: Decoder | Encoder, method: str) -> Decoder | Encoder:
    """A copy of ``model`` with int8 linear layers (``method`` "int8"): a decoder's blocks and output head get
    weight-only ``Int8Linear``; an encoder's blocks and MLM head's dense layer get ``DynamicInt8Linear`` (its
    output head, tied to the float embedding table, stays float)."""
    if method not in QUANTIZATIONS:
        raise ValueError(f"quantize: {method!r} is not one of {', '.join(QUANTIZATIONS)}")
    if not isinstance(model, Decoder | Encoder):
        raise ValueError(f"quantize: int8 is for decoders and encoders, got {type(model).__name__}")
    quantized = copy.deepcopy(model)
    if isinstance(quantized, Decoder):
        layer, parents = Int8Linear, [*quantized.blocks.modules(), quantized]
    else:
        layer, parents = DynamicInt8Linear, [*quantized.blocks.modules(), quantized.head]
    for parent in parents:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, layer(child))  # a tied head copies the embedding into its own int8
    return quantized.eval()
