"""bf16 inference where it gives the same answers as fp32.

bf16 keeps fp32's exponent but only 8 bits of mantissa (Kalamkar et al. 2019): on CPUs with avx512_bf16 (or
AMX) its matmuls run several times faster, and a forward under ``torch.autocast(dtype=torch.bfloat16)`` rounds
every matmul's inputs and outputs to it. Whether that changes what a masked LM answers is checked, not assumed:
``compare`` runs a fixed set of Spanish sentences in both precisions, and ``choose`` takes bf16 for ``auto``
only where every mask keeps its top-1 token and its top-5 set.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from modeling.fill_mask import encode, mask_probabilities

PRECISIONS = ("auto", "fp32", "bf16")

# one mask each; {mask} is the tokenizer's own mask token
CHECK_SENTENCES = (
    "El gato duerme en la {mask}.",
    "Mañana vamos a la {mask} con mis amigos.",
    "La niña lee un {mask} en el jardín.",
    "Mi madre cocina una sopa muy {mask}.",
    "El tren sale de la {mask} a las ocho.",
    "¿Dónde está el {mask}? Está en la calle.",
    "Ella escribe una {mask} a su hermano.",
    "El sol brilla y el cielo está {mask}.",
    "Los niños juegan en el {mask} después de la escuela.",
    "Nosotros vivimos en una ciudad {mask}.",
    "El señor compra pan y {mask} en la tienda.",
    "En un lugar de la {mask}, de cuyo nombre no quiero acordarme.",
    "La {mask} de España es Madrid.",
    "Hoy hace mucho {mask} y no quiero salir.",
    "Mi hermano trabaja en un {mask} del centro.",
    "Los estudiantes leen el {mask} en la biblioteca.",
)


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


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a forward runs in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Agreement:
    """How many of ``masks`` keep, in bf16, fp32's top-1 token and its top-5 set."""

    masks: int
    same_top1: int
    same_top5: int

    @property
    def identical(self) -> bool:
        return self.same_top1 == self.same_top5 == self.masks


def compare(
    model: torch.nn.Module, tokenizer: Tokenizer, sentences: tuple[str, ...] = CHECK_SENTENCES
) -> Agreement:
    """Run ``sentences`` through ``model`` (an ``Encoder``) in fp32 and in bf16 autocast; count agreements."""
    device = next(model.parameters()).device
    mask = tokenizer.id_to_token(model.config.mask_token_id)
    texts = [encode(tokenizer, model.config, s.format(mask=mask)) for s in sentences]
    fp32 = mask_probabilities(model, texts, device)  # (M, V)
    with autocast("bf16", device):
        bf16 = mask_probabilities(model, texts, device)  # (M, V)
    top1 = int((fp32.argmax(-1) == bf16.argmax(-1)).sum())
    five = min(5, fp32.size(-1))
    sets = [
        set(a.tolist()) == set(b.tolist())
        for a, b in zip(fp32.topk(five).indices, bf16.topk(five).indices, strict=True)
    ]
    return Agreement(int(fp32.size(0)), top1, sum(sets))


@dataclass(frozen=True)
class Choice:
    """The precision a model serves in, and why."""

    precision: str  # fp32 | bf16
    requested: str  # auto | fp32 | bf16
    reason: str
    agreement: Agreement | None


def choose(
    requested: str,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    supported: Callable[[torch.device], bool] = bf16_supported,
) -> Choice:
    """``auto``: bf16 where the device has it and ``compare`` finds every answer unchanged, else fp32."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return Choice("fp32", requested, "asked for fp32", None)
    device = next(model.parameters()).device
    if requested == "auto" and not supported(device):
        return Choice("fp32", requested, f"no bf16 matmuls on this {device.type}", None)
    agreement = compare(model, tokenizer)
    if requested == "bf16":
        return Choice("bf16", requested, "asked for bf16", agreement)
    if agreement.identical:
        reason = f"bf16 kept every top-1 and top-5 set on {agreement.masks} check sentences"
        return Choice("bf16", requested, reason, agreement)
    reason = (
        f"bf16 changed answers on the check sentences (top-1 same on {agreement.same_top1}/{agreement.masks}, "
        f"top-5 set same on {agreement.same_top5}/{agreement.masks}): serving fp32"
    )
    return Choice("fp32", requested, reason, agreement)
