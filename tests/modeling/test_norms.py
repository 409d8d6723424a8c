"""LayerNorm and RMSNorm: the written-out definitions, and the modules (fused kernels) held to them."""

from __future__ import annotations

import pytest
import torch

from modeling.config import DecoderConfig, EncoderConfig
from modeling.norms import LayerNorm, RMSNorm, layer_norm, make_norm, rms_norm


def _random_affine(norm: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn_like(p))


# The module and the definition reduce in different orders: a few float32 ulps apart (1e-5).
def test_layer_norm_module_equals_the_definition() -> None:
    torch.manual_seed(0)
    norm = LayerNorm(16, eps=1e-12)
    _random_affine(norm)
    x = torch.randn(3, 5, 16) * 4 + 2
    torch.testing.assert_close(norm(x), layer_norm(x, norm.weight, norm.bias, 1e-12), atol=1e-5, rtol=1e-5)
    x64 = x.double()
    by_hand = (x64 - x64.mean(-1, keepdim=True)) / (x64.var(-1, unbiased=False, keepdim=True) + 1e-12).sqrt()
    expected = by_hand * norm.weight.double() + norm.bias.double()
    torch.testing.assert_close(layer_norm(x64, norm.weight.double(), norm.bias.double(), 1e-12), expected)


def test_layer_norm_output_is_standardised() -> None:
    torch.manual_seed(1)
    y = LayerNorm(64)(torch.randn(4, 64) * 10 - 3)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_rms_norm_module_equals_the_definition() -> None:
    torch.manual_seed(2)
    norm = RMSNorm(16, eps=1e-6)
    _random_affine(norm)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(norm(x), rms_norm(x, norm.weight, 1e-6), atol=1e-5, rtol=1e-5)
    x64 = x.double()
    expected = x64 / torch.sqrt((x64**2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    torch.testing.assert_close(rms_norm(x64, norm.weight.double(), 1e-6), expected)


def test_rms_norm_keeps_input_dtype_and_normalises_in_float32() -> None:
    torch.manual_seed(3)
    norm = RMSNorm(32).to(torch.bfloat16)
    x = (torch.randn(4, 32) * 100).to(torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, rms_norm(x, norm.weight, 1e-6))
    # squaring values ~100 in bf16 would lose the normaliser's precision; float32 keeps it
    assert (y.float() - rms_norm(x.float(), norm.weight.float(), 1e-6)).abs().max() < 0.02


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
