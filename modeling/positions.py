"""Position information: absolute (added to the embeddings) and relative (inside attention).

- ``SinusoidalPositions``: fixed sin/cos waves (Vaswani et al. 2017, §3.5).
- ``LearnedPositions``: one learned vector per position (Gehring et al. 2017; BERT, GPT-2).
- ``Rope``: rotary position embedding (Su et al. 2021, "RoFormer"), rotate_half form.
- ``RelativePositions``: learned relative position representations (Shaw et al. 2018).

The absolute ones return ``(T, d)`` for positions ``(T,)``; the embeddings add them. Attention never sees them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalPositions(nn.Module):
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d)) (Vaswani 2017). No parameters."""

    def __init__(self, max_len: int, d: int) -> None:
        super().__init__()
        self.max_len, self.d = max_len, d
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
        frequency = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
        table = torch.zeros(max_len, d)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: d // 2])
        self.register_buffer("table", table, persistent=False)  # (max_len, d)

    def forward(self, positions: Tensor) -> Tensor:
        _check_positions(positions, self.max_len)
        return self.table[positions]  # (T, d)


class LearnedPositions(nn.Module):
    """One learned d-vector per position up to ``max_len`` (BERT's / GPT-2's position embeddings)."""

    def __init__(self, max_len: int, d: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, d) * 0.02)

    def forward(self, positions: Tensor) -> Tensor:
        _check_positions(positions, self.max_len)
        return self.weight[positions]  # (T, d)


def _check_positions(positions: Tensor, max_len: int) -> None:
    """A clear error for positions outside the table, on the CPU only: elsewhere reading them would stall the
    device (an out-of-range index still fails there, in the lookup)."""
    if positions.device.type != "cpu" or not positions.numel() or torch.compiler.is_compiling():
        return
    if int(positions.max()) >= max_len or int(positions.min()) < 0:
        raise ValueError(
            f"positions must lie in [0, {max_len}) (max_len), got {int(positions.min())}…{int(positions.max())}"
        )


def rotate_half(x: Tensor) -> Tensor:
    """(x₁, x₂) → (−x₂, x₁) on the two halves of the last dimension: dimension i pairs with i + D/2."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rope:
    """Rotary position embedding (Su et al. 2021): rotate each (i, i + D/2) pair of q and k by angle p·θ^(−2i/D).

    Then q_m·k_n depends on m − n only. The rotate_half pairing and the float32 angle computation are those of
    Llama, so the same weights give the same numbers. Angles are computed in float64 for float64 inputs.
    A plain object, not an ``nn.Module``: it has no weights, and its ``apply`` would shadow ``Module.apply``.

    ``x·cos + rotate_half(x)·sin`` is computed as ``x·cos + roll(x, D/2)·sin±``, with ``sin±`` the sine whose
    first half is negated (rotate_half's sign folded into the table): one kernel for the swap of the halves
    instead of a negation and a concatenation, and the same numbers (negating a factor is exact).
    """

    def __init__(self, d_head: int, theta: float = 10000.0, max_len: int = 0) -> None:
        if d_head % 2:
            raise ValueError(f"Rope needs an even head width, got {d_head}")
        self.d_head, self.theta, self.max_len = d_head, theta, max_len
        self._tables: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def angles(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin±, each (…, T, D), in ``dtype``: rows of a table of positions 0…max_len−1 computed once
        (the same numbers, elementwise, as computing them for ``positions`` directly). CPU positions past the
        table are computed directly; on other devices they are not looked at (an index past it fails)."""
        key = (dtype, positions.device)
        if key not in self._tables and self.max_len > 0:
            self._tables[key] = self._compute(torch.arange(self.max_len, device=positions.device), dtype)
        # reading positions elsewhere would stall the device; a compiled graph cannot read them either
        on_host = positions.device.type == "cpu" and not torch.compiler.is_compiling()
        if key in self._tables and (
            not on_host or not positions.numel() or int(positions.max()) < self.max_len
        ):
            cos, sin = self._tables[key]
            flat = positions.reshape(-1)  # rows of the tables: index_select costs less than indexing
            shape = (*positions.shape, self.d_head)
            return cos.index_select(0, flat).view(shape), sin.index_select(0, flat).view(
                shape
            )  # (…, T, D) each
        return self._compute(positions, dtype)

    def _compute(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        work = torch.float64 if dtype == torch.float64 else torch.float32
        exponent = torch.arange(0, self.d_head, 2, dtype=torch.int64, device=positions.device).to(work)
        inv_freq = 1.0 / (self.theta ** (exponent / self.d_head))  # (D/2,)
        freqs = positions.to(work)[..., None] * inv_freq  # (…, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (…, T, D)
        sin = emb.sin().to(dtype)
        return emb.cos().to(dtype), torch.cat(
            (-sin[..., : self.d_head // 2], sin[..., self.d_head // 2 :]), -1
        )

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x (B, T, …, D)`` at ``positions (T,)`` or per row ``(B, T)``; any dimensions between T and D
        (heads; queries and keys side by side) share the angles. Returns the same shape."""
        D, T = x.shape[-1], x.shape[1]
        if D != self.d_head or positions.shape not in ((T,), (x.shape[0], T)):
            raise ValueError(
                f"Rope.rotate: need x (B, T, …, {self.d_head}) and positions (T,) or (B, T), "
                f"got {tuple(x.shape)} and {tuple(positions.shape)}"
            )
        cos, sin = self.angles(positions, x.dtype)  # (T, D) or (B, T, D)
        middle = (1,) * (x.dim() - 3)
        cos, sin = (
            cos.view(*cos.shape[:-1], *middle, D),
            sin.view(*sin.shape[:-1], *middle, D),
        )  # (…, T, 1…, D)
        return x * cos + x.roll(D // 2, -1) * sin  # roll: (x₁, x₂) → (x₂, x₁), rotate_half without its sign

    def apply(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x (B, H, T, D)`` at ``positions (T,)``; returns the same shape."""
        return self.apply_pair(x, None, positions)[0]

    def apply_pair(self, q: Tensor, k: Tensor | None, positions: Tensor) -> tuple[Tensor, Tensor | None]:
        """Rotate queries and keys ``(B, H, T, D)`` at the same positions, ``(T,)`` or per row ``(B, T)``."""
        B, _, T, D = q.shape
        if D != self.d_head or positions.shape not in ((T,), (B, T)):
            raise ValueError(
                f"Rope.apply: need x (B, H, T, {self.d_head}) and positions (T,) or (B, T), got {tuple(q.shape)} and {tuple(positions.shape)}"
            )
        rotated_q = self.rotate(q.transpose(1, 2), positions).transpose(1, 2)  # (B, H, T, D)
        rotated_k = None if k is None else self.rotate(k.transpose(1, 2), positions).transpose(1, 2)
        return rotated_q, rotated_k

    def __repr__(self) -> str:
        return f"Rope(d_head={self.d_head}, theta={self.theta})"


class RelativePositions(nn.Module):
    """Relative position representations (Shaw et al. 2018): learned aᴷ, aⱽ per clipped distance.

    For query position i and key position j, r = clip(j − i, −k, k). The score gains q_i·aᴷ_r / √D and the
    output gains Σ_j p_ij aⱽ_r. Distances come from the query and key positions handed in, so the same code
    serves the dense path (T × S) and the block-sparse tiles (any leading dims).
    Both terms go through the 2k+1 distinct distances: q·aᴷ is (…, T, 2k+1) gathered to (…, T, S), and the
    probabilities are summed per distance before multiplying aⱽ — never a (T, S, D) tensor.
    """

    def __init__(self, d_head: int, max_distance: int) -> None:
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"RelativePositions: max_distance must be >= 1, got {max_distance}")
        self.d_head, self.max_distance = d_head, max_distance
        self.keys = nn.Parameter(torch.randn(2 * max_distance + 1, d_head) * 0.02)  # aᴷ (2k+1, D)
        self.values = nn.Parameter(torch.randn(2 * max_distance + 1, d_head) * 0.02)  # aⱽ (2k+1, D)

    def distance_index(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """clip(j − i, −k, k) + k for ``q_pos (…, T)``, ``k_pos (…, S)`` → ``(…, T, S)`` long."""
        distance = k_pos.unsqueeze(-2) - q_pos.unsqueeze(-1)  # (…, T, S)
        return distance.clamp(-self.max_distance, self.max_distance) + self.max_distance

    def score_term(self, q: Tensor, index: Tensor) -> Tensor:
        """q_i·aᴷ_{r(i,j)} / √D: ``q (…, T, D)``, ``index (…, T, S)`` broadcastable → ``(…, T, S)``."""
        per_distance = (q @ self.keys.to(q.dtype).t()) / math.sqrt(self.d_head)  # (…, T, 2k+1)
        shape = torch.broadcast_shapes(per_distance.shape[:-1], index.shape[:-1]) + index.shape[-1:]
        per_distance = per_distance.expand(*shape[:-1], per_distance.shape[-1])
        return per_distance.gather(-1, index.expand(shape))  # (…, T, S)

    def value_term(self, probs: Tensor, index: Tensor) -> Tensor:
        """Σ_j p_ij aⱽ_{r(i,j)}: ``probs (…, T, S)``, ``index`` broadcastable → ``(…, T, D)``."""
        buckets = probs.new_zeros(*probs.shape[:-1], 2 * self.max_distance + 1)  # (…, T, 2k+1)
        buckets = buckets.scatter_add(-1, index.expand(probs.shape), probs)
        return buckets @ self.values.to(probs.dtype)  # (…, T, D)

    def extra_repr(self) -> str:
        return f"d_head={self.d_head}, max_distance={self.max_distance}"
