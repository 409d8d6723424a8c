"""LayerNorm and RMSNorm against their definitions and torch's reference implementations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modeling.config import DecoderConfig, EncoderConfig
from modeling.norms import LayerNorm, RMSNorm, make_norm


def _random_affine(norm: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn_like(p))


def test_layer_norm_matches_torch() -> None:
    torch.manual_seed(0)
    norm = LayerNorm(16, eps=1e-12)
    _random_affine(norm)
    x = torch.randn(3, 5, 16) * 4 + 2
    expected = F.layer_norm(x, (16,), norm.weight, norm.bias, eps=1e-12)
    # fp32 rounding of two different reduction orders: a few ulps
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def test_layer_norm_output_is_standardised() -> None:
    torch.manual_seed(1)
    y = LayerNorm(64)(torch.randn(4, 64) * 10 - 3)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_rms_norm_matches_torch_and_definition() -> None:
    torch.manual_seed(2)
    norm = RMSNorm(16, eps=1e-6)
    _random_affine(norm)
    x = torch.randn(2, 7, 16)
    expected = F.rms_norm(x, (16,), norm.weight, eps=1e-6)
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)
    by_hand = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), by_hand, atol=1e-5, rtol=1e-5)


def test_rms_norm_keeps_input_dtype_and_computes_in_float32() -> None:
    torch.manual_seed(3)
    norm = RMSNorm(32).to(torch.bfloat16)
    x = (torch.randn(4, 32) * 100).to(torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    reference = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    assert torch.equal(y, reference)


def test_rms_norm_has_no_shift() -> None:
    assert [name for name, _ in RMSNorm(8).named_parameters()] == ["weight"]
    assert sorted(name for name, _ in LayerNorm(8).named_parameters()) == ["bias", "weight"]


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (EncoderConfig(norm="layer", norm_eps=1e-12), LayerNorm),
        (DecoderConfig(norm="rms", norm_eps=1e-6), RMSNorm),
    ],
)
def test_make_norm_follows_config(config, kind) -> None:
    norm = make_norm(config)
    assert isinstance(norm, kind)
    assert norm.eps == config.norm_eps
    assert norm.weight.shape == (config.d_model,)
