"""Feed-forward variants and the pre/post-norm residual order, each against its formula."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modeling.blocks import Block, GeluFeedForward, SwiGLUFeedForward, make_feed_forward, post_norm, pre_norm
from modeling.config import EncoderConfig
from modeling.norms import LayerNorm

CONFIG = EncoderConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=24, max_len=16, dropout=0.0)


def test_gelu_feed_forward_is_exact_erf() -> None:
    torch.manual_seed(0)
    ff = make_feed_forward(CONFIG)
    assert isinstance(ff, GeluFeedForward)
    x = torch.randn(2, 5, 16)
    h = x @ ff.up.weight.T + ff.up.bias
    expected = (0.5 * h * (1 + torch.erf(h / 2**0.5))) @ ff.down.weight.T + ff.down.bias
    torch.testing.assert_close(ff(x), expected, atol=1e-6, rtol=1e-5)


def test_gelu_tanh_feed_forward_is_the_tanh_approximation() -> None:
    torch.manual_seed(1)
    ff = make_feed_forward(dataclasses.replace(CONFIG, feed_forward="gelu_tanh"))
    x = torch.randn(3, 16) * 3
    h = ff.up(x)
    tanh_gelu = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
    torch.testing.assert_close(ff(x), ff.down(tanh_gelu), atol=1e-6, rtol=1e-5)
    exact = make_feed_forward(CONFIG)
    exact.load_state_dict(ff.state_dict())
    assert not torch.allclose(exact(x), ff(x), atol=1e-7, rtol=0)  # the two variants differ


def test_swiglu_feed_forward() -> None:
    torch.manual_seed(2)
    ff = make_feed_forward(dataclasses.replace(CONFIG, feed_forward="swiglu", bias=False))
    assert isinstance(ff, SwiGLUFeedForward)
    assert sorted(n for n, _ in ff.named_parameters()) == ["down.weight", "gate.weight", "up.weight"]
    x = torch.randn(4, 16)
    g = x @ ff.gate.weight.T
    expected = ((g * torch.sigmoid(g)) * (x @ ff.up.weight.T)) @ ff.down.weight.T
    torch.testing.assert_close(ff(x), expected, atol=1e-6, rtol=1e-5)


def test_residual_orders() -> None:
    torch.manual_seed(3)
    norm, x = LayerNorm(16), torch.randn(2, 3, 16) * 5 + 1

    def f(h: torch.Tensor) -> torch.Tensor:
        return 2 * h + 1

    keep = torch.nn.Identity()
    torch.testing.assert_close(pre_norm(x, norm, f, keep), x + f(norm(x)))
    torch.testing.assert_close(post_norm(x, norm, f, keep), norm(x + f(x)))


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_composes_its_parts_in_the_configured_order(placement) -> None:
    torch.manual_seed(4)
    block = Block(dataclasses.replace(CONFIG, norm_placement=placement)).eval()
    x = torch.randn(2, 7, 16)
    positions = torch.arange(7)
    with torch.no_grad():
        got, weights = block(x, layout=None, positions=positions, need_weights=True)

        def attn(h: torch.Tensor) -> torch.Tensor:
            return block.attention(h, layout=None, positions=positions)[0]

        if placement == "pre":
            h = x + attn(block.attention_norm(x))
            expected = h + block.feed_forward(block.feed_forward_norm(h))
        else:
            h = block.attention_norm(x + attn(x))
            expected = block.feed_forward_norm(h + block.feed_forward(h))
    torch.testing.assert_close(got, expected)
    assert weights.shape == (2, 2, 7, 7)
    if placement == "post":  # the output of a post-norm block is normalised
        torch.testing.assert_close(got.mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)


def test_block_dropout_only_in_training() -> None:
    torch.manual_seed(5)
    block = Block(dataclasses.replace(CONFIG, dropout=0.5))
    x, positions = torch.randn(1, 6, 16), torch.arange(6)
    block.train()
    a = block(x, layout=None, positions=positions)[0]
    b = block(x, layout=None, positions=positions)[0]
    assert not torch.equal(a, b)
    block.eval()
    assert torch.equal(
        block(x, layout=None, positions=positions)[0], block(x, layout=None, positions=positions)[0]
    )


def test_projection_single_row_fast_path_equals_linear_and_follows_updates() -> None:
    from modeling.projection import Projection

    torch.manual_seed(6)
    projection = Projection(16, 40)
    x = torch.randn(1, 1, 16)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, projection.weight, projection.bias)
        torch.testing.assert_close(projection(x), expected)
        assert "_transposed" in projection.__dict__  # the fast path was taken
        projection.weight.add_(1.0)  # in place: the cached copy must not go stale
        torch.testing.assert_close(
            projection(x), torch.nn.functional.linear(x, projection.weight, projection.bias)
        )
    assert "_transposed" not in projection.state_dict()
    y = projection(x)  # with autograd: the ordinary product, differentiable
    y.sum().backward()
    assert projection.weight.grad is not None


def test_projection_several_rows_use_the_reordered_weight_and_follow_updates() -> None:
    """Several rows without autograd: oneDNN's float32 product on a reordered copy of the weight, which equals
    ``F.linear`` up to the order of the additions (1e-5 on outputs of size ~1) and is rebuilt after an update."""
    from modeling.projection import ONEDNN, Projection

    torch.manual_seed(7)
    projection = Projection(64, 96)
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            projection(x),
            torch.nn.functional.linear(x, projection.weight, projection.bias),
            atol=1e-5,
            rtol=0,
        )
        assert ("_reordered" in projection.__dict__) == ONEDNN
        projection.weight.mul_(2.0)
        torch.testing.assert_close(
            projection(x),
            torch.nn.functional.linear(x, projection.weight, projection.bias),
            atol=1e-5,
            rtol=0,
        )
    assert "_reordered" not in projection.state_dict()
    projection(x).sum().backward()  # with autograd: the ordinary product
    assert projection.weight.grad is not None


@pytest.mark.parametrize("bias", [False, True])
def test_swiglu_several_rows_use_gate_and_up_stacked_and_follow_updates(bias: bool) -> None:
    """Several rows without autograd: one product by gate and up stacked. Each output is still one dot product
    of one weight row, so it equals the two products up to the order of the additions inside a product (1e-5 on
    outputs of size ~1); the stacked copy is rebuilt after an update and never saved."""
    torch.manual_seed(8)
    ff = make_feed_forward(dataclasses.replace(CONFIG, feed_forward="swiglu", bias=bias))

    def separate(x: torch.Tensor) -> torch.Tensor:
        return ff.down(torch.nn.functional.silu(ff.gate(x)) * ff.up(x))

    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(ff(x), separate(x), atol=1e-5, rtol=0)
        assert "_stacked_copy" in ff.__dict__
        ff.up.weight.mul_(-2.0)  # in place: the stacked copy must not go stale
        if bias:
            ff.gate.bias.add_(1.0)
        torch.testing.assert_close(ff(x), separate(x), atol=1e-5, rtol=0)
    assert sorted(ff.state_dict()) == sorted(n for n, _ in ff.named_parameters())
    ff(x).sum().backward()  # with autograd: the two projections, differentiable
    assert ff.gate.weight.grad is not None and ff.up.weight.grad is not None
