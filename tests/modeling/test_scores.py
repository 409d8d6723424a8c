"""Score functions: definitions, extra leading dims (the block-sparse tiles), gradients in float64."""

from __future__ import annotations

import math

import pytest
import torch

from modeling.config import AttentionConfig
from modeling.scores import Additive, General, ScaledDotProduct, make_score

D = 6


def _qk(*lead: int, T: int = 3, S: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(*lead, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(*lead, S, D, generator=g, dtype=torch.float64)
    return q, k


def test_scaled_dot_product_is_q_dot_k_over_sqrt_d() -> None:
    q, k = _qk(2)
    got = ScaledDotProduct(D)(q, k)
    for b in range(2):
        for t in range(3):
            for s in range(4):
                assert got[b, t, s].item() == pytest.approx(
                    float(q[b, t] @ k[b, s]) / math.sqrt(D), abs=1e-12
                )


def test_general_is_bilinear_and_starts_as_scaled_dot() -> None:
    q, k = _qk(2)
    score = General(D).double()
    # 1e-6: W = I/√D was rounded to float32 before .double()
    torch.testing.assert_close(score(q, k), ScaledDotProduct(D)(q, k), atol=1e-6, rtol=0)
    with torch.no_grad():
        score.weight.copy_(torch.randn(D, D, dtype=torch.float64))
    want = torch.einsum("btd,de,bse->bts", q, score.weight, k)
    torch.testing.assert_close(score(q, k), want, atol=1e-12, rtol=0)


def test_additive_is_v_tanh_w1q_plus_w2k() -> None:
    q, k = _qk(2)
    score = Additive(D).double().requires_grad_(False)
    got = score(q, k)
    for b in range(2):
        for t in range(3):
            for s in range(4):
                hidden = torch.tanh(score.w_q.weight @ q[b, t] + score.w_k.weight @ k[b, s] + score.w_k.bias)
                assert got[b, t, s].item() == pytest.approx(float(score.v.weight[0] @ hidden), abs=1e-12)


@pytest.mark.parametrize("cls", [ScaledDotProduct, General, Additive])
def test_extra_leading_dims_score_each_tile_independently(cls: type) -> None:
    score = cls(D).double()
    q, k = _qk(2, 3, 5)  # (B, H, nb, T, D): tiles of the block-sparse path
    got = score(q, k)
    assert got.shape == (2, 3, 5, 3, 4)
    torch.testing.assert_close(got[1, 2, 4], score(q[1, 2, 4], k[1, 2, 4]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", [ScaledDotProduct, General, Additive])
def test_gradcheck_float64(cls: type) -> None:
    score = cls(D).double()
    q, k = _qk(2, T=3, S=3)
    params = tuple(score.parameters())
    assert torch.autograd.gradcheck(
        lambda q, k, *p: score(q, k), (q.requires_grad_(), k.requires_grad_(), *params), eps=1e-6, atol=1e-5
    )


def test_make_score_follows_the_config() -> None:
    assert isinstance(make_score(AttentionConfig(score="dot"), 8), ScaledDotProduct)
    assert isinstance(make_score(AttentionConfig(score="general"), 8), General)
    additive = make_score(AttentionConfig(score="additive"), 8)
    assert isinstance(additive, Additive) and additive.w_q.in_features == 8
