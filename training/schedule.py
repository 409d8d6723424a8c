"""The Noam learning-rate schedule of Vaswani et al. 2017 ("Attention is all you need", eq. 3).

    lr(step) = factor · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)

Linear warm-up for ``warmup`` steps, then decay with the inverse square root of the step. Steps count from 1;
step 0 is treated as step 1 so the first update never uses a zero learning rate.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def noam(step: int, *, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The learning rate at ``step`` (a pure function)."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def noam_scheduler(optimizer: Optimizer, *, d_model: int, warmup: int, factor: float = 1.0) -> LambdaLR:
    """A LambdaLR whose multiplier is the Noam rate; the optimizer's base ``lr`` must be 1.0.

    ``scheduler.step()`` after optimizer step ``k`` (k = 1, 2, …) sets the rate of step ``k + 1``.
    """
    for group in optimizer.param_groups:
        if group["lr"] != 1.0:
            raise ValueError("noam_scheduler: build the optimizer with lr=1.0; the schedule is the rate")
    return LambdaLR(optimizer, lambda epoch: noam(epoch + 1, d_model=d_model, warmup=warmup, factor=factor))
