"""Every attention path keeps its tensors on the queries' device and reads nothing back to the host.

Run on PyTorch's ``meta`` device (shapes without data, on any machine): an operation that mixes a CPU tensor
into it fails ("Tensor on device cpu is not on the expected device meta"), and so does any ``int(tensor)`` /
``.item()`` / ``torch.equal`` (a host synchronisation on a GPU). The decode step of a running batch (per-row
positions) must pass; so must the full pass, the block-sparse kernel, cached decoding and an encoder.

To run the modeling tests on an accelerator: ``ATENCION_TEST_DEVICE=cuda python -m pytest tests/modeling``
(``tests/modeling/conftest.py`` makes it the default device).
"""

from __future__ import annotations

import pytest
import torch
from test_decoder import ATTENTIONS, POSITIONS, make

from modeling.config import EncoderConfig
from modeling.encoder import Encoder

META = torch.device("meta")


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_decoder_paths_stay_on_the_device(attention: str, position: str) -> None:
    model = make(attention, position).to(META)
    ids = torch.zeros(2, 13, dtype=torch.long, device=META)
    with torch.inference_mode():
        assert model(ids).logits.device == META  # full pass (block-sparse for sparse layers)
        cache = model.new_cache()
        model.next_logits(ids[:, :9], cache)  # growing cache: prompt, then one token at a time
        assert model.next_logits(ids[:, :1], cache).device == META
        rows = model.preallocated_cache(2, 24)  # a running batch: each row at its own position
        model.next_logits(ids[:1, :5], [c.view(slice(0, 1)) for c in rows])
        positions = torch.zeros(2, 1, dtype=torch.long, device=META)
        views = [c.view(slice(0, 2), 16) for c in rows]
        assert model.next_logits(ids[:, :1], views, positions=positions).shape == (2, 50)
        padded = torch.ones(2, 13, dtype=torch.bool, device=META)
        assert model(ids, pad_mask=padded, need_weights=True).attentions[0].device == META


@pytest.mark.parametrize("attention", ["dense", "local", "strided"])
def test_encoder_paths_stay_on_the_device(attention: str) -> None:
    config = EncoderConfig(
        vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=48, attention=ATTENTIONS[attention]
    )
    model = Encoder(config).eval().to(META)
    ids = torch.zeros(2, 13, dtype=torch.long, device=META)
    with torch.inference_mode():
        out = model(ids, pad_mask=torch.ones(2, 13, dtype=torch.bool, device=META))
    assert out.logits.device == META


def test_meta_catches_a_mask_left_on_the_cpu() -> None:
    """The check itself: a CPU mask in a meta computation fails, so the tests above could fail."""
    q = torch.zeros(1, 2, 3, 4, device=META)
    with pytest.raises(RuntimeError):
        torch.ones(1, 1, 3, 3, dtype=torch.bool) & (q[..., :3] > 0)
    with pytest.raises(RuntimeError):
        int(q.sum())
