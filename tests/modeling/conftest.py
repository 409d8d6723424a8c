"""``ATENCION_TEST_DEVICE=cuda`` (or any torch device) runs the modeling tests with that default device:
tensors and modules built without a device land there, so the paths run on it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

DEVICE = os.environ.get("ATENCION_TEST_DEVICE")


@pytest.fixture(autouse=True)
def _default_device() -> Iterator[None]:
    if not DEVICE:
        yield
        return
    previous = torch.get_default_device()
    torch.set_default_device(DEVICE)
    try:
        yield
    finally:
        torch.set_default_device(previous)
