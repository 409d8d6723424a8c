"""Compact wire encodings for attention maps: uint8 in base64, and the layout as its own index.

Attention rows are probabilities in [0, 1], so ``round(p * 255)`` in one byte loses at most 0.5/255 ≈ 0.002
per weight (measured payload sizes in ``shared/notes/inspection.md``: 4.2 MB instead of 72 MB of JSON floats
for 6 layers × 8 heads × 256 tokens). A sparse layer sends only the entries its layout allows: the layout's
token mask, packed one bit per cell, is the index, so no coordinates travel.

Formats (every encoded block names its ``encoding`` so a client can decode it):

- ``bits``: a bool tensor, row-major, ``numpy.packbits`` order (most significant bit first), base64.
- ``dense-u8``: every cell of a ``shape`` tensor, row-major, one byte ``round(v / scale * 255)``, base64.
- ``layout-u8``: only the cells where the layer's layout mask (a ``bits`` block of the same ``shape``, sent once
  beside it as the layout) is true, in row-major order, one byte each; every other cell is exactly 0.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
from torch import Tensor

QUANTISATION_ERROR = 0.5 / 255  # largest |decoded - original| for values in [0, scale]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _to_u8(values: Tensor, scale: float) -> np.ndarray:
    scaled = values.detach().to(torch.float32).cpu() / max(scale, 1e-30) * 255.0
    return scaled.round().clamp(0, 255).to(torch.uint8).numpy()


def encode_bits(mask: Tensor) -> dict[str, Any]:
    """A bool tensor as packed bits (8 cells per byte)."""
    flat = mask.detach().to(torch.bool).cpu().numpy().reshape(-1)
    return {"encoding": "bits", "shape": list(mask.shape), "data": _b64(np.packbits(flat).tobytes())}


def decode_bits(block: dict[str, Any]) -> np.ndarray:
    """The inverse of ``encode_bits``: a numpy bool array of ``block['shape']``."""
    shape = tuple(block["shape"])
    count = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(_unb64(block["data"]), dtype=np.uint8), count=count)
    return bits.astype(bool).reshape(shape)


def encode_dense(values: Tensor, scale: float = 1.0) -> dict[str, Any]:
    """Every cell of ``values`` (all in [0, scale]) as one byte."""
    return {
        "encoding": "dense-u8",
        "shape": list(values.shape),
        "scale": float(scale),
        "data": _b64(_to_u8(values, scale).reshape(-1).tobytes()),
    }


def encode_layout(values: Tensor, mask: Tensor, scale: float = 1.0) -> dict[str, Any]:
    """Only the cells of ``values`` where ``mask`` is true, as one byte each; the mask is the index and travels
    separately (``encode_bits``), once per layer."""
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape")
    kept = values.detach().cpu()[mask.cpu()]  # (number of true cells,) in row-major order
    return {
        "encoding": "layout-u8",
        "shape": list(values.shape),
        "scale": float(scale),
        "cells": int(kept.numel()),
        "data": _b64(_to_u8(kept, scale).tobytes()),
    }


def decode(block: dict[str, Any], mask: dict[str, Any] | np.ndarray | None = None) -> np.ndarray:
    """Any block of this module back to a float32 numpy array of ``block['shape']``.

    A ``layout-u8`` block needs its index: the layout's ``bits`` block (or the decoded bool array)."""
    kind = block.get("encoding")
    if kind == "bits":
        return decode_bits(block).astype(np.float32)
    shape = tuple(block["shape"])
    raw = np.frombuffer(_unb64(block["data"]), dtype=np.uint8).astype(np.float32)
    values = raw / 255.0 * float(block.get("scale", 1.0))
    if kind == "dense-u8":
        return values.reshape(shape)
    if kind == "layout-u8":
        if mask is None:
            raise ValueError("a layout-u8 block needs the layout mask to decode")
        mask = decode_bits(mask) if isinstance(mask, dict) else np.asarray(mask, dtype=bool)
        if mask.shape != shape or int(mask.sum()) != values.size:
            raise ValueError(
                f"layout mask {mask.shape} with {int(mask.sum())} cells does not index this block"
            )
        out = np.zeros(shape, dtype=np.float32)
        out[mask] = values
        return out
    raise ValueError(f"unknown encoding {kind!r}")


def encoded_cells(block: dict[str, Any]) -> int:
    """How many values a block carries (the payload cost a cap is measured in)."""
    if block["encoding"] == "layout-u8":
        return int(block["cells"])
    return int(np.prod(block["shape"]))
