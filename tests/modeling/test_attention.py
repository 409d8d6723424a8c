"""MultiHeadAttention and attend: fused QKV layout, every compute path agrees with the others, masks hold,
padding and caches change nothing for real tokens. float64; tolerances 1e-9 unless said (observed ~1e-15)."""

from __future__ import annotations

import math

import pytest
import torch

from modeling import attention, matvec
from modeling.attention import MultiHeadAttention, attend, attend_in_segments
from modeling.checkpoint import build_model
from modeling.config import AttentionConfig, DecoderConfig, EncoderConfig
from modeling.kv_cache import KVCache
from modeling.layouts import dense, layout_for
from modeling.scores import ScaledDotProduct

D_MODEL, HEADS = 16, 4
SPARSE = {
    "local": AttentionConfig(pattern="local", window=3, block_size=4),
    "growing": AttentionConfig(pattern="local", window=2, head_windows="growing", block_size=4),
    "strided": AttentionConfig(pattern="strided", window=3, stride=3, block_size=4),
    "fixed": AttentionConfig(pattern="fixed", stride=4, summary=1, block_size=4),
    "bigbird": AttentionConfig(pattern="bigbird", window=4, globals=1, randoms=1, block_size=4),
}


def _mha(kind: str = "decoder", position: str = "learned", attention: AttentionConfig | None = None, **kw):
    cls = DecoderConfig if kind == "decoder" else EncoderConfig
    config = cls(
        d_model=D_MODEL, n_heads=HEADS, dropout=0.0, position=position,
        relative_distance=3 if position == "relative" else None, attention=attention or AttentionConfig(), **kw,
    )  # fmt: skip
    torch.manual_seed(0)
    return MultiHeadAttention(config).double(), config


def _x(B: int = 2, T: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _layout(config, T: int):
    return layout_for(config.attention, 0, T, config.n_heads, config.causal)


def test_fused_qkv_rows_are_q_k_v_head_major() -> None:
    mha, _ = _mha("encoder")
    x = _x()
    out, _ = mha(x, layout=None, positions=torch.arange(11))
    (wq, wk, wv), (bq, bk, bv) = mha.qkv.weight.chunk(3), mha.qkv.bias.chunk(3)  # BERT's query/key/value
    heads = lambda w, b: (x @ w.T + b).view(2, 11, HEADS, 4).transpose(1, 2)  # noqa: E731  (B, H, T, D)
    q, k, v = heads(wq, bq), heads(wk, bk), heads(wv, bv)
    probs = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1)
    want = mha.out((probs @ v).transpose(1, 2).reshape(2, 11, D_MODEL))
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("padded", [False, True])
def test_weights_equal_what_the_fast_path_computes(kind: str, padded: bool) -> None:
    mha, _ = _mha(kind)
    x = _x()
    pad = torch.ones(2, 11, dtype=torch.bool)
    if padded:
        pad[1, 8:] = False
    fast, none = mha(x, layout=None, positions=torch.arange(11), pad_mask=pad if padded else None)
    slow, probs = mha(
        x, layout=None, positions=torch.arange(11), pad_mask=pad if padded else None, need_weights=True
    )
    assert none is None and probs.shape == (2, HEADS, 11, 11)
    real = pad[:, :, None]
    torch.testing.assert_close(fast * real, slow * real, atol=1e-12, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, HEADS, 11, dtype=torch.float64))
    assert probs[1, :, :, ~pad[1]].eq(0).all()
    if kind == "decoder":
        assert probs.triu(1).eq(0).all()


@pytest.mark.parametrize("position", ["learned", "rope", "relative"])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_block_sparse_path_equals_dense_path_for_a_full_layout(kind: str, position: str) -> None:
    mha, config = _mha(kind, position)
    x, pos = _x(), torch.arange(11)
    full = dense(11, HEADS, 4) if kind == "encoder" else None
    if kind == "decoder":
        from modeling.layouts import causal

        full = causal(11, HEADS, 4)
    want, want_probs = mha(x, layout=None, positions=pos, need_weights=True)
    got, probs = mha(x, layout=full, positions=pos, need_weights=True)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    torch.testing.assert_close(probs, want_probs, atol=1e-9, rtol=0)


@pytest.mark.parametrize("position", ["rope", "relative"])
@pytest.mark.parametrize("pattern", list(SPARSE))
def test_sparse_layout_equals_dense_reference_with_positions(pattern: str, position: str) -> None:
    mha, config = _mha("encoder", position, SPARSE[pattern])
    x, pos = _x(T=13), torch.arange(13)
    layout = _layout(config, 13)
    out, probs = mha(x, layout=layout, positions=pos, need_weights=True)
    # reference: dense scores over all pairs, the layout as a mask, written out here
    q, k, v = mha.qkv(x).view(2, 13, 3, HEADS, 4).permute(2, 0, 3, 1, 4)  # (B, H, T, D) each
    scores = q @ k.transpose(-2, -1) / 2.0
    if position == "rope":
        q, k = mha.rope.apply(q, pos), mha.rope.apply(k, pos)
        scores = q @ k.transpose(-2, -1) / 2.0
    else:
        index = mha.relative.distance_index(pos, pos)
        scores = scores + mha.relative.score_term(q, index)
    want_probs = torch.softmax(scores.masked_fill(~layout.mask(), float("-inf")), -1)
    heads = want_probs @ v
    if position == "relative":
        heads = heads + mha.relative.value_term(want_probs, index)
    want = mha.out(heads.transpose(1, 2).reshape(2, 13, D_MODEL))
    torch.testing.assert_close(probs, want_probs, atol=1e-9, rtol=0)
    torch.testing.assert_close(out, want, atol=1e-9, rtol=0)


@pytest.mark.parametrize("pattern", ["dense", *SPARSE])
def test_decoder_never_sees_the_future(pattern: str) -> None:
    mha, config = _mha("decoder", "rope", SPARSE.get(pattern))
    x, t = _x(T=14), 9
    layout = _layout(config, 14)
    before, _ = mha(x, layout=layout, positions=torch.arange(14))
    x2 = x.clone()
    x2[:, t:] = torch.randn_like(x2[:, t:])
    after, _ = mha(x2, layout=layout, positions=torch.arange(14))
    torch.testing.assert_close(before[:, :t], after[:, :t], atol=1e-12, rtol=0)
    assert not torch.allclose(before[:, t:], after[:, t:])


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("pattern", ["dense", "local", "strided", "fixed", "bigbird"])
def test_padding_does_not_change_real_tokens(kind: str, pattern: str) -> None:
    if kind == "encoder" and pattern == "bigbird":
        pattern = "growing"  # bidirectional BigBird draws its random blocks over the whole length
    mha, config = _mha(kind, "relative", SPARSE.get(pattern))
    x = _x(B=1, T=7)
    alone, _ = mha(x, layout=_layout(config, 7), positions=torch.arange(7))
    batch = torch.cat((x, torch.zeros(1, 7, D_MODEL, dtype=torch.float64)), dim=1)  # padded to 14
    batch = torch.cat((batch, _x(B=1, T=14, seed=5)), dim=0)
    pad = torch.ones(2, 14, dtype=torch.bool)
    pad[0, 7:] = False
    for need_weights in (False, True):
        out, _ = mha(
            batch,
            layout=_layout(config, 14),
            positions=torch.arange(14),
            pad_mask=pad,
            need_weights=need_weights,
        )
        torch.testing.assert_close(out[:1, :7], alone, atol=1e-9, rtol=0)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("position", ["learned", "rope", "relative"])
@pytest.mark.parametrize("pattern", ["dense", *SPARSE])
def test_kv_cache_decoding_equals_the_full_pass(pattern: str, position: str) -> None:
    mha, config = _mha("decoder", position, SPARSE.get(pattern))
    x, n = _x(T=15), 15
    want, want_probs = mha(x, layout=_layout(config, n), positions=torch.arange(n), need_weights=True)
    cache, outs = KVCache(), []
    with torch.inference_mode():
        out, _ = mha(x[:, :6], layout=_layout(config, 6), positions=torch.arange(6), cache=cache)  # prefill
        outs.append(out)
        for t in range(6, n):
            need = t == n - 1
            out, probs = mha(
                x[:, t : t + 1], layout=_layout(config, t + 1), positions=torch.tensor([t]), cache=cache,
                need_weights=need,
            )  # fmt: skip
            outs.append(out)
    assert len(cache) == n
    torch.testing.assert_close(torch.cat(outs, dim=1), want, atol=1e-9, rtol=0)
    torch.testing.assert_close(probs[:, :, 0], want_probs[:, :, -1], atol=1e-9, rtol=0)


def test_a_query_without_keys_gives_zeros_not_nan() -> None:
    mha, _ = _mha("encoder")
    pad = torch.ones(2, 11, dtype=torch.bool)
    pad[0] = False
    for need_weights in (False, True):
        out, _ = mha(_x(), layout=None, positions=torch.arange(11), pad_mask=pad, need_weights=need_weights)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[0], mha.out.bias.expand(11, D_MODEL))  # zero attention, then the bias


@pytest.mark.parametrize("need_weights", [False, True])
def test_attend_gradcheck_float64(need_weights: bool) -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (
        torch.randn(1, 2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    pad = torch.tensor([[True, True, True, True, False]])

    def f(q, k, v):
        out, _ = attend(
            q, k, v, score=ScaledDotProduct(3), layout=None, causal=True, pad_mask=pad,
            q_pos=torch.arange(5), k_pos=torch.arange(5), need_weights=need_weights,
        )  # fmt: skip
        return out

    assert torch.autograd.gradcheck(f, (q, k, v))  # need_weights=False: the SDPA kernel's backward


def test_dropout_only_in_training_and_probs_before_dropout() -> None:
    config = EncoderConfig(d_model=D_MODEL, n_heads=HEADS, dropout=0.5)
    mha = MultiHeadAttention(config).double()
    x, pos = _x(), torch.arange(11)
    mha.train()
    a, probs = mha(x, layout=None, positions=pos, need_weights=True)
    b, _ = mha(x, layout=None, positions=pos)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, HEADS, 11, dtype=torch.float64))
    mha.eval()
    with torch.inference_mode():
        c, _ = mha(x, layout=None, positions=pos)
        d, _ = mha(x, layout=None, positions=pos)
    assert torch.equal(c, d)


def test_bad_inputs_are_clear_errors() -> None:
    mha, config = _mha("decoder")
    x = _x()
    with pytest.raises(ValueError, match="x must be"):
        mha(x[..., :5], layout=None, positions=torch.arange(11))
    with pytest.raises(ValueError, match="positions"):
        mha(x, layout=None, positions=torch.arange(12))
    with pytest.raises(ValueError, match="pad_mask"):
        mha(x, layout=None, positions=torch.arange(11), pad_mask=torch.ones(2, 11))
    with pytest.raises(ValueError, match="layout was built for 8"):
        mha(x, layout=layout_for(SPARSE["local"], 0, 8, HEADS, True), positions=torch.arange(11))
    with pytest.raises(ValueError, match="KVCache"):
        cache = KVCache()
        cache.append(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
        cache.append(torch.zeros(1, 3, 3, 4), torch.zeros(1, 3, 3, 4))


def test_scaled_scores_keep_gradients_alive() -> None:
    """Why 1/√D (Vaswani 2017 §3.2.1): without it, D=256 dot products saturate the softmax."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(64, 256, generator=g), torch.randn(64, 256, generator=g)
    scaled = torch.softmax(q @ k.T / math.sqrt(256), -1).amax(-1)
    raw = torch.softmax(q @ k.T, -1).amax(-1)
    assert (raw > 0.99).float().mean() > 0.3 > (scaled > 0.99).float().mean()


def test_module_apply_works_with_rope() -> None:
    mha, _ = _mha("decoder", "rope")
    seen = []
    mha.apply(seen.append)  # Rope.apply must not shadow nn.Module.apply
    assert mha in seen and mha.qkv in seen


needs_kernels = pytest.mark.skipif(not matvec.available(), reason=f"{matvec.unavailable()}")


def _sdpa_only(monkeypatch) -> None:
    monkeypatch.setattr(attention, "_one_query_fits", lambda q, k, v: False)


def _counted(monkeypatch) -> list[int]:
    calls, kernel = [], attention.attend_one_query
    monkeypatch.setattr(attention, "attend_one_query", lambda *a: calls.append(1) or kernel(*a))
    return calls


@needs_kernels
@pytest.mark.parametrize("pattern", ["dense", "local"])
@pytest.mark.parametrize("positions", ["shared", "per-row", "segments"])
def test_one_query_kernel_is_sdpa_in_attend(monkeypatch, pattern: str, positions: str) -> None:
    """One query per row, float32: the kernel's output is SDPA's (another order of the sums: 1e-5), for
    shared positions (no mask), rows at their own positions (a causal mask per row) and a layout's mask."""
    g = torch.Generator().manual_seed(0)
    B, H, S, D = 6, 4, 40, 32
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (1, S, S))
    layout = None if pattern == "dense" else layout_for(SPARSE["local"], 0, S, H, True)
    q_pos = (
        torch.tensor([S - 1]) if positions == "shared" else torch.tensor([[39], [30], [25], [25], [7], [0]])
    )
    options = dict(score=ScaledDotProduct(D), layout=layout, causal=True, q_pos=q_pos, k_pos=torch.arange(S))

    def run() -> torch.Tensor:
        with torch.inference_mode():
            if positions == "segments":  # rows 0–1 read 40 columns, 2–3 read 26, 4–5 read 8
                return attend_in_segments(q, k, v, ((0, 2, 40), (2, 4, 26), (4, 6, 8)), **options)
            return attend(q, k, v, pad_mask=None, **options)[0]

    calls = _counted(monkeypatch)
    got = run()
    assert len(calls) == (3 if positions == "segments" else 1)
    _sdpa_only(monkeypatch)
    torch.testing.assert_close(got, run(), atol=1e-5, rtol=1e-5)


@needs_kernels
def test_one_query_kernel_is_not_taken_where_it_does_not_fit(monkeypatch) -> None:
    """With autograd, padding, float64, several queries or a head width off 16's multiples: SDPA."""
    calls = _counted(monkeypatch)
    g = torch.Generator().manual_seed(0)
    cases = [((2, 2, 1, 32), torch.float32, False, True), ((2, 2, 1, 32), torch.float32, True, False)]
    cases += [((2, 2, 1, 32), torch.float64, False, False), ((2, 2, 3, 32), torch.float32, False, False)]
    cases += [((2, 2, 1, 24), torch.float32, False, False)]
    for shape, dtype, padded, grad in cases:
        q, k = torch.randn(shape, generator=g, dtype=dtype), torch.randn(2, 2, 5, shape[-1], dtype=dtype)
        pad_mask = torch.tensor([[True] * 5, [True, True, True, False, False]]) if padded else None
        with torch.set_grad_enabled(grad):
            attend(
                q, k, k, score=ScaledDotProduct(shape[-1]), layout=None, causal=True, pad_mask=pad_mask,
                q_pos=torch.arange(5 - shape[2], 5), k_pos=torch.arange(5),
            )  # fmt: skip
    assert calls == []


@needs_kernels
@pytest.mark.parametrize("pattern", ["dense", "local"])
def test_one_query_kernel_decodes_like_sdpa(monkeypatch, pattern: str) -> None:
    """A float32 decoder, both several-row steps: rows in lock step over a growing cache (``next_logits``),
    and rows of different lengths at their own positions in a preallocated cache, reading the columns and
    segments ``step_reads`` picks (the engine's step). Logits within 1e-4 of SDPA's, the same greedy ids."""
    from service.engine import step_reads

    attention_config = AttentionConfig() if pattern == "dense" else SPARSE["local"]
    config = DecoderConfig(
        vocab_size=300, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=64, dropout=0.0,
        attention=attention_config,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config).eval()
    g = torch.Generator().manual_seed(1)
    lengths = (20, 18, 13, 13, 9, 9, 9, 9, 7, 5, 5, 4, 3, 2, 2, 1)  # longest first: several segments
    prompts = [torch.randint(3, 300, (1, n), generator=g) for n in lengths]
    B, together = len(prompts), torch.randint(3, 300, (len(prompts), 5), generator=g)

    def decode() -> tuple[torch.Tensor, torch.Tensor]:
        logits, chosen = [], []
        with torch.inference_mode():
            cache, ids = model.new_cache(), together  # lock step
            for _ in range(12):
                step = model.next_logits(ids, cache)  # (B, V)
                ids = step.argmax(-1, keepdim=True)  # (B, 1)
                logits.append(step), chosen.append(ids)
            cache = model.preallocated_cache(B)  # each row at its own position
            step = torch.cat(
                [
                    model.next_logits(p, [c.view(slice(r, r + 1)) for c in cache])
                    for r, p in enumerate(prompts)
                ]
            )
            lengths = [p.shape[1] for p in prompts]
            for _ in range(12):
                ids = step.argmax(-1, keepdim=True)  # (B, 1)
                lengths = [n + 1 for n in lengths]
                span, segments = step_reads(lengths, config.max_len)
                positions = torch.tensor(lengths)[:, None] - 1  # (B, 1)
                views = [c.view(slice(0, B), span, segments) for c in cache]
                step = model.next_logits(ids, views, positions=positions)  # (B, V)
                logits.append(step), chosen.append(ids)
        return torch.stack(logits), torch.cat(chosen, 1)

    calls = _counted(monkeypatch)
    logits, ids = decode()
    assert len(calls) >= 2 * 11 * config.n_layers
    _sdpa_only(monkeypatch)
    want_logits, want_ids = decode()
    torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=0)
    assert torch.equal(ids, want_ids)
