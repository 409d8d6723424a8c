"""A linear projection with fast paths for inference on the CPU.

Same parameters and names as ``nn.Linear``; shared by attention (the fused QKV), the feed-forward and the
decoder's output head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling import matvec


def _autocast(device_type: str) -> bool:
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def _onednn_usable() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


ONEDNN = _onednn_usable()


class Projection(nn.Linear):
    """``nn.Linear`` (same parameters, same names) with two fast paths for inference (no autograd) on the CPU.

    **One input row** (decoding one token): the mat-vec kernel of ``modeling.matvec`` on a contiguous ``(in,
    out)`` copy of the weight, ~1.8× faster than MKL's (17 products of one token of the shipped decoder, 1
    thread: 0.29 ms against 0.50). Where the kernels are unavailable (no C++ compiler), PyTorch's product:
    ``F.linear`` multiplies by the transposed view of the ``(out, in)`` weight; when the projection widens
    (out > in) that is twice as slow as MKL on the ``(in, out)`` copy; when it narrows, ``(out, in)`` is the
    faster layout (1 thread, µs per call, ``F.linear`` → copy: 256→768 99 → 58, 256→8000 799 → 355; 1024→256
    76 → 136).

    **Several rows** (a batch decoding in lock step, a prompt): oneDNN's float32 product on a weight reordered
    once into its blocked layout, as TorchInductor's CPU backend emits it. PyTorch sends a float32 ``F.linear``
    to MKL, whose kernels on this AMD CPU reach ~45 GFLOP/s on one thread; oneDNN's reach ~110 (32 rows, 1
    thread, µs per call, MKL → oneDNN: 256→8000 3394 → 1374, 256→768 274 → 123, 704→256 250 → 124). Both are
    float32 products; only the order of the additions differs.

    Each copy is made once and rebuilt whenever the weight changes (another tensor, dtype or device, or an
    in-place update, which bumps the tensor's version); it costs the weight's size in memory and is never
    saved. Inside ``torch.compile`` (the compiled decode step, ``modeling.decode_step``) one row calls the
    mat-vec kernel on ``packed``, the copy that ``pack`` took (a compiled graph cannot check the weight's
    version); unpacked, one row is a sum of products over the ``(out, in)`` rows, which Inductor emits as a
    loop fused with what surrounds it. More rows stay a matrix product.
    """

    packed: Tensor | None = None  # the (in, out) copy a compiled step's mat-vec reads; see pack()

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            if x.shape[:-1].numel() != 1:
                return F.linear(x, self.weight, self.bias)
            if self.packed is not None:  # an extern call in the graph
                return torch.ops.atencion.matvec(x, self.packed, self.bias)  # (…, out)
            y = (x[..., None, :] * self.weight).sum(-1)  # (…, out): Inductor's loop over the rows
            return y if self.bias is None else y + self.bias
        if (
            torch.is_grad_enabled()
            or _autocast(x.device.type)  # a bf16 mat-vec is far slower here
            or self.weight.is_inference()  # inference tensors carry no version counter
        ):
            return F.linear(x, self.weight, self.bias)
        if x.shape[:-1].numel() != 1:
            if ONEDNN and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32:
                return torch.ops.mkldnn._linear_pointwise(x, self.reordered(), self.bias, "none", [], "")
            return F.linear(x, self.weight, self.bias)
        if x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32 and matvec.available():
            return torch.ops.atencion.matvec(x, self.transposed(), self.bias)  # (…, out)
        if self.out_features <= self.in_features:
            return F.linear(x, self.weight, self.bias)
        y = x @ self.transposed()  # (…, in) @ (in, out)
        return y if self.bias is None else y + self.bias

    def __getstate__(self) -> dict:
        """A copy (``copy.deepcopy``, as ``modeling.quantization.quantize`` makes) leaves the derived copies of
        the weight behind: they are rebuilt on demand, and oneDNN's blocked one cannot be copied at all."""
        state = dict(super().__getstate__())
        for name in ("_transposed", "_reordered", "packed"):
            state.pop(name, None)
        return state

    def pack(self) -> None:
        """Give compiled code the mat-vec kernel's ``(in, out)`` copy of the weight as it is now (where the
        kernels run; pack again after changing the weight)."""
        usable = self.weight.device.type == "cpu" and self.weight.dtype == torch.float32
        self.packed = self.transposed() if usable and matvec.available() else None

    def transposed(self) -> Tensor:
        """The weight as a contiguous ``(in, out)`` copy."""
        return self._derived("_transposed", lambda weight: weight.t().contiguous())

    def reordered(self) -> Tensor:
        """The weight in oneDNN's blocked layout (an opaque ``torch._mkldnn`` tensor)."""
        return self._derived(
            "_reordered", lambda weight: torch.ops.mkldnn._reorder_linear_weight(weight, None)
        )

    def _derived(self, name: str, make) -> Tensor:
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self.__dict__.get(name)
        if cached is None or cached[0] != key:
            cached = (key, make(weight.detach()))
            self.__dict__[name] = cached  # a plain attribute: not a parameter, never saved
        return cached[1]
