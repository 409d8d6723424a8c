"""The two training objectives as modules (so DistributedDataParallel wraps the loss computation whole).

* Masked LM (Devlin et al. 2019): cross-entropy at the corrupted positions only; the output head runs on
  those rows alone (``model.logits(hidden[mask])``), which skips ~85 % of the vocabulary projection.
* Causal LM (Radford et al. 2018): cross-entropy of every next token.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def hidden_of(model: nn.Module, ids: Tensor) -> Tensor:
    """The final hidden states ``(B, T, d)``, without the output head where the model allows it."""
    if hasattr(model, "hidden_states"):
        return model.hidden_states(ids)[0]
    return model(ids).hidden


class MaskedLM(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, positions: Tensor, labels: Tensor) -> Tensor:
        """``inputs (B, T)``, ``positions (B, T)`` bool, ``labels (B, T)`` → mean loss over the positions."""
        hidden = hidden_of(self.model, inputs)  # (B, T, d)
        logits = self.model.logits(hidden[positions])  # (M, V)
        return F.cross_entropy(logits.float(), labels[positions])


class CausalLM(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``inputs (B, T)`` and ``targets (B, T)`` (inputs shifted by one) → mean next-token loss."""
        logits = self.model.logits(hidden_of(self.model, inputs))  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
