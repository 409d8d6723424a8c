"""The Noam learning-rate schedule of Vaswani et al. 2017 ("Attention is all you need", eq. 3).

    lr(step) = factor · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)

Linear warm-up for ``warmup`` steps, then decay with the inverse square root of the step. Steps count from 1;
step 0 is treated as step 1 so the first update never uses a zero learning rate.

Optionally a linear cooldown: over the last ``cooldown`` steps of a run of ``total`` steps the rate falls
linearly towards 0 (the inverse-square-root schedule with a cooldown of Zhai et al. 2022, "Scaling Vision
Transformers"; Hägele et al. 2024 find such a cooldown matches a cosine schedule). Without one the schedule
does not depend on the run's length, so a run stopped at step N equals a run of N steps; with one it does.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def noam(step: int, *, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The learning rate at ``step`` (a pure function)."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def cooldown(step: int, *, total: int, steps: int) -> float:
    """The cooldown multiplier of ``step`` (from 1): 1 until the last ``steps`` steps of ``total``, then
    ``steps`` / ``steps``, …, 1 / ``steps`` on the last (so every step still updates)."""
    if steps <= 0:
        return 1.0
    return min(1.0, (total - max(step, 1) + 1) / steps)


def noam_scheduler(
    optimizer: Optimizer,
    *,
    d_model: int,
    warmup: int,
    factor: float = 1.0,
    total: int = 0,
    cooldown_steps: int = 0,
) -> LambdaLR:
    """A LambdaLR whose multiplier is the Noam rate (times the cooldown's, when ``cooldown_steps`` > 0); the
    optimizer's base ``lr`` must be 1.0.

    ``scheduler.step()`` after optimizer step ``k`` (k = 1, 2, …) sets the rate of step ``k + 1``.
    """
    for group in optimizer.param_groups:
        if group["lr"] != 1.0:
            raise ValueError("noam_scheduler: build the optimizer with lr=1.0; the schedule is the rate")

    def rate(epoch: int) -> float:
        step = epoch + 1
        scale = cooldown(step, total=total, steps=cooldown_steps)
        return noam(step, d_model=d_model, warmup=warmup, factor=factor) * scale

    return LambdaLR(optimizer, rate)
