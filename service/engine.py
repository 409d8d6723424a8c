"""Continuous batching for decoders (Yu et al. 2022, Orca's iteration-level scheduling): one running batch per
served decoder, shared by every generation route.

    submit ─▶ waiting (bounded: full → Overloaded, a 429 with Retry-After)
                 │ at the next step, while a row is free
                 ▼
             prefill (the prompts joining at this step, one batch per prompt length, into cache rows
                 │        placed so that the rows stay longest first; their first tokens go out at once)
                 ▼
             running ──▶ one decode step for all rows, each at its own position ──▶ tokens out
                 │ finished / stop string / cancelled / past its time limit: leaves before the next step
                 ▼
             row freed (the shorter rows below it move up: the running rows are always 0 … n − 1, longest first)

Each row has its own KV-cache row and position (``modeling.kv_cache``: a preallocated cache, written at per-row
positions), its own sampling settings, seen tokens (repetition penalty), seeded generator, detokenizer and stop
strings (``modeling.generation.pick_tokens`` / ``TokenText``, the very code of the one-sequence loop
``stream_tokens``), so a request's tokens do not depend on its batch-mates. Sparse decoders take each row's
mask from the layout at the row's own position.

What a step reads: at 32 rows the keys and values of every layer outgrow the CPU's cache, and a step's attention
costs the columns it reads. The rows being longest first, each group of ``SEGMENT_ROWS`` rows reads only up to
its own longest row (``_reads``); moving rows costs only the columns in use (``KVCache.shift_rows``).

Where it runs, and why not LitServe's ``ContinuousBatchingLoop``: the scheduler is one thread in the API
server process; the routes (``/generate``, ``/generate_stream``, the OpenAI routes) call ``Engine.submit`` and
read tokens from the returned ``Generation`` (an async iterator) on the event loop. LitServe 0.2.19's loop
was read and not used: it serves one streaming LitAPI, so each route would get its own worker process, its own
model copy and its own batch (the routes would compete for the cores instead of sharing a batch); its
requests reach the worker through a queue with no way back for "the client left", so a cancelled request could
not leave the batch; it polls and spins while idle; its waiting list is unbounded (no 429); and
``DefaultContinuousBatchingLoop.add_request`` does not accept the arguments the loop passes it, so it fails
on the first request. In-process, a disconnect is a method call (``Generation.cancel``), the waiting queue
is a counted list, and the thread sleeps on a condition variable when there is nothing to do. The price: the
decode steps share the API process with the event loop (PyTorch releases the GIL inside its kernels), and the
batch lives in one API process (``atencion serve`` runs one).

Usage::

    engine = Engine(model, tokenizer, max_running=32, max_waiting=64).start()
    generation = engine.submit(prompt_ids, Sampling(max_new_tokens=16), route="/generate", timeout=60)
    async for token in generation:   # GeneratedToken; the last has finish_reason; errors raise GenerationError
        ...
    generation.cancel()              # the client left: its row is freed before the next step
"""

from __future__ import annotations

import asyncio
import itertools
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tokenizers import Tokenizer

from modeling.decode_step import span_for
from modeling.decoder import Decoder
from modeling.generation import GeneratedToken, Sampling, TokenText, check_prompt, pick_tokens

SEGMENT_ROWS = 8  # an eager decode step reads each group of this many rows up to the group's longest


def step_reads(
    lengths: list[int], max_len: int, *, compiled: bool = False
) -> tuple[int, tuple[tuple[int, int, int], ...] | None]:
    """The cache columns a decode step over rows of ``lengths`` (longest first, each counting the key the step
    writes) reads: its span, and the segments of rows reading less.

    At 32 rows the keys and values of all layers no longer fit in the CPU's cache, and a step's attention
    costs what it reads. An eager step reads up to the longest row, and each group of ``SEGMENT_ROWS`` rows only
    up to its own longest (``modeling.attention.attend_in_segments``); neighbouring groups reading as far are
    one segment (each segment is an attention call of its own). A compiled step wants few shapes: a power of
    two that covers every row (``span_for``), no segments."""
    if compiled:
        return span_for(max(lengths), max_len), None
    segments: list[tuple[int, int, int]] = []
    for first in range(0, len(lengths), SEGMENT_ROWS):
        end, columns = min(first + SEGMENT_ROWS, len(lengths)), max(lengths[first : first + SEGMENT_ROWS])
        if segments and segments[-1][2] == columns:
            segments[-1] = (segments[-1][0], end, columns)
        else:
            segments.append((first, end, columns))
    return max(lengths), (tuple(segments) if len(segments) > 1 else None)


def _same_length(sequences: list[_Sequence]) -> list[list[_Sequence]]:
    """The sequences grouped by prompt length, longest first, each group in arrival order."""
    groups: dict[int, list[_Sequence]] = {}
    for sequence in sequences:
        groups.setdefault(len(sequence.prompt_ids), []).append(sequence)
    return [groups[length] for length in sorted(groups, reverse=True)]


class Overloaded(Exception):
    """The waiting queue is full; ``retry_after`` is a guess, in whole seconds, of when a place frees up."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GenerationError(Exception):
    """A generation ended without finishing: ``kind`` is ``timeout`` (its time limit), ``generation`` (the model
    failed), ``cancelled`` (``Generation.cancel``) or ``shutdown`` (the engine stopped)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Observer(Protocol):
    """What the engine reports, for metrics (``service.metrics.EngineMetrics``); every method is optional work."""

    def queued(self, route: str, waiting: int) -> None: ...
    def started(
        self, route: str, queue_seconds: float, prompt_tokens: int, running: int, waiting: int
    ) -> None: ...
    def tokens(
        self, route: str, count: int, first_token_seconds: float | None, per_token: float | None
    ) -> None: ...
    def step(self, rows: int) -> None: ...
    def ended(self, route: str, reason: str, running: int, waiting: int) -> None: ...


class _Silent:
    def queued(self, *args: object) -> None:
        pass

    started = tokens = step = ended = queued


@dataclass(eq=False)
class _Sequence:
    """One request, waiting or in a row of the running batch."""

    id: int
    prompt_ids: list[int]
    sampling: Sampling
    route: str
    top_logprobs: int
    deadline: float | None
    submitted: float
    generation: Generation
    generator: torch.Generator | None = None
    text: TokenText | None = None
    length: int = 0  # positions in its cache row
    next_id: int = 0  # the token to feed at position ``length``
    sent: int = 0  # tokens delivered
    last_token_at: float = 0.0
    end: str | None = None  # why it leaves: a finish reason, "cancelled", "timeout", "generation"


class Generation:
    """A submitted request's tokens: ``async for`` (or ``for``, outside an event loop) over ``GeneratedToken``s;
    the last one carries ``finish_reason``. A time limit or a model failure raises ``GenerationError``."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop | None) -> None:
        self._engine = engine
        self.tokenizer = engine.tokenizer
        self._loop = loop
        self._async: asyncio.Queue | None = asyncio.Queue() if loop is not None else None
        self._sync: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False
        self.sequence: _Sequence | None = None

    def cancel(self) -> None:
        """Stop generating (the client left): the row is freed before the next decode step, and a consumer still
        waiting on this generation gets ``GenerationError(kind="cancelled")``."""
        if not self.cancelled:
            self.cancelled = True
            self._put(GenerationError("the generation was cancelled", "cancelled"))
            self._engine._wake()

    def _put(self, item: GeneratedToken | GenerationError) -> None:
        _deliver([(self, [item])])

    def _receive(self, items: list[GeneratedToken | GenerationError]) -> None:
        """On the consumer's event loop: queue what one step produced."""
        for item in items:
            self._async.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[GeneratedToken]:
        return self._iterate_async()

    async def _iterate_async(self) -> AsyncIterator[GeneratedToken]:
        if self._async is None:
            raise RuntimeError("Generation: submitted outside an event loop; iterate it with a plain for")
        try:
            while True:
                item = await self._async.get()
                if isinstance(item, GenerationError):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self.cancel()  # the consumer stopped early (disconnect, exception): free the row

    def __iter__(self) -> Iterator[GeneratedToken]:
        if self._loop is not None:
            raise RuntimeError("Generation: submitted inside an event loop; iterate it with async for")
        try:
            while True:
                item = self._sync.get()
                if isinstance(item, GenerationError):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self.cancel()


Deliveries = list[tuple[Generation, list[GeneratedToken | GenerationError]]]  # items for each generation


def _deliver(deliveries: Deliveries) -> None:
    """Hand each generation its items: one ``call_soon_threadsafe`` per event loop for a whole step (each call
    wakes the loop through a pipe and takes the GIL there), a plain queue for consumers outside a loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for generation, items in deliveries:
        if generation._loop is None:
            for item in items:
                generation._sync.put(item)
        else:
            by_loop.setdefault(generation._loop, []).append((generation, items))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_receive_all, batch)
        except RuntimeError:  # the event loop is gone: nobody is listening
            for generation, _ in batch:
                generation.cancelled = True
                generation._engine._wake()


def _receive_all(batch: Deliveries) -> None:
    for generation, items in batch:
        generation._receive(items)


@dataclass
class _Stats:
    """Recent generation times, for Retry-After."""

    seconds: deque = field(default_factory=lambda: deque(maxlen=64))

    def mean(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else 1.0


class Engine:
    """The running batch of one decoder (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        *,
        max_running: int = 32,
        max_waiting: int = 64,
        threads: int | None = None,
        observer: Observer | None = None,
        name: str = "decoder",
    ) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError("Engine: max_running must be >= 1 and max_waiting >= 0")
        self.model, self.tokenizer, self.name = model, tokenizer, name  # a Decoder or a CompiledDecoder
        self.config = model.config
        self.max_running, self.max_waiting, self.threads = max_running, max_waiting, threads
        self.observer = observer or _Silent()
        self.device = next(model.parameters()).device
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._condition = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stats = _Stats()
        self.generated_tokens = 0  # every token delivered so far (a counter for tests and metrics)
        self.steps = 0  # decode steps run
        with torch.inference_mode():
            self._cache = model.preallocated_cache(max_running)
            self._seen = torch.zeros(
                max_running, self.config.vocab_size, dtype=torch.bool, device=self.device
            )

    # ---- the API ----------------------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"engine-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the scheduler; every waiting and running request ends with a ``shutdown`` error."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        *,
        route: str = "",
        timeout: float | None = None,
        top_logprobs: int = 0,
    ) -> Generation:
        """Queue a request; it joins the running batch at the next step. Raises ``ValueError`` for a prompt the
        model cannot take (message starting with ``prompt_ids:``) and ``Overloaded`` when the queue is full.
        ``timeout``: seconds from now after which the generation ends with a ``timeout`` error."""
        prompt_ids = check_prompt(prompt_ids, self.config)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        generation = Generation(self, loop)
        now = time.monotonic()
        sequence = _Sequence(
            next(self._ids), prompt_ids, sampling, route, top_logprobs,
            None if not timeout else now + timeout, now, generation,
        )  # fmt: skip
        generation.sequence = sequence
        with self._condition:
            if self._stopping:
                raise GenerationError("the engine has stopped", "shutdown")
            free = self.max_running - len(self._running)
            if len(self._waiting) >= self.max_waiting + max(0, free):
                raise Overloaded(
                    f"model {self.name}: {len(self._waiting)} requests are waiting and "
                    f"{len(self._running)} generating; try again later",
                    self.retry_after(),
                )
            self._waiting.append(sequence)
            self.observer.queued(route, len(self._waiting))
            self._condition.notify_all()
        return generation

    def retry_after(self) -> int:
        """Seconds until a place is likely to free up: the queue ahead, served ``max_running`` at a time."""
        rounds = (len(self._waiting) + 1) / self.max_running
        return max(1, math.ceil(rounds * self._stats.mean()))

    # ---- the scheduler thread -------------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while True:
            with self._condition:
                while not self._stopping and not self._running and not self._waiting:
                    self._condition.wait()
                if self._stopping:
                    break
                joining = []
                while self._waiting and len(self._running) + len(joining) < self.max_running:
                    joining.append(self._waiting.popleft())
            try:
                live = []
                for sequence in joining:
                    if self._expired(sequence, time.monotonic()):
                        self._finish(sequence, waiting=True)
                    else:
                        live.append(sequence)
                last = [item for group in _same_length(live) for item in self._prefill(group)]
                self._leave()
                _deliver(last)
                if self._running:
                    last = self._decode()
                    self._leave()
                    _deliver(last)  # after their rows are free: a client may send its next request at once
            except Exception as error:  # noqa: BLE001 — a bug here must not leave clients waiting forever
                for sequence in {*self._running, *joining}:
                    sequence.generation._put(GenerationError(f"generation failed: {error}", "generation"))
                self._running.clear()
        for sequence in [*self._running, *self._waiting]:
            sequence.generation._put(GenerationError("the server is shutting down", "shutdown"))
        self._running.clear()
        self._waiting.clear()

    def _expired(self, sequence: _Sequence, now: float) -> bool:
        if sequence.end is None:
            if sequence.generation.cancelled:
                sequence.end = "cancelled"
            elif sequence.deadline is not None and now > sequence.deadline:
                sequence.end = "timeout"
        return sequence.end is not None

    @torch.inference_mode()
    def _prefill(self, group: list[_Sequence]) -> Deliveries:
        """Prompts of one length together, into free rows next to each other (the rows stay longest first);
        their first tokens go out at once, but for those of sequences that end there (returned, as ``_emit``'s).
        A burst of requests prefills as one batch, not one prompt at a time."""
        T, m = len(group[0].prompt_ids), len(group)
        for i, sequence in enumerate(group):
            s = sequence.sampling
            if s.do_sample and s.seed is not None:
                sequence.generator = torch.Generator().manual_seed(s.seed)
            budget = min(s.max_new_tokens, self.config.max_len - T)
            sequence.text = TokenText(self.tokenizer, sequence.prompt_ids, s, self.config, budget)
            self.observer.started(
                sequence.route, time.monotonic() - sequence.submitted, T,
                len(self._running) + i + 1, len(self._waiting),
            )  # fmt: skip
        row = self._make_room(T, m)
        try:
            ids = torch.tensor([s.prompt_ids for s in group], dtype=torch.long, device=self.device)  # (m, T)
            self._seen[row : row + m] = False
            self._seen[torch.arange(row, row + m, device=self.device)[:, None], ids] = True
            if isinstance(self.model, Decoder):  # the prompts in lock step: causal SDPA or block-sparse
                logits = self.model.next_logits(
                    ids, [c.view(slice(row, row + m)) for c in self._cache]
                )  # (m, V)
            else:  # a compiled decode step takes views with per-row positions only
                views = [c.view(slice(row, row + m), span_for(T, self.config.max_len)) for c in self._cache]
                positions = torch.arange(T, device=self.device).expand(m, T)  # (m, T)
                logits = self.model.next_logits(ids, views, positions=positions)
        except Exception as error:  # noqa: BLE001 — these requests' failure only
            self._shift(row + m, len(self._running) + m, -m, self._columns(row))  # close the room again
            for sequence in group:
                sequence.end = "generation"
                sequence.generation._put(GenerationError(f"generation failed: {error}", "generation"))
                self._finish(sequence, waiting=True)
            return []
        for sequence in group:
            sequence.length = T
            sequence.last_token_at = sequence.submitted
        self._running[row:row] = group
        return self._emit(group, logits)

    def _make_room(self, length: int, count: int) -> int:
        """The first of ``count`` rows where sequences of ``length`` positions keep the rows longest first; the
        rows from there on move down by ``count``."""
        row = next((i for i, s in enumerate(self._running) if s.length < length), len(self._running))
        self._shift(row, len(self._running), count, self._columns(row))
        return row

    def _columns(self, first: int) -> int:
        """The cache columns in use by the running sequences from ``first`` on (0 if none)."""
        return max((s.length for s in self._running[first:]), default=0)

    def _shift(self, first: int, end: int, by: int, columns: int) -> None:
        """Move rows ``first … end − 1`` (their first ``columns`` cache columns, their seen tokens) by ``by``."""
        if first < end:
            for c in self._cache:
                c.shift_rows(first, end, by, columns)
            self._seen[first + by : end + by] = self._seen[first:end].clone()

    def _reads(self, rows: list[_Sequence]) -> tuple[int, tuple[tuple[int, int, int], ...] | None]:
        """The cache columns this step reads (``step_reads``); a compiled step runs for one row only."""
        lengths = [s.length + 1 for s in rows]  # the columns in use once this step's keys are written
        compiled = not isinstance(self.model, Decoder) and len(rows) == 1
        return step_reads(lengths, self.config.max_len, compiled=compiled)

    @torch.inference_mode()
    def _decode(self) -> Deliveries:
        """One token for every running row, each at its own position; returns the last tokens of the sequences
        that ended, for the caller to deliver once their rows are free."""
        rows = self._running
        n = len(rows)
        span, segments = self._reads(rows)
        try:
            ids = torch.tensor([[s.next_id] for s in rows], dtype=torch.long, device=self.device)  # (n, 1)
            positions = torch.tensor(
                [[s.length] for s in rows], dtype=torch.long, device=self.device
            )  # (n, 1)
            views = [c.view(slice(0, n), span, segments) for c in self._cache]
            logits = self.model.next_logits(ids, views, positions=positions)  # (n, V)
        except Exception as error:  # noqa: BLE001 — the batch failed: end its requests, keep serving
            for sequence in rows:
                sequence.end = "generation"
                sequence.generation._put(GenerationError(f"generation failed: {error}", "generation"))
            return []
        for sequence in rows:
            sequence.length += 1
        self.steps += 1
        self.observer.step(n)
        return self._emit(rows, logits)

    def _emit(self, rows: list[_Sequence], logits: torch.Tensor) -> Deliveries:
        """Choose each row's token, update its state and send what its text allows; the last tokens of the
        sequences that end here are returned, not sent (``_loop`` sends them once ``_leave`` freed the rows)."""
        first = self._running.index(rows[0])
        n = len(rows)
        seen = self._seen[first : first + n]
        tokens, logprobs = pick_tokens(
            logits, seen, [s.sampling for s in rows], [s.generator for s in rows]
        )  # (n,), (n, V)
        seen[torch.arange(n, device=self.device), tokens] = True
        chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
        top_k = max(s.top_logprobs for s in rows)
        top = logprobs.topk(top_k, dim=-1) if top_k else None
        now = time.monotonic()
        deliveries, last = [], []
        for row, (sequence, token_id, logprob) in enumerate(zip(rows, tokens.tolist(), chosen, strict=True)):
            sequence.next_id = token_id
            best = ()
            if top is not None and sequence.top_logprobs:
                k = sequence.top_logprobs
                best = tuple(zip(top.indices[row, :k].tolist(), top.values[row, :k].tolist(), strict=True))
            out = sequence.text.accept(token_id, logprob, best)
            if sequence.sent == 0 or out:
                first_seconds = now - sequence.submitted if sequence.sent == 0 and out else None
                per_token = (now - sequence.last_token_at) / max(1, len(out)) if sequence.sent else None
                if out:
                    self.observer.tokens(sequence.route, len(out), first_seconds, per_token)
                    sequence.last_token_at = now
            sequence.sent += len(out)
            self.generated_tokens += len(out)
            if sequence.text.done:
                sequence.end = out[-1].finish_reason
            if out:
                (last if sequence.text.done else deliveries).append((sequence.generation, out))
        _deliver(deliveries)
        return last

    @torch.inference_mode()
    def _leave(self) -> None:
        """Free the rows of finished, cancelled and timed-out sequences; drop cancelled waiting ones."""
        now = time.monotonic()
        with self._condition:
            for sequence in [s for s in self._waiting if self._expired(s, now)]:
                self._waiting.remove(sequence)
                self._finish(sequence, waiting=True)
        for row in reversed(range(len(self._running))):
            sequence = self._running[row]
            if not self._expired(sequence, now):
                continue
            # the shorter rows move up: still longest first
            self._shift(row + 1, len(self._running), -1, self._columns(row + 1))
            del self._running[row]
            self._finish(sequence, waiting=False)

    def _finish(self, sequence: _Sequence, waiting: bool) -> None:
        if sequence.end == "timeout":
            limit = sequence.deadline - sequence.submitted
            sequence.generation._put(
                GenerationError(
                    f"generation stopped: the request took longer than its {limit:g} s limit", "timeout"
                )
            )
        if not waiting:
            self._stats.seconds.append(time.monotonic() - sequence.submitted)
        self.observer.ended(
            sequence.route, sequence.end or "cancelled", len(self._running), len(self._waiting)
        )
