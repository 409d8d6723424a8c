"""The KV cache's rows and per-row positions: a running batch whose sequences sit at different positions gives
each row the logits of its own full pass (dense and sparse, every position kind), rows move, bad use is a clear
error. Tolerance 1e-5 in float32: the same terms summed in a different order (batched, masked, or block-sparse)."""

from __future__ import annotations

import pytest
import torch
from test_decoder import ATTENTIONS, POSITIONS, make

from modeling.kv_cache import KVCache


def ragged_decode(
    model, ids: torch.Tensor, prompts: list[int], steps: int, span_extra: int = 0, segmented: bool = False
) -> torch.Tensor:
    """Prefill row r's first ``prompts[r]`` tokens alone into its cache row, then decode the next ``steps`` tokens
    of every row together at its own position (``segmented``: each row a segment reading only its own columns).
    Returns the decoded logits (B, steps, V)."""
    B = ids.shape[0]
    cache = model.preallocated_cache(B)
    for r, length in enumerate(prompts):
        model.next_logits(ids[r : r + 1, :length], [c.view(slice(r, r + 1)) for c in cache])
    out = []
    for step in range(steps):
        positions = torch.tensor([[length + step] for length in prompts])  # (B, 1)
        span = max(prompts) + step + 1 + span_extra
        segments = (
            tuple((r, r + 1, length + step + 1) for r, length in enumerate(prompts)) if segmented else None
        )
        views = [c.view(slice(0, B), span, segments) for c in cache]
        out.append(model.next_logits(ids.gather(1, positions), views, positions=positions))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_rows_at_their_own_positions_equal_their_full_pass(attention: str, segmented: bool) -> None:
    model = make(attention)
    ids = torch.randint(0, 50, (3, 40), generator=torch.Generator().manual_seed(1))
    prompts, steps = [5, 17, 9], 12
    with torch.inference_mode():
        full = model(ids).logits
        got = ragged_decode(model, ids, prompts, steps, segmented=segmented)
    for r, length in enumerate(prompts):
        torch.testing.assert_close(got[r], full[r, length : length + steps], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("position", list(POSITIONS))
def test_per_row_positions_for_every_position_kind(position: str, segmented: bool) -> None:
    model = make("local", position)
    ids = torch.randint(0, 50, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = model(ids).logits
        got = ragged_decode(
            model, ids, [4, 11], 6, span_extra=7, segmented=segmented
        )  # past every row: masked
    torch.testing.assert_close(got[0], full[0, 4:10], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], full[1, 11:17], atol=1e-5, rtol=1e-5)


def test_garbage_past_a_row_is_never_read() -> None:
    """A row's columns past its position may hold another sequence's keys: they change nothing."""
    model = make("dense")
    ids = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        clean = ragged_decode(model, ids, [3, 10], 4)
        cache = model.preallocated_cache(2)
        for c in cache:
            c._k.normal_(), c._v.normal_()
        for r, length in enumerate([3, 10]):
            model.next_logits(ids[r : r + 1, :length], [c.view(slice(r, r + 1)) for c in cache])
        positions = torch.tensor([[3], [10]])
        dirty = model.next_logits(
            ids.gather(1, positions), [c.view(slice(0, 2), 11) for c in cache], positions=positions
        )
    torch.testing.assert_close(dirty, clean[:, 0], atol=1e-5, rtol=1e-5)


def test_move_row_and_views_share_storage() -> None:
    cache = KVCache.preallocated(3, 2, 8, 4)
    k = torch.randn(1, 2, 5, 4)
    cache.view(slice(2, 3)).append(k, k + 1)  # a prompt into row 2
    cache.move_row(2, 0)
    assert torch.equal(cache._k[0, :, :5], k[0]) and torch.equal(cache._v[0, :, :5], k[0] + 1)
    keys, _ = cache.view(slice(0, 2), span=6).write(
        k[:, :, :1].expand(2, 2, 1, 4), k[:, :, :1].expand(2, 2, 1, 4), torch.tensor([[5], [0]])
    )
    assert keys.shape == (2, 2, 6, 4) and torch.equal(cache._k[0, :, 5], k[0, :, 0])  # through the view
    assert torch.equal(cache._k[1, :, 0], k[0, :, 0]) and torch.equal(cache._k[0, :, :5], k[0])


def test_shift_rows_moves_the_columns_in_use() -> None:
    """Rows move down to make room and back up to close a gap (overlapping ranges), their first columns only."""
    cache = KVCache.preallocated(4, 2, 8, 3)
    cache._k.normal_(), cache._v.normal_()
    before_k, before_v = cache._k.clone(), cache._v.clone()
    cache.shift_rows(1, 3, 1, 5)  # rows 1, 2 → 2, 3
    assert torch.equal(cache._k[2:4, :, :5], before_k[1:3, :, :5])
    assert torch.equal(cache._v[2:4, :, :5], before_v[1:3, :, :5])
    assert torch.equal(cache._k[:2], before_k[:2]) and torch.equal(cache._k[2:, :, 5:], before_k[2:, :, 5:])
    cache.shift_rows(2, 4, -1, 5)  # and back: rows 2, 3 → 1, 2
    assert torch.equal(cache._k[1:3, :, :5], before_k[1:3, :, :5])


def test_segments_must_cover_the_rows_within_the_span() -> None:
    cache = KVCache.preallocated(4, 2, 8, 3)
    assert cache.view(slice(0, 3), 6, ((0, 2, 6), (2, 3, 2))).segments == ((0, 2, 6), (2, 3, 2))
    for bad in (((0, 2, 6),), ((0, 1, 6), (2, 3, 2)), ((0, 3, 7),), ((0, 3, 0),)):
        with pytest.raises(ValueError, match="segments"):
            cache.view(slice(0, 3), 6, bad)


def test_a_view_continues_from_its_length() -> None:
    """Rows decoding in lock step: a view of the first rows, ``length`` positions already filled."""
    cache = KVCache.preallocated(3, 2, 8, 4)
    k = torch.randn(2, 2, 5, 4)
    cache.view(slice(0, 2)).append(k, k)  # positions 0 … 4
    new = torch.randn(2, 2, 1, 4)
    keys, _ = cache.view(slice(0, 2), length=5).append(new, new)  # position 5
    assert keys.shape == (2, 2, 6, 4) and torch.equal(keys[:, :, :5], k) and torch.equal(keys[:, :, 5:], new)
    with pytest.raises(ValueError, match="length must be in"):
        cache.view(slice(0, 1), length=9)


def test_bad_use_is_a_clear_error() -> None:
    cache = KVCache.preallocated(2, 2, 4, 3)
    with pytest.raises(ValueError, match="capacity"):
        cache.view(slice(0, 1)).append(torch.zeros(1, 2, 5, 3), torch.zeros(1, 2, 5, 3))
    with pytest.raises(ValueError, match="fixed storage"):
        KVCache().write(torch.zeros(1, 2, 1, 3), torch.zeros(1, 2, 1, 3), torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="positions must be"):
        cache.write(torch.zeros(2, 2, 1, 3), torch.zeros(2, 2, 1, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="span"):
        cache.view(slice(0, 1), span=5)
    model = make("dense")
    with pytest.raises(ValueError, match="per-row positions need a cache"):
        model.next_logits(
            torch.zeros(1, 1, dtype=torch.long), None, positions=torch.zeros(1, 1, dtype=torch.long)
        )
