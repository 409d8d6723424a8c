"""The key/value cache of one attention layer for incremental decoding.

Decoding token t only needs the keys and values of tokens < t, which do not change: keep them and write the
new ones (the standard KV cache; torchtune's ``KVCache`` follows the same idea with a preallocated buffer).

Design (shared by the plain decoding loop, the continuous-batching engine and a compiled decode step):

- **Storage** ``k, v (R, H, capacity, D)``: row r is one sequence; its key at position p lives in column p.
  Rows are slots: a running batch gives each sequence a row of its own, and the row is reused when it leaves.
- **Two ways to write.**
  ``append(k, v)``: every row at the same positions ``length … length + T − 1`` (a prompt, or a batch
  decoding in lock step); attention reads columns ``0 … length + T − 1``. A cache built empty (``KVCache()``)
  grows by doubling from ``SMALLEST_CAPACITY`` columns, so appending one token costs amortised O(1) copies and
  a short generation none (each growth copies every row's keys and values: at 32 rows and 64 columns, ~1 ms per
  layer).
  ``write(k, v, positions)``: each row at its own positions ``(R, T)`` — a scatter on the device, no host
  synchronisation; attention reads columns ``0 … span − 1`` and masks, per row, the columns after the row's own
  position (``modeling.attention.dense_plan``), so what a shorter row left there (another sequence's keys, or
  garbage) is never seen.
- **Static shapes.** ``KVCache.preallocated(rows, heads, max_len, d_head)`` allocates once; ``view(rows,
  span)`` is a window on it (``k[rows, :, :span]``, no copy) whose writes land in the storage. A decode step
  over ``view(slice(0, R), span=max_len)`` has the same shapes at every step (what ``torch.compile`` wants);
  a scheduler that knows its rows' lengths as host integers passes the smallest span that covers them instead,
  so each step reads only the columns in use.
- ``move_row(src, dst)`` copies one row over another, and ``shift_rows`` moves a range of rows up or down by
  one, so a running batch keeps its sequences in rows ``0 … n − 1`` (a view of the first n rows, never a gather
  of scattered ones), in the order it chooses.
- **Segments.** A view may group its rows into ``segments`` ``(first, end, columns)``: rows ``first … end − 1``
  read only their first ``columns`` columns (``modeling.attention.attend_in_segments``). A batch whose rows are
  kept longest first reads each group's keys up to the group's longest row instead of the batch's.
"""

from __future__ import annotations

import torch
from torch import Tensor

SMALLEST_CAPACITY = 128  # columns a growing cache starts with


class KVCache:
    """Keys and values ``(R, H, capacity, D)`` of one layer; row r is one sequence, column p its position p."""

    def __init__(
        self,
        k: Tensor | None = None,
        v: Tensor | None = None,
        *,
        span: int | None = None,
        segments: tuple[tuple[int, int, int], ...] | None = None,
    ) -> None:
        if (k is None) != (v is None) or (k is not None and (k.dim() != 4 or k.shape[:3] != v.shape[:3])):
            raise ValueError("KVCache: give both k and v as (R, H, capacity, D) tensors, or neither")
        self._k, self._v = k, v  # (R, H, capacity, D)
        self._growable = k is None
        self._length = 0
        self.span = span if span is not None else (0 if k is None else k.shape[2])
        self.segments = segments  # (first row, end row, columns): see the module docstring

    @classmethod
    def preallocated(
        cls,
        rows: int,
        n_heads: int,
        max_len: int,
        d_head: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> KVCache:
        """A cache of fixed storage ``(rows, n_heads, max_len, d_head)``, allocated once."""
        k = torch.zeros(rows, n_heads, max_len, d_head, dtype=dtype, device=device)
        return cls(k, torch.zeros_like(k))

    def __len__(self) -> int:
        return self._length

    @property
    def length(self) -> int:
        """How many positions ``append`` has written (every row alike)."""
        return self._length

    @property
    def capacity(self) -> int:
        return 0 if self._k is None else self._k.shape[2]

    @property
    def k(self) -> Tensor | None:
        return None if self._k is None else self._k[:, :, : self._length]  # (R, H, S, D)

    @property
    def v(self) -> Tensor | None:
        return None if self._v is None else self._v[:, :, : self._length]  # (R, H, S, D)

    def view(
        self,
        rows: slice,
        span: int | None = None,
        segments: tuple[tuple[int, int, int], ...] | None = None,
        *,
        length: int = 0,
    ) -> KVCache:
        """Rows ``rows`` of this cache, reading columns ``0 … span − 1`` (default: all); writes go to the storage.
        The view starts with ``length`` positions filled (default 0: ``append`` on it fills a fresh sequence
        from position 0; rows decoding in lock step continue theirs). ``segments`` ``(first, end, columns)``, in
        the view's row numbers, cover its rows in order, each within the span."""
        if self._k is None:
            raise ValueError("KVCache.view: the cache has no storage yet (use KVCache.preallocated)")
        span = self.capacity if span is None else span
        if not 0 < span <= self.capacity:
            raise ValueError(f"KVCache.view: span must be in [1, {self.capacity}], got {span}")
        if not 0 <= length <= self.capacity:
            raise ValueError(f"KVCache.view: length must be in [0, {self.capacity}], got {length}")
        k, v = self._k[rows], self._v[rows]
        if segments is not None:
            ends = [0, *(end for _, end, _ in segments)]
            if [first for first, _, _ in segments] != ends[:-1] or ends[-1] != k.shape[0]:
                raise ValueError(f"KVCache.view: segments must cover rows 0 … {k.shape[0] - 1} in order")
            if any(not 0 < columns <= span for _, _, columns in segments):
                raise ValueError(f"KVCache.view: segments' columns must be in [1, {span}]")
        view = KVCache(k, v, span=span, segments=segments)
        view._length = length
        return view

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` over row ``dst`` (a running batch closing the gap a finished sequence left)."""
        if src != dst:
            self._k[dst] = self._k[src]
            self._v[dst] = self._v[src]

    def shift_rows(self, first: int, end: int, by: int, columns: int) -> None:
        """Move rows ``first … end − 1`` to ``first + by …``, their first ``columns`` columns only: a running
        batch kept in order makes room for rows, or closes the gap rows left."""
        if first < end and by and columns:
            source, target = slice(first, end), slice(first + by, end + by)
            self._k[target, :, :columns] = self._k[source, :, :columns].clone()  # the ranges overlap
            self._v[target, :, :columns] = self._v[source, :, :columns].clone()

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k, v (R, H, T, D)`` at positions ``length …``; return all keys and values ``(R, H, S + T, D)``."""
        self._check(k, v, "append")
        end = self._length + k.shape[2]
        if self._k is None or end > self._k.shape[2] or self._k.dtype != k.dtype:
            if not self._growable:
                raise ValueError(
                    f"KVCache.append: {end} positions exceed the cache's capacity {self.capacity}"
                )
            capacity = max(end, 2 * (0 if self._k is None else self._k.shape[2]), SMALLEST_CAPACITY)
            new_k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])  # (R, H, capacity, D)
            new_v = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
            if self._k is not None and self._length:
                new_k[:, :, : self._length] = self._k[:, :, : self._length]
                new_v[:, :, : self._length] = self._v[:, :, : self._length]
            self._k, self._v = new_k, new_v
        self._k.narrow(2, self._length, end - self._length).copy_(k)  # (R, H, T, D) at columns length …
        self._v.narrow(2, self._length, end - self._length).copy_(v)
        self._length = end
        return self._k.narrow(2, 0, end), self._v.narrow(2, 0, end)  # (R, H, S + T, D)

    def write(self, k: Tensor, v: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k, v (R, H, T, D)`` of row r at ``positions[r] (R, T)`` (each < span); return the columns
        attention reads, ``(R, H, span, D)``. A scatter on the device: no host synchronisation."""
        self._check(k, v, "write")
        if self._k is None or self._growable:
            raise ValueError("KVCache.write: per-row positions need fixed storage (KVCache.preallocated)")
        R, H, T, D = k.shape
        if positions.shape != (R, T):
            raise ValueError(f"KVCache.write: positions must be ({R}, {T}), got {tuple(positions.shape)}")
        rows = torch.arange(R, device=positions.device)[:, None]  # (R, 1)
        # an index_put_ into the storage itself: compiled, it stays in place (a scatter_ into the span's
        # window made Inductor copy the whole window out and back, per layer and step)
        self._k[rows, :, positions] = k.transpose(1, 2)  # (R, T, H, D) into (R, H, capacity, D)
        self._v[rows, :, positions] = v.transpose(1, 2)
        return self._k[:, :, : self.span], self._v[:, :, : self.span]  # (R, H, span, D)

    def _check(self, k: Tensor, v: Tensor, what: str) -> None:
        if k.shape[:3] != v.shape[:3] or k.dim() != 4 or v.dim() != 4:
            raise ValueError(
                f"KVCache.{what}: k and v must both be (B, H, T, D), got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        if self._k is not None:
            want = (self._k.shape[0], self._k.shape[1], self._k.shape[3])
            got = (k.shape[0], k.shape[1], k.shape[3])
            if want != got:
                raise ValueError(f"KVCache.{what}: cache holds (B, H, D) = {want}, new keys have {got}")
