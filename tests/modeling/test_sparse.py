"""The block-sparse kernel equals dense attention under the same mask, and never builds an n×n tensor.

Tolerance: 1e-6 in float64 (the two paths sum the same terms in a different order; observed ~1e-15).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import modeling.sparse as sparse
from modeling.layouts import Layout, bigbird, causal, dense, fixed, from_adjacency, local, strided
from modeling.positions import RelativePositions
from modeling.scores import Additive, General, ScaledDotProduct
from modeling.sparse import block_sparse_attend

B, H, N, D, BS = 2, 4, 50, 8, 8

LAYOUTS: dict[str, Callable[[], Layout]] = {
    "dense": lambda: dense(N, H, BS),
    "causal": lambda: causal(N, H, BS),
    "local_causal": lambda: local(N, H, 6, causal=True, block_size=BS),
    "local_bidirectional": lambda: local(N, H, 6, causal=False, block_size=BS),
    "growing_windows": lambda: local(N, H, [3, 6, 9, 12], causal=True, block_size=BS),
    "strided_causal": lambda: strided(N, H, 6, 5, causal=True, block_size=BS),
    "strided_bidirectional": lambda: strided(N, H, 6, 5, causal=False, block_size=BS),
    "fixed_causal": lambda: fixed(N, H, 16, 3, causal=True, block_size=BS),
    "fixed_bidirectional": lambda: fixed(N, H, 16, 3, causal=False, block_size=BS),
    "bigbird_causal": lambda: bigbird(N, H, 8, 1, 1, causal=True, block_size=BS, seed=1),
    "bigbird_bidirectional": lambda: bigbird(N, H, 8, 1, 1, causal=False, block_size=BS, seed=1),
    "from_adjacency": lambda: from_adjacency(
        torch.rand(H, N, N, generator=torch.Generator().manual_seed(0)) < 0.08, BS
    ),
}


def _qkv(n: int = N, heads: int = H, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, heads, n, D, generator=g, dtype=torch.float64) for _ in range(3))


def _pad_mask() -> torch.Tensor:
    pad = torch.ones(B, N, dtype=torch.bool)
    pad[1, 37:] = False  # the second sequence is padded at the end
    return pad


def _reference(q, k, v, mask):  # dense attention with an explicit (B, H, T, S) mask, written independently
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return probs @ v, probs


@pytest.mark.parametrize("name", LAYOUTS)
def test_equals_dense_with_the_same_mask(name: str) -> None:
    layout = LAYOUTS[name]()
    q, k, v = _qkv()
    pad = _pad_mask()
    out, probs = block_sparse_attend(
        q, k, v, score=ScaledDotProduct(D), layout=layout, causal=False, pad_mask=pad,
        positions=torch.arange(N), need_weights=True,
    )  # fmt: skip
    mask = layout.mask()[None] & pad[:, None, None, :]  # (B, H, n, n)
    want_out, want_probs = _reference(q, k, v, mask)
    real = pad[:, None, :, None]  # compare real query rows; padding rows only need to be finite
    torch.testing.assert_close(out * real, want_out * real, atol=1e-6, rtol=0)
    torch.testing.assert_close(probs * real, want_probs * real, atol=1e-6, rtol=0)
    fast, none = block_sparse_attend(
        q,
        k,
        v,
        score=ScaledDotProduct(D),
        layout=layout,
        causal=False,
        pad_mask=pad,
        positions=torch.arange(N),
    )  # without probabilities: the recomputing kernel
    assert none is None
    torch.testing.assert_close(fast * real, out * real, atol=1e-12, rtol=0)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~mask.any(-1, keepdim=True))
    torch.testing.assert_close(out * real, sdpa * real, atol=1e-6, rtol=0)  # the masked-SDPA reference
    assert probs[~mask.expand_as(probs)].eq(0).all(), "probability outside the layout"
    assert torch.isfinite(out).all() and torch.isfinite(probs).all()
    sums = probs.sum(-1)[pad[:, None, :].expand(B, H, N)]
    torch.testing.assert_close(sums, torch.ones_like(sums))


@pytest.mark.parametrize("name", [n for n in LAYOUTS if "causal" in n or n == "growing_windows"])
def test_causal_layouts_never_see_the_future(name: str) -> None:
    layout = LAYOUTS[name]()
    q, k, v = _qkv()
    t = 29
    run = lambda q, k, v: block_sparse_attend(  # noqa: E731
        q,
        k,
        v,
        score=ScaledDotProduct(D),
        layout=layout,
        causal=True,
        pad_mask=None,
        positions=torch.arange(N),
    )[0]
    before = run(q, k, v)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t:] += 10.0
    after = run(q2, k2, v2)
    assert torch.equal(before[:, :, :t], after[:, :, :t])
    assert not torch.allclose(before[:, :, t:], after[:, :, t:])


def test_fully_padded_sequence_gives_finite_zeros() -> None:
    q, k, v = _qkv()
    pad = torch.ones(B, N, dtype=torch.bool)
    pad[0] = False
    out, probs = block_sparse_attend(
        q, k, v, score=ScaledDotProduct(D), layout=LAYOUTS["local_bidirectional"](), causal=False,
        pad_mask=pad, positions=torch.arange(N), need_weights=True,
    )  # fmt: skip
    assert torch.isfinite(out).all() and out[0].eq(0).all() and probs[0].eq(0).all()


@pytest.mark.parametrize("score_cls", [General, Additive])
def test_other_scores_on_tiles_equal_the_dense_scores(score_cls: type) -> None:
    layout = LAYOUTS["strided_causal"]()
    score = score_cls(D).double()
    q, k, v = _qkv()
    out, probs = block_sparse_attend(
        q,
        k,
        v,
        score=score,
        layout=layout,
        causal=True,
        pad_mask=None,
        positions=torch.arange(N),
        need_weights=True,
    )
    scores = score(q, k).masked_fill(~layout.mask()[None], float("-inf"))
    want = torch.softmax(scores, -1)
    torch.testing.assert_close(probs, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(out, want @ v, atol=1e-6, rtol=0)


def test_chunks_of_query_blocks_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = LAYOUTS["bigbird_causal"]()
    q, k, v = _qkv()
    args = dict(score=ScaledDotProduct(D), layout=layout, causal=True, pad_mask=_pad_mask(), positions=torch.arange(N), need_weights=True)  # fmt: skip
    whole = block_sparse_attend(q, k, v, **args)
    monkeypatch.setattr(sparse, "TILE_ELEMENTS", 1)  # one query block per chunk
    chunked = block_sparse_attend(q, k, v, **args)
    torch.testing.assert_close(whole[0], chunked[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(whole[1], chunked[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("recomputing", [False, True])
@pytest.mark.parametrize("name", ["local_causal", "strided_bidirectional", "bigbird_causal"])
def test_gradcheck_float64(name: str, recomputing: bool) -> None:
    """recomputing: the dot-product kernel with its own backward; else autograd through the tiles (relative
    positions and probabilities requested)."""
    n, bs = 13, 4
    layout = {
        "local_causal": local(n, 2, 3, causal=True, block_size=bs),
        "strided_bidirectional": strided(n, 2, 3, 3, causal=False, block_size=bs),
        "bigbird_causal": bigbird(n, 2, 4, 1, 1, causal=True, block_size=bs),
    }[name]
    g = torch.Generator().manual_seed(1)
    q, k, v = (
        torch.randn(1, 2, n, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    pad = torch.ones(1, n, dtype=torch.bool)
    pad[0, 8:] = False  # 5 padding tokens: the last query of the local layout sees padding only
    relative = None if recomputing else RelativePositions(3, 2).double()

    def f(q, k, v):
        out, probs = block_sparse_attend(
            q, k, v, score=ScaledDotProduct(3), layout=layout, causal=layout.causal, pad_mask=pad,
            positions=torch.arange(n), relative=relative, need_weights=not recomputing,
        )  # fmt: skip
        return out if recomputing else (out, probs)

    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=not recomputing)


class _LargestTensor(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, tuple | list) else (result,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return result


def test_no_n_by_n_tensor_on_the_compute_path() -> None:
    n, bs = 512, 16
    layout = local(n, 2, 16, causal=True, block_size=bs)
    layout.tiles()  # built once per layout, outside the forward
    q, k, v = (torch.randn(1, 2, n, 8, requires_grad=True) for _ in range(3))
    with _LargestTensor() as mode:
        out, _ = block_sparse_attend(
            q,
            k,
            v,
            score=ScaledDotProduct(8),
            layout=layout,
            causal=True,
            pad_mask=None,
            positions=torch.arange(n),
        )
        out.sum().backward()
    assert mode.largest <= 2 * n * 2 * bs * 2  # (B, H, n, K·Bs) tiles with K = 2; n² = 262 144


def test_recomputing_backward_accepts_strided_keys_and_values() -> None:
    """k and v as views of a fused (B, T, H, D) projection, as the model makes them: with T a multiple of the
    block size their blocks are views too, and the backward must not assume contiguous memory."""
    n, bs = 16, 4
    layout = local(n, 2, 4, causal=False, block_size=bs)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, n, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, n, 2, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))

    def f(q, k, v):
        out, _ = block_sparse_attend(
            q, k.transpose(1, 2), v.transpose(1, 2), score=ScaledDotProduct(3), layout=layout, causal=False,
            pad_mask=None, positions=torch.arange(n),
        )  # fmt: skip
        return out

    assert torch.autograd.gradcheck(f, (q, k, v))
