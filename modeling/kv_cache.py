"""The key/value cache of one attention layer for incremental decoding.

Decoding token t only needs the keys and values of tokens < t, which do not change: keep them and append the
new ones (the standard KV cache; torchtune's ``KVCache`` follows the same idea with a preallocated buffer).
Storage grows by doubling, so appending one token is amortised O(1) copies instead of a full ``cat``.
"""

from __future__ import annotations

from torch import Tensor


class KVCache:
    """Keys and values ``(B, H, S, D)`` of the positions decoded so far, for one layer."""

    def __init__(self) -> None:
        self._k: Tensor | None = None  # (B, H, capacity, D)
        self._v: Tensor | None = None
        self._length = 0

    def __len__(self) -> int:
        return self._length

    @property
    def length(self) -> int:
        """How many positions are cached."""
        return self._length

    @property
    def k(self) -> Tensor | None:
        return None if self._k is None else self._k[:, :, : self._length]  # (B, H, S, D)

    @property
    def v(self) -> Tensor | None:
        return None if self._v is None else self._v[:, :, : self._length]  # (B, H, S, D)

    def reset(self) -> None:
        self._k = self._v = None
        self._length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k, v (B, H, T, D)``; return all keys and values ``(B, H, S + T, D)``."""
        if k.shape != v.shape or k.dim() != 4:
            raise ValueError(
                f"KVCache.append: k and v must both be (B, H, T, D), got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        if self._k is not None:
            want = (self._k.shape[0], self._k.shape[1], self._k.shape[3])
            got = (k.shape[0], k.shape[1], k.shape[3])
            if want != got:
                raise ValueError(f"KVCache.append: cache holds (B, H, D) = {want}, new keys have {got}")
        end = self._length + k.shape[2]
        if self._k is None or end > self._k.shape[2] or self._k.dtype != k.dtype:
            capacity = max(end, 2 * (0 if self._k is None else self._k.shape[2]), 16)
            new_k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])  # (B, H, capacity, D)
            new_v = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
            if self._k is not None and self._length:
                new_k[:, :, : self._length] = self._k[:, :, : self._length]
                new_v[:, :, : self._length] = self._v[:, :, : self._length]
            self._k, self._v = new_k, new_v
        self._k[:, :, self._length : end] = k
        self._v[:, :, self._length : end] = v
        self._length = end
        return self.k, self.v
