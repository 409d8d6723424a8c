"""Positions: sinusoidal and learned tables, RoPE (Su 2021; Llama's rotate_half), Shaw 2018 relative terms."""

from __future__ import annotations

import math

import pytest
import torch

from modeling.positions import LearnedPositions, RelativePositions, Rope, SinusoidalPositions, rotate_half


def test_sinusoidal_follows_vaswani() -> None:
    pe = SinusoidalPositions(50, 8)
    table = pe(torch.arange(50))
    assert table.shape == (50, 8) and not list(pe.parameters())
    for p, i in [(0, 0), (7, 1), (49, 3)]:
        angle = p / 10000 ** (2 * i / 8)
        assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert "table" not in pe.state_dict()  # a fixed table is not a weight


def test_learned_positions_are_trainable_rows() -> None:
    pe = LearnedPositions(10, 4)
    out = pe(torch.tensor([3, 3, 0]))
    assert out.shape == (3, 4)
    torch.testing.assert_close(out[0], pe.weight[3])
    out.sum().backward()
    assert pe.weight.grad[3].eq(2).all() and pe.weight.grad[5].eq(0).all()


@pytest.mark.parametrize("module", [SinusoidalPositions(10, 4), LearnedPositions(10, 4)])
def test_positions_beyond_max_len_are_a_clear_error(module: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="max_len"):
        module(torch.arange(11))


def test_rope_pairs_i_with_i_plus_half_and_keeps_norms() -> None:
    rope = Rope(8, theta=10000.0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    pos = torch.arange(5) + 4
    y = rope.apply(x, pos)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    # pair (1, 5) of position p turns by p·θ^(−2/8)
    angle = pos.double() * 10000.0 ** (-2 / 8)
    want1 = x[..., 1] * angle.cos() - x[..., 5] * angle.sin()
    want5 = x[..., 5] * angle.cos() + x[..., 1] * angle.sin()
    torch.testing.assert_close(y[..., 1], want1)
    torch.testing.assert_close(y[..., 5], want5)


def test_rope_scores_depend_only_on_the_offset() -> None:
    rope = Rope(16)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)
    dots = [
        (rope.apply(q, torch.tensor([m])) * rope.apply(k, torch.tensor([m - 3]))).sum().item()
        for m in (3, 10, 100)
    ]
    assert dots[0] == pytest.approx(dots[1], abs=1e-9) and dots[0] == pytest.approx(dots[2], abs=1e-9)


def test_rope_equals_llama_in_float32() -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = LlamaConfig(
        hidden_size=64, num_attention_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 500.0}
    )
    q, k = torch.randn(2, 4, 9, 16), torch.randn(2, 4, 9, 16)
    positions = torch.arange(9) + 3
    cos, sin = LlamaRotaryEmbedding(config)(q, positions[None])
    want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin)
    rope = Rope(16, theta=500.0)
    assert torch.equal(rope.apply(q, positions), want_q)  # tolerance 0: same formula, same float32 ops
    assert torch.equal(rope.apply(k, positions), want_k)


def test_rope_rejects_odd_width_and_wrong_positions() -> None:
    with pytest.raises(ValueError, match="even"):
        Rope(7)
    with pytest.raises(ValueError, match="positions"):
        Rope(8).apply(torch.zeros(1, 1, 4, 8), torch.arange(5))


def test_relative_terms_follow_shaw() -> None:
    rel = RelativePositions(4, max_distance=2).double().requires_grad_(False)
    q = torch.randn(3, 5, 4, dtype=torch.float64)  # (H, T, D)
    probs = torch.softmax(torch.randn(3, 5, 6, dtype=torch.float64), -1)  # (H, T, S)
    q_pos, k_pos = torch.arange(5) + 1, torch.arange(6)
    index = rel.distance_index(q_pos, k_pos)
    scores, values = rel.score_term(q, index), rel.value_term(probs, index)
    for h in range(3):
        for i in range(5):
            want = torch.zeros(4, dtype=torch.float64)
            for j in range(6):
                r = max(-2, min(2, int(k_pos[j] - q_pos[i]))) + 2
                assert scores[h, i, j].item() == pytest.approx(float(q[h, i] @ rel.keys[r]) / 2.0, abs=1e-12)
                want += probs[h, i, j] * rel.values[r]
            torch.testing.assert_close(values[h, i], want, atol=1e-12, rtol=0)
    assert index.min() == 0 and index.max() == 4  # clipped to ±k


def test_relative_gradcheck() -> None:
    rel = RelativePositions(3, max_distance=1).double()
    index = rel.distance_index(torch.arange(3), torch.arange(3))
    q = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    p = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, p: rel.score_term(q, index).sum() + rel.value_term(p, index), (q, p)
    )


def test_rope_table_gives_the_directly_computed_angles_and_falls_back_past_max_len():
    """The cached table is a speed-up only: the same numbers (tolerance 0), and positions past it still work."""
    from modeling.positions import Rope

    table, direct = Rope(16, 10000.0, max_len=32), Rope(16, 10000.0)
    x = torch.randn(1, 2, 5, 16)
    for positions in (torch.arange(5), torch.tensor([3, 9, 17, 30, 31]), torch.arange(40, 45)):
        assert torch.equal(table.apply(x, positions), direct.apply(x, positions))
    q, k = table.apply_pair(x, x.flip(-1), torch.arange(5))
    assert torch.equal(q, direct.apply(x, torch.arange(5)))
    assert torch.equal(k, direct.apply(x.flip(-1), torch.arange(5)))


@pytest.mark.parametrize("per_row", [False, True])
def test_rope_rotate_takes_queries_and_keys_together_token_major(per_row: bool) -> None:
    """``rotate`` on ``(B, T, 2, H, D)`` (queries and keys side by side, as the fused QKV projection lays them
    out) gives what ``apply`` gives each of them in ``(B, H, T, D)``, and the rotate_half formula: tolerance 0,
    the same float32 operations (the swapped halves times a sine with its first half negated)."""
    rope = Rope(16, 10000.0, max_len=32)
    x = torch.randn(3, 5, 2, 4, 16)  # (B, T, 2, H, D)
    positions = (
        torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11], [20, 21, 22, 23, 24]])
        if per_row
        else torch.arange(5) + 2
    )
    rotated = rope.rotate(x, positions)
    cos, sin = Rope(16)._compute(positions, torch.float32)  # (…, T, D); the sine's first half negated
    sin = torch.cat((-sin[..., :8], sin[..., 8:]), -1)  # the plain sine
    for i in range(2):
        heads = x[:, :, i].transpose(1, 2)  # (B, H, T, D)
        if not per_row:
            assert torch.equal(rotated[:, :, i].transpose(1, 2), rope.apply(heads, positions))
        c, s = (cos[:, None], sin[:, None]) if per_row else (cos, sin)
        want = heads * c + rotate_half(heads) * s
        assert torch.equal(rotated[:, :, i].transpose(1, 2), want)
