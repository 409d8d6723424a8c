"""A safetensors file's header, parsed and checked without torch (the model card reads it to count parameters).

Layout: 8 bytes little-endian header length, the JSON header (tensor name → dtype, shape, byte range), then the
data. Checked: the length fits the file, the JSON is an object, every dtype is one a model of ours can hold,
every byte range fits its shape, and the ranges cover the data exactly (no truncation, no padding).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "BOOL": 1}
MAX_HEADER = 100_000_000


class HeaderError(ValueError):
    """A weights file whose header cannot be trusted; the message names the file and the problem."""


def read(path: Path) -> dict[str, dict[str, Any]]:
    """Parse and check a safetensors header: JSON, known dtypes, byte ranges that tile the file exactly."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise HeaderError(f"{WEIGHTS}: truncated ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER, size - 8):
            raise HeaderError(f"{WEIGHTS}: bad header length {header_len} for a {size}-byte file")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HeaderError(f"{WEIGHTS}: header is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise HeaderError(f"{WEIGHTS}: header must be a JSON object")
    header.pop("__metadata__", None)
    data_size = size - 8 - header_len
    end = 0
    for name, info in header.items():
        try:
            dtype, shape, (start, stop) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as error:
            raise HeaderError(f"{WEIGHTS}: header entry {name!r} is malformed") from error
        if dtype not in ITEM_SIZES:
            raise HeaderError(f"{WEIGHTS}: tensor {name!r} has unsupported dtype {dtype!r}")
        numel = 1
        for dim in shape:
            numel *= dim
        if not 0 <= start <= stop or stop - start != numel * ITEM_SIZES[dtype]:
            raise HeaderError(f"{WEIGHTS}: tensor {name!r} byte range {start}..{stop} does not fit {shape}")
        end = max(end, stop)
    if end != data_size:
        raise HeaderError(
            f"{WEIGHTS}: truncated or padded: tensors need {end} data bytes, the file holds {data_size}"
        )
    return header
