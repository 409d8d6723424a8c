"""The Noam schedule equals its closed form (Vaswani et al. 2017, eq. 3), also through the optimizer."""

from __future__ import annotations

import math

import torch

from training.schedule import noam, noam_scheduler


def test_noam_matches_the_closed_form() -> None:
    d, warmup, factor = 256, 400, 2.0
    for step in (1, 2, 50, 399, 400, 401, 1000, 10_000):
        expected = factor * d**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert math.isclose(noam(step, d_model=d, warmup=warmup, factor=factor), expected, rel_tol=1e-12)
    peak = noam(warmup, d_model=d, warmup=warmup, factor=factor)
    assert math.isclose(peak, factor * (d * warmup) ** -0.5, rel_tol=1e-12)  # both branches meet at warmup
    assert noam(warmup - 1, d_model=d, warmup=warmup) < noam(warmup, d_model=d, warmup=warmup)
    assert noam(warmup + 1, d_model=d, warmup=warmup) < noam(warmup, d_model=d, warmup=warmup)
    assert noam(0, d_model=d, warmup=warmup) == noam(1, d_model=d, warmup=warmup) > 0


def test_scheduler_gives_step_k_the_rate_of_step_k() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([p], lr=1.0)
    scheduler = noam_scheduler(optimizer, d_model=64, warmup=10, factor=1.0)
    for step in range(1, 30):
        assert math.isclose(optimizer.param_groups[0]["lr"], noam(step, d_model=64, warmup=10), rel_tol=1e-12)
        optimizer.step()
        scheduler.step()


def test_cooldown_falls_linearly_to_the_last_step() -> None:
    from training.schedule import cooldown

    assert [cooldown(k, total=10, steps=4) for k in range(1, 11)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert all(cooldown(k, total=10, steps=0) == 1.0 for k in range(1, 11))
    p = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([p], lr=1.0)
    scheduler = noam_scheduler(optimizer, d_model=64, warmup=3, total=10, cooldown_steps=4)
    for step in range(1, 11):
        expected = noam(step, d_model=64, warmup=3) * cooldown(step, total=10, steps=4)
        assert math.isclose(optimizer.param_groups[0]["lr"], expected, rel_tol=1e-12)
        optimizer.step()
        scheduler.step()
