"""Mixed precision: bf16 autocast where the hardware has bf16 matmuls, fp32 otherwise (or when asked).

bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling (Kalamkar et al. 2019). On this
kind of CPU (avx512_bf16) bf16 matmuls run ~4.7× faster than fp32; weights and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable
from pathlib import Path

import torch

Autocast = Callable[[], contextlib.AbstractContextManager]


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """This CPU's model name and feature flags, from ``/proc/cpuinfo`` (read here only, once); the platform's
    machine name and no flags where there is no such file."""
    name, flags = "", frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    return name or platform.processor() or platform.machine(), flags


def bf16_supported(device: torch.device) -> bool:
    """bf16 matmuls in hardware: avx512_bf16 / AMX on x86 CPUs, or a bf16-capable GPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_for(precision: str, device: torch.device) -> tuple[Autocast, str]:
    """A factory of autocast contexts for ``precision`` (auto | bf16 | fp32), and the name actually used."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision: must be auto, bf16 or fp32, got {precision!r}")
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if not use_bf16:
        return contextlib.nullcontext, "fp32"
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), "bf16"
