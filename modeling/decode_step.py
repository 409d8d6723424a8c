"""A compiled decode step: one token per row over a preallocated KV cache, as one ``torch.compile`` graph.

Eager decoding pays per-op dispatch on every token: a few hundred small ATen calls and the Python between
them, next to ~21 MB of weights to stream. Compiled (TorchInductor), the step runs as one graph: the norms,
RoPE, SiLU·up and residual adds fuse into a few C++ loops around the products, each single-row product is one
call of the mat-vec kernel (``modeling.matvec``, float32 or int8 weights), attention over the cache is one
call of a one-query kernel (``attend_one_query``), and the keys and values are written in place into the
cache. Inductor's C++ wrapper calls the loops and kernels without Python between them, and
after a graph's first run a step calls it directly, without Dynamo's guards and input gathering (``_step``).

A graph wants the same shapes at every step, so:

- the cache is ``Decoder.preallocated_cache``: ``(rows, H, max_len, D)`` per layer, allocated once, each row
  writing its keys at its own positions (``modeling.kv_cache``);
- a step attends over the first ``span`` columns, ``span`` the smallest power of two ≥ 128 that covers the
  longest row (at most ``log2(max_len / 128) + 1`` spans), so short sequences do not read the whole cache;
- every shape is static (``dynamic=False``), so a new span compiles a graph of its own instead of a slower one
  with a symbolic span;
- the graph takes each layer's whole storage ``(1, H, max_len, D)`` and writes the new keys into it in place
  (``KVCache.write``: an ``index_put_`` on a graph input, which Inductor keeps in place; a ``scatter_`` into the
  span's window made it copy the window out and back, per layer and token); it reads only the span's columns.

Only batch 1 is compiled. Several rows run the same step eagerly: their products are matrix products
(``modeling.projection``'s oneDNN path), where the per-op overhead that compiling removes is a small share, and
a graph with a dynamic batch dimension measured no faster than the eager step (CPU time per step, 1 thread:
0.97–1.03× at 8 rows, 1.00–1.02× at 32; docs/benchmarks.md) while costing a compile of a minute or more per
span on first use, in the middle of serving.

The prompt fills the cache eagerly (one forward, per-row positions). Compiling needs a C++ compiler; where
there is none, or compiling fails, the same step runs eagerly (same code, same numbers) and one log line says
why; ``mode`` reports which. Inductor keeps what it compiled on disk (``TORCHINDUCTOR_CACHE_DIR``), so a
restart reuses it instead of compiling again.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from modeling import matvec
from modeling.decoder import Decoder
from modeling.kv_cache import KVCache
from modeling.layouts import Layout
from modeling.projection import Projection

log = logging.getLogger(__name__)
SMALLEST_SPAN = 128


@dataclass
class StaticCache:
    """Preallocated keys and values for ``rows`` sequences decoded in lock step; ``length`` positions filled."""

    layers: list[KVCache]  # each (rows, H, max_len, D)
    length: int = 0

    @property
    def rows(self) -> int:
        return self.layers[0].k.shape[0] if self.layers[0].k is not None else 0


def span_for(length: int, max_len: int) -> int:
    """The columns a step reads: the smallest power of two ≥ ``SMALLEST_SPAN`` covering ``length``, ≤ max_len."""
    span = SMALLEST_SPAN
    while span < length:
        span *= 2
    return min(span, max_len)


def attend_one_query(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention`` for one query per row, on the one-query kernel of ``modeling.matvec``
    (``attention_kernel.h``); the compiled step's graphs call it instead (``_inductor``). PyTorch's CPU kernel
    works on blocks of queries: for one query over a 128-column span it costs ~10 µs a layer, the one-query
    kernel ~6 (eager calls, 4 heads of 64); ~20 µs of a token with int8 weights, measured in the step.
    ``query (B, H, 1, D)``, ``key``, ``value (B, H, S, D)``, a mask as SDPA takes it → ``(B, H, 1, D)``."""
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # True: attend
        zeros = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
        attn_mask = zeros.masked_fill(~attn_mask, float("-inf"))
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return torch.ops.atencion.attend_one(query, key, value, attn_mask, scale)


def _one_query(node: torch.fx.Node) -> bool:
    """Whether a traced ``F.scaled_dot_product_attention`` call is one the one-query kernel does."""
    if node.op != "call_function" or node.target is not F.scaled_dot_product_attention or len(node.args) != 3:
        return False
    q, k = (node.args[i].meta.get("example_value") for i in (0, 1))
    options = node.kwargs
    return (
        isinstance(q, Tensor)
        and q.dim() == 4
        and q.shape[2] == 1
        and q.shape[1] == k.shape[1]
        and q.shape[-1] % 16 == 0
        and q.dtype == torch.float32
        and options.get("dropout_p", 0.0) == 0.0
        and not options.get("is_causal", False)
        and not options.get("enable_gqa", False)
    )


def compiler_missing() -> str | None:
    """Why ``torch.compile`` cannot build CPU code here, or None if it can."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return "no C++ compiler (g++) on PATH"
    return None


class CompiledDecoder:
    """A ``Decoder``'s decoding API (``config``, ``parameters``, ``new_cache``, ``next_logits``) with a compiled
    one-token step; usable wherever ``stream_tokens`` takes a model."""

    def __init__(self, model: Decoder, compile: bool = True) -> None:
        self.model = model.eval()
        self.config = model.config
        self.dtype = model.embeddings.tokens.weight.dtype
        self._compiled = None
        self._built: set[int] = set()  # spans whose batch-1 graph is compiled
        self._direct: dict[tuple, tuple[Callable, list, list[tuple[int, int]]]] = {}  # see _step
        self._capture: tuple | None = None  # (signature, the step's inputs) while a step runs through Dynamo
        reason = "compilation not asked for" if not compile else compiler_missing()
        kernels = matvec.unavailable()  # built or loaded now, never while a graph is traced
        if reason is None and kernels is None:  # the compiled step's one-row products call the kernel
            for module in model.modules():
                if isinstance(module, Projection):
                    module.pack()
        if reason is None:
            # graphs are per model, batch kind and span: more than Dynamo's default 8 per function
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self._compiled = torch.compile(
                self._forward, fullgraph=True, dynamic=False, backend=self._inductor
            )
            self.mode = "compiled"
        else:
            self.mode = f"eager ({reason})"
            if compile:
                log.warning("decode step: running eagerly, %s", reason)
        if kernels is not None:
            self.mode += f"; {kernels}"

    def warm_up(self) -> None:
        """Build the batch-1 graph of every span now: a prompt ending just inside each span, then one step."""
        if self._compiled is None:
            return
        max_len = self.config.max_len
        spans = sorted({span_for(n, max_len) for n in range(SMALLEST_SPAN, 2 * max_len, SMALLEST_SPAN)})
        device = next(self.parameters()).device
        with torch.inference_mode():
            for span in spans:
                cache = self.new_cache()
                self.next_logits(torch.zeros(1, span - 1, dtype=torch.long, device=device), cache)
                self.next_logits(torch.zeros(1, 1, dtype=torch.long, device=device), cache)

    def parameters(self):
        return self.model.parameters()

    def __call__(self, *args, **kwargs):
        """A full forward (scoring a prompt, say) is the wrapped decoder's own, uncompiled."""
        return self.model(*args, **kwargs)

    def new_cache(self, rows: int = 1) -> StaticCache:
        return StaticCache(self.preallocated_cache(rows))

    def preallocated_cache(self, rows: int, max_len: int | None = None) -> list[KVCache]:
        """``Decoder.preallocated_cache`` in the activations' dtype (int8 weights keep float activations)."""
        return self.model.preallocated_cache(rows, max_len, dtype=self.dtype)

    def next_logits(
        self,
        ids: Tensor,
        cache: StaticCache | list[KVCache],
        pad_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """The last position's logits ``(B, V)`` after feeding ``ids (B, T)``; a prompt (T > 1) and several rows
        (B > 1) run eagerly, one row's next token (B = T = 1) the compiled step.

        ``cache`` a ``StaticCache`` (B ≤ its rows): every row at the next positions, lock step. Or, as
        ``Decoder.next_logits`` takes them, views ``KVCache.view(rows, span)`` of a preallocated cache with each
        row at its own ``positions (B, T)`` (a running batch; the caller picks the span).
        """
        if pad_mask is not None:
            raise ValueError("pad_mask: the decode step takes no padding; give each row its own positions")
        B, T = ids.shape
        compiled = B == T == 1 and self._compiled is not None
        if isinstance(cache, StaticCache):
            start, end = cache.length, cache.length + T
            if end > self.config.max_len:
                raise ValueError(f"ids: {end} positions exceed the model's max_len {self.config.max_len}")
            if not compiled:  # the decoder's own lock-step loop over the preallocated storage
                logits = self.model.next_logits(
                    ids, [c.view(slice(0, B), length=start) for c in cache.layers]
                )
                cache.length = end
                return logits
            span = span_for(end, self.config.max_len)
            rows = [(layer._k, layer._v) for layer in cache.layers]  # each (rows, H, max_len, D)
            keys = tuple(k if k.shape[0] == B else k[:B] for k, _ in rows)  # the storage, no copy
            values = tuple(v if v.shape[0] == B else v[:B] for _, v in rows)
            positions = torch.arange(start, end, device=ids.device)[None]  # (1, 1), like the engine's
        elif positions is None or positions.shape != (B, T):
            raise ValueError(f"positions: cache views need each row's positions ({B}, {T})")
        elif not compiled:  # the decoder's own step, the views' segments included
            return self.model.next_logits(ids, cache, positions=positions)
        else:
            span = cache[0].span
            keys = tuple(view._k for view in cache)  # each (1, H, max_len, D): the storage, no copy
            values = tuple(view._v for view in cache)
        try:
            logits = self._step(ids, positions, keys, values, span)
        except Exception as error:  # a compiler failure: fall back for good, say so once
            self._compiled, self.mode = None, f"eager (compiling failed: {type(error).__name__})"
            self._direct.clear()
            log.warning(
                "decode step: compiling failed, running eagerly (%s: %s)", type(error).__name__, error
            )
            logits = self._forward(ids, positions, keys, values, self.model.layouts(span), span)
        if isinstance(cache, StaticCache):
            cache.length += T
        return logits

    def _step(
        self, ids: Tensor, positions: Tensor, keys: tuple[Tensor, ...], values: tuple[Tensor, ...], span: int
    ) -> Tensor:
        """The compiled step: straight into the span's graph once it has run for these shapes, else through
        Dynamo (which compiles it, or picks it by its guards).

        Through Dynamo, a call checks guards and gathers the graph's inputs (the step's tensors and every weight)
        in Python: ~60 µs of a token's ~400 with int8 weights, measured. Once a graph has run, ``_inductor``
        has kept it with the inputs of that call; a later step with the same span and cache shapes passes the
        same weights and only its own ``ids``, ``positions``, keys and values, so it calls the graph with those
        swapped in. Shapes are all the guards check here (no dynamic shapes, weights fixed: ``pack`` already
        took the snapshot); they are the signature."""
        inputs = (ids, positions, *keys, *values)
        signature = (span, ids.device, keys[0].dtype, keys[0].shape, keys[0].stride())
        direct = self._direct.get(signature)
        if direct is not None:
            graph, args, slots = direct
            args = list(args)
            for arg, given in slots:
                args[arg] = inputs[given]
            return graph(*args)[0]
        self._capture = (signature, inputs)
        try:  # once a span's graph exists, check only the guards that pick among the graphs
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=span in self._built):
                logits = self._compiled(ids, positions, keys, values, self.model.layouts(span), span)
        finally:
            self._capture = None
        self._built.add(span)
        return logits

    def _inductor(self, graph_module: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable:
        """Dynamo's backend: TorchInductor with its C++ wrapper (the graph's kernels and extern calls, the
        mat-vecs among them, called from C++, not Python), and the compiled graph kept, with the inputs of its
        first run, for ``_step``'s direct calls."""
        from torch._inductor.compile_fx import compile_fx

        if matvec.available():  # attention over the cache: the one-query kernel
            for node in graph_module.graph.nodes:
                if _one_query(node):
                    node.target = attend_one_query
            graph_module.recompile()
        graph = compile_fx(graph_module, example_inputs, config_patches={"cpp_wrapper": True})

        def run(*args):
            if self._capture is not None:
                signature, inputs = self._capture
                slots = [
                    (a, i) for a, arg in enumerate(args) for i, given in enumerate(inputs) if arg is given
                ]
                if sorted(i for _, i in slots) == list(range(len(inputs))):  # each found once: kept
                    kept = [None if any(a == s for s, _ in slots) else arg for a, arg in enumerate(args)]
                    self._direct[signature] = (graph, kept, slots)
                self._capture = None
            return graph(*args)

        return run

    def _forward(
        self,
        ids: Tensor,
        positions: Tensor,
        keys: tuple[Tensor, ...],
        values: tuple[Tensor, ...],
        layouts: list[Layout | None],
        span: int,
    ) -> Tensor:
        """``ids (B, T)`` at ``positions (B, T)`` through every block, writing into ``keys``/``values``
        ``(B, H, max_len, D)`` per layer and attending over their first ``span`` columns; the last position's
        logits ``(B, V)``."""
        model = self.model
        x = model.embeddings(ids, positions)  # (B, T, d)
        for block, layout, k, v in zip(model.blocks, layouts, keys, values, strict=True):
            x, _ = block(x, layout=layout, positions=positions, cache=KVCache(k, v, span=span))
        hidden = x[:, -1] if model.final_norm is None else model.final_norm(x[:, -1])  # (B, d)
        return model.logits(hidden)
