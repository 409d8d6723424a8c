"""The pieces behind POST /attention on hand-made matrices: encodings, statistics, rollout, grad × attention.

Statistics are rounded to 6 decimals for the wire, hence abs=1e-5 in the comparisons.
"""

import math

import numpy as np
import pytest
import torch

from service.encoding import (
    QUANTISATION_ERROR,
    decode,
    decode_bits,
    encode_bits,
    encode_dense,
    encode_head_bits,
    encode_layout,
)
from service.rollout import gradient_times_attention, relevance, rollout
from service.statistics import head_statistics, is_punctuation


def _random_probs(H, n, mask, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(H, n, n, generator=g).masked_fill(~mask, float("-inf"))
    return scores.softmax(-1)  # (H, n, n), exactly 0 outside the mask


def test_bits_round_trip_odd_sizes():
    mask = torch.rand(3, 7, 5, generator=torch.Generator().manual_seed(1)) > 0.5
    assert np.array_equal(decode_bits(encode_bits(mask)), mask.numpy())


def test_a_mask_shared_by_every_head_is_sent_once():
    one = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(2)) > 0.5
    shared = encode_head_bits(one.expand(3, 6, 6))
    assert shared["shape"] == [1, 6, 6] and shared["heads"] == 3
    assert np.array_equal(decode_bits(shared), one.expand(3, 6, 6).numpy())
    different = torch.cat((one, ~one))
    assert "heads" not in encode_head_bits(different)
    assert np.array_equal(decode_bits(encode_head_bits(different)), different.numpy())


def test_dense_u8_round_trip_within_quantisation_error():
    probs = _random_probs(2, 9, torch.ones(2, 9, 9, dtype=torch.bool))
    decoded = decode(encode_dense(probs))
    # one byte per weight: round(p * 255) is off by at most half a step
    assert np.abs(decoded - probs.numpy()).max() <= QUANTISATION_ERROR + 1e-7


def test_layout_u8_holds_only_layout_entries_and_round_trips():
    n, H = 12, 2
    mask = torch.ones(n, n, dtype=torch.bool).tril().triu(-2).expand(H, n, n).clone()  # window of 3, causal
    probs = _random_probs(H, n, mask)
    block = encode_layout(probs, mask)
    assert block["cells"] == int(mask.sum())
    assert len(__import__("base64").b64decode(block["data"])) == int(
        mask.sum()
    )  # one byte per entry, no more
    decoded = decode(block, encode_bits(mask))
    assert np.abs(decoded - probs.numpy()).max() <= QUANTISATION_ERROR + 1e-7
    assert (decoded[~mask.numpy()] == 0).all()


def test_layout_block_refuses_a_mask_that_does_not_index_it():
    mask = torch.eye(4, dtype=torch.bool)[None]
    block = encode_layout(torch.eye(4)[None], mask)
    with pytest.raises(ValueError, match="mask"):
        decode(block)
    with pytest.raises(ValueError, match="does not index"):
        decode(block, encode_bits(torch.ones(1, 4, 4, dtype=torch.bool)))


def test_identity_attention_statistics():
    n = 6
    A = torch.eye(n)[None]  # (1, n, n)
    special = torch.zeros(n, dtype=torch.bool)
    special[0] = True
    stats = head_statistics(
        A, torch.ones(1, n, n, dtype=torch.bool), special, torch.zeros(n, dtype=torch.bool)
    )[0]
    assert stats["self"] == pytest.approx(1.0, abs=1e-5)
    assert stats["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert stats["previous"] == 0 and stats["next"] == 0 and stats["distance"] == 0
    assert stats["special"] == pytest.approx(1 / n, abs=1e-5)  # only the special row attends to itself
    assert stats["max_entropy"] == pytest.approx(math.log(n), abs=1e-5)


def test_uniform_attention_entropy_is_log_n():
    n = 8
    A = torch.full((2, n, n), 1 / n)
    stats = head_statistics(
        A,
        torch.ones(2, n, n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.bool),
    )
    for head in stats:
        assert head["entropy"] == pytest.approx(math.log(n), abs=1e-5)
        assert head["normalised_entropy"] == pytest.approx(1.0, abs=1e-5)
        assert head["self"] == pytest.approx(1 / n, abs=1e-5)


def test_causal_uniform_entropy_is_compared_with_allowed_keys():
    n = 5
    mask = torch.ones(n, n, dtype=torch.bool).tril()[None]
    A = mask.float() / mask.sum(-1, keepdim=True)  # uniform over the allowed keys
    stats = head_statistics(A, mask, torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool))[0]
    expected = sum(math.log(i + 1) for i in range(n)) / n
    assert stats["entropy"] == pytest.approx(expected, abs=1e-5)
    assert stats["max_entropy"] == pytest.approx(expected, abs=1e-5)
    assert stats["normalised_entropy"] == pytest.approx(1.0, abs=1e-5)


def test_previous_token_head_and_punctuation():
    n = 5
    A = torch.zeros(1, n, n)
    A[0, 0, 0] = 1
    for q in range(1, n):
        A[0, q, q - 1] = 1  # a positional head: always the previous token
    punct = torch.tensor([False, True, False, False, False])
    stats = head_statistics(
        A, torch.ones(1, n, n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), punct
    )[0]
    assert stats["previous"] == pytest.approx(1.0, abs=1e-5)
    assert stats["distance"] == pytest.approx((n - 1) / n, abs=1e-5)
    assert stats["punctuation"] == pytest.approx(1 / n, abs=1e-5)  # only query 2 looks at token 1


@pytest.mark.parametrize("surface", ["¿", "?", "¡", "!", ";", ":", ".", ",", "«", "…"])
def test_spanish_punctuation(surface):
    assert is_punctuation(surface)


@pytest.mark.parametrize("surface", ["niña", "a", "", " ", "3", "¿qué"])
def test_not_punctuation(surface):
    assert not is_punctuation(surface)


def test_rollout_of_identity_is_identity():
    n = 7
    assert torch.allclose(rollout([torch.eye(n).expand(3, n, n)] * 4), torch.eye(n))


def test_rollout_rows_sum_to_one_and_follow_the_layer_order():
    n = 4
    mask = torch.ones(n, n, dtype=torch.bool)
    layers = [_random_probs(2, n, mask.expand(2, n, n), seed=s) for s in range(3)]
    R = rollout(layers)
    assert torch.allclose(R.sum(-1), torch.ones(n), atol=1e-6)
    eye = torch.eye(n)
    hand = eye
    for A in layers:
        hand = (0.5 * A.mean(0) + 0.5 * eye) @ hand  # Abnar & Zuidema 2020: the top layer multiplies last
    assert torch.allclose(R, hand, atol=1e-6)


def test_gradient_times_attention_keeps_positive_part_averaged_over_heads():
    A = torch.tensor([[[0.5, 0.5], [0.0, 1.0]], [[1.0, 0.0], [0.5, 0.5]]])  # (2, 2, 2)
    G = torch.tensor([[[2.0, -2.0], [5.0, 1.0]], [[-1.0, 3.0], [4.0, 0.0]]])
    got = gradient_times_attention(A, G)
    assert torch.allclose(got, torch.tensor([[0.5, 0.0], [1.0, 0.5]]))
    assert (got >= 0).all()


def test_relevance_of_no_maps_is_identity_and_grows_with_them():
    n = 3
    zero = torch.zeros(n, n)
    assert torch.allclose(relevance([zero, zero]), torch.eye(n))
    one = torch.full((n, n), 0.1)
    assert (relevance([one]) > torch.eye(n) - 1e-9).all()


def test_row_scales_keep_precision_for_long_uniform_rows():
    n = 500  # weights ≈ 0.002: below one step of a global 0–1 byte scale, exact with a per-row scale
    probs = torch.full((1, 4, n), 1 / n)
    probs[0, 1, :2] = torch.tensor([0.5, 0.5]) + 0  # a peaked row next to the flat ones
    probs[0, 1, 2:] = 0
    decoded = decode(encode_dense(probs))
    assert np.abs(decoded[0, 0] - 1 / n).max() <= (1 / n) * QUANTISATION_ERROR + 1e-9
    rows = probs.amax(-1, keepdim=True).numpy()
    assert (np.abs(decoded - probs.numpy()) <= rows * QUANTISATION_ERROR + 1e-7).all()


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="unknown encoding"):
        decode({"encoding": "f16", "shape": [1], "data": ""})
