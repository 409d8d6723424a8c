"""The compiled decode step: the same greedy ids as the plain loop (dense and sparse, batch 1 and 3), spans,
and the eager fallback when there is no compiler or compiling fails.

The compiled test builds two tiny graphs (batch 1, two spans): tens of seconds on two busy cores, so it is the
only one; the rest run the same step eagerly over the same preallocated cache.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from modeling import matvec
from modeling.config import AttentionConfig, DecoderConfig
from modeling.decode_step import CompiledDecoder, compiler_missing, span_for
from modeling.decoder import Decoder

BASE = DecoderConfig(
    vocab_size=61, d_model=32, n_layers=2, n_heads=2, d_ff=48, max_len=300, dropout=0.0, position="rope",
    norm="rms", feed_forward="swiglu", bias=False, eos_token_id=2,
)  # fmt: skip
SPARSE = AttentionConfig(pattern="strided", block_size=8, window=16, stride=16)


def make(attention: AttentionConfig = AttentionConfig(), **overrides) -> Decoder:
    torch.manual_seed(0)
    return Decoder(dataclasses.replace(BASE, attention=attention, **overrides)).eval()


def greedy(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` greedy ids per row after ``prompt (B, T)``: the loop stream_tokens runs, batched."""
    with torch.inference_mode():
        cache = model.new_cache(prompt.shape[0]) if isinstance(model, CompiledDecoder) else model.new_cache()
        ids, out = prompt, []
        for _ in range(n):
            ids = model.next_logits(ids, cache).argmax(-1, keepdim=True)  # (B, 1)
            out.append(ids)
    return torch.cat(out, dim=1)  # (B, n)


def test_span_is_a_power_of_two_from_128_capped_at_max_len() -> None:
    assert [span_for(n, 1024) for n in (1, 128, 129, 256, 257, 1000)] == [128, 128, 256, 256, 512, 1024]
    assert span_for(300, 300) == 300


@pytest.mark.parametrize(
    ("attention", "batch", "n"),
    [(AttentionConfig(), 1, 24), (AttentionConfig(), 3, 125), (SPARSE, 1, 24), (SPARSE, 3, 24)],
    ids=["dense-1", "dense-3-two-spans", "strided-1", "strided-3"],
)
def test_static_cache_step_gives_the_plain_loops_ids(attention, batch, n) -> None:
    """125 new tokens after 9 cross from the first span (128 columns) into the second."""
    model = make(attention)
    step = CompiledDecoder(model, compile=False)
    assert step.mode.startswith("eager (compilation not asked for)")  # + why the mat-vec kernels are missing
    prompt = torch.randint(3, 61, (batch, 9), generator=torch.Generator().manual_seed(batch))
    assert torch.equal(greedy(step, prompt, n), greedy(model, prompt, n))


def test_learned_positions_and_layer_norm_decoders_work_too() -> None:
    model = make(position="learned", norm="layer", feed_forward="gelu", bias=True)
    prompt = torch.randint(3, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy(CompiledDecoder(model, compile=False), prompt, 8), greedy(model, prompt, 8))


def test_a_full_forward_is_the_decoders_own() -> None:
    model = make()
    ids = torch.randint(3, 61, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(CompiledDecoder(model, compile=False)(ids).logits, model(ids).logits)


def test_past_max_len_is_a_clear_error() -> None:
    step = CompiledDecoder(make(max_len=20), compile=False)
    cache = step.new_cache()
    with torch.inference_mode():
        step.next_logits(torch.ones(1, 15, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="exceed the model's max_len 20"):
            step.next_logits(torch.ones(1, 6, dtype=torch.long), cache)


def test_no_compiler_falls_back_to_eager_with_one_log_line(monkeypatch, caplog) -> None:
    matvec.available()  # the mat-vec kernels are built (or found) before the compiler disappears
    monkeypatch.setattr("modeling.decode_step.shutil.which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="modeling.decode_step"):
        step = CompiledDecoder(make())
    assert step.mode.startswith("eager (no C++ compiler (g++) on PATH)")
    assert [r.getMessage() for r in caplog.records] == [
        "decode step: running eagerly, no C++ compiler (g++) on PATH"
    ]


def test_a_failing_compile_falls_back_once_and_keeps_the_ids(monkeypatch, caplog) -> None:
    model = make()
    step = CompiledDecoder(model, compile=False)

    def broken(*args):
        raise RuntimeError("C++ compile error")

    step._compiled = broken  # what a failing Inductor build looks like from outside
    prompt = torch.randint(3, 61, (1, 6), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="modeling.decode_step"):
        ids = greedy(step, prompt, 12)
    assert torch.equal(ids, greedy(model, prompt, 12))
    assert step.mode == "eager (compiling failed: RuntimeError)"
    assert len(caplog.records) == 1 and "C++ compile error" in caplog.records[0].getMessage()


@pytest.mark.skipif(
    compiler_missing() is not None, reason=f"torch.compile needs a C++ compiler: {compiler_missing()}"
)
def test_compiled_step_gives_the_eager_ids_and_logits() -> None:
    """Across a span boundary (two graphs, guards skipped once built), and several rows running eagerly.
    Tolerance 1e-4 on logits: Inductor sums the products in another order than the eager kernels."""
    model = make(max_len=256)
    step = CompiledDecoder(model)
    assert step.mode == "compiled"
    prompt = torch.randint(3, 61, (1, 120), generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        greedy(step, prompt, 16), greedy(model, prompt, 16)
    )  # positions 120 … 135: spans 128, 256
    assert step._built == {128, 256}
    assert {signature[0] for signature in step._direct} == {128, 256}  # later steps skip Dynamo
    # two caches taking turns: each direct call writes and reads its own cache
    first, second = prompt, torch.flip(prompt, [1])
    with torch.inference_mode():
        caches = [step.new_cache(), step.new_cache()]
        ids = [
            step.next_logits(p, c).argmax(-1, keepdim=True)
            for p, c in zip((first, second), caches, strict=True)
        ]
        for _ in range(12):
            ids = [step.next_logits(i, c).argmax(-1, keepdim=True) for i, c in zip(ids, caches, strict=True)]
    assert torch.equal(torch.cat(ids), torch.cat([greedy(model, p, 13)[:, -1:] for p in (first, second)]))
    with torch.inference_mode():
        cache, plain = step.new_cache(), model.new_cache()
        step.next_logits(prompt, cache), model.next_logits(prompt, plain)
        token = torch.tensor([[5]])
        torch.testing.assert_close(
            step.next_logits(token, cache), model.next_logits(token, plain), atol=1e-4, rtol=0
        )
    rows = torch.randint(3, 61, (2, 7), generator=torch.Generator().manual_seed(1))
    assert torch.equal(greedy(step, rows, 8), greedy(model, rows, 8))  # batch 2: the eager step
    assert step._built == {128, 256} and step.mode == "compiled"


def test_rows_at_their_own_positions_match_decoding_each_alone() -> None:
    """The continuous-batching call: cache views and per-row positions, as ``Decoder.next_logits`` takes them."""
    model = make(SPARSE)
    step = CompiledDecoder(model, compile=False)
    store = model.preallocated_cache(2)
    short, long = [5, 9, 11], [4, 8, 15, 16, 23, 42]
    with torch.inference_mode():
        for row, prompt in enumerate((short, long)):  # each prompt into its own row
            views = [layer.view(slice(row, row + 1), 128) for layer in store]
            positions = torch.arange(len(prompt))[None]  # (1, T)
            step.next_logits(torch.tensor([prompt]), views, positions=positions)
        views = [layer.view(slice(0, 2), 128) for layer in store]
        together = step.next_logits(torch.tensor([[7], [7]]), views, positions=torch.tensor([[3], [6]]))
        for row, prompt in enumerate((short, long)):
            alone = model.next_logits(torch.tensor([prompt + [7]]), model.new_cache())
            torch.testing.assert_close(together[row], alone[0], atol=1e-5, rtol=0)
