"""The interpolated Kneser-Ney trigram is a proper distribution and learns what it sees."""

from __future__ import annotations

import math

import torch

from training.ngram import KneserNeyTrigram


def test_probabilities_sum_to_one_for_seen_and_unseen_contexts() -> None:
    V = 40
    stream = torch.randint(3, V, (5000,), generator=torch.Generator().manual_seed(0))
    lm = KneserNeyTrigram(stream, V)
    for a, b in [(int(stream[0]), int(stream[1])), (5, 6), (0, 0), (1, 39)]:  # seen, maybe, never seen
        c = torch.arange(V)
        total = float(lm.probability(torch.full_like(c, a), torch.full_like(c, b), c).sum())
        assert math.isclose(total, 1.0, abs_tol=1e-9)  # float64 accumulation


def test_a_repeated_pattern_is_predicted_and_beats_a_unigram() -> None:
    V = 20
    pattern = torch.tensor([3, 7, 11, 5, 9])
    lm = KneserNeyTrigram(pattern.repeat(200), V)
    assert float(lm.probability(torch.tensor([3]), torch.tensor([7]), torch.tensor([11]))) > 0.9
    perplexity = math.exp(-float(lm.stream_log_probs(pattern.repeat(3)).mean()))
    assert perplexity < 1.5  # a unigram model would score 5
    scores = lm.fill(
        torch.tensor([3]), torch.tensor([7]), torch.tensor([5]), torch.tensor([9]), torch.arange(3, V)
    )
    assert int(torch.arange(3, V)[scores.argmax()]) == 11  # fills the gap from both sides
