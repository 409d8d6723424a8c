"""Layouts: each pattern's token mask equals its definition, its block map is exactly what that mask needs,
every row keeps its own token, and the sparse patterns really skip blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modeling.config import AttentionConfig
from modeling.layouts import Layout, bigbird, causal, dense, fixed, from_adjacency, layout_for, local, strided

N, BS, H = 45, 8, 4  # n not a multiple of the block size on purpose
I = torch.arange(N)[:, None]  # (n, 1) query index
J = torch.arange(N)[None, :]  # (1, n) key index


def _exact_blocks(layout: Layout) -> torch.Tensor:
    """(H, nb, nb): the blocks that hold at least one allowed pair, in the layout's token order."""
    mask = layout.mask()  # (H, n, n) natural order
    order = layout.padded_order()[:, :N]  # (H, n)
    permuted = torch.stack([mask[h][order[h]][:, order[h]] for h in range(layout.n_heads)])
    nb = layout.n_blocks
    padded = torch.zeros(layout.n_heads, nb * BS, nb * BS, dtype=torch.bool)
    padded[:, :N, :N] = permuted
    return padded.view(-1, nb, BS, nb, BS).any(dim=(2, 4))


def _check(layout: Layout, want: torch.Tensor, exact_blocks: bool = True) -> None:
    mask = layout.mask()
    assert mask.shape == (layout.n_heads, N, N)
    assert torch.equal(mask, want.expand_as(mask)), "token mask differs from the pattern's definition"
    assert mask.diagonal(dim1=1, dim2=2).all(), "every query must see itself"
    if exact_blocks:
        assert torch.equal(layout.blocks, _exact_blocks(layout)), (
            "block map is not exactly what the mask needs"
        )
    if layout.causal:
        assert not mask.triu(1).any()


def test_dense_and_causal() -> None:
    _check(dense(N, H, BS), torch.ones(N, N, dtype=torch.bool))
    _check(causal(N, H, BS), J <= I)


@pytest.mark.parametrize("is_causal", [True, False])
def test_local_window(is_causal: bool) -> None:
    w = 5
    want = (J >= I - w) & (J <= I) if is_causal else (I - J).abs() <= w
    _check(local(N, H, w, causal=is_causal, block_size=BS), want)


def test_growing_head_windows() -> None:
    layout = local(N, H, [3 * (h + 1) for h in range(H)], causal=True, block_size=BS)
    want = torch.stack([(J >= I - 3 * (h + 1)) & (J <= I) for h in range(H)])
    _check(layout, want)
    per_head = layout.blocks.sum(dim=(1, 2))
    assert (per_head[1:] >= per_head[:-1]).all() and per_head[-1] > per_head[0]


@pytest.mark.parametrize("is_causal", [True, False])
def test_workshop_head_windows_start_at_the_token_alone(is_causal: bool) -> None:
    """head_windows="workshop": head h looks window·h back (the taller's unit 4.3), so head 0 sees only itself;
    "growing" keeps its meaning (window·(h+1)), so saved configs still mean what they meant."""
    cfg = AttentionConfig(pattern="local", window=1, head_windows="workshop", block_size=BS)
    layout = layout_for(cfg, 0, N, H, is_causal)
    want = [((J >= I - h) & (J <= I)) if is_causal else (I - J).abs() <= h for h in range(H)]
    _check(layout, torch.stack(want))
    assert torch.equal(layout.mask()[0], torch.eye(N, dtype=torch.bool))
    growing = layout_for(dataclasses.replace(cfg, head_windows="growing"), 0, N, H, is_causal)
    assert not growing.mask()[0].equal(torch.eye(N, dtype=torch.bool))


@pytest.mark.parametrize("is_causal", [True, False])
def test_strided_half_local_half_strided_heads(is_causal: bool) -> None:
    w, l = 6, 5
    layout = strided(N, H, w, l, causal=is_causal, block_size=BS)
    window = ((J >= I - w) & (J <= I)) if is_causal else (I - J).abs() <= w
    stride = ((I - J) % l == 0) & ((J <= I) if is_causal else True)
    _check(layout, torch.stack([window, stride, window, stride]))
    order = layout.order
    assert torch.equal(order[0], torch.arange(N))
    assert torch.equal(order[1].sort().values, torch.arange(N))  # a permutation
    assert ((order[1] % l).diff() >= 0).all()  # grouped by position mod l: the transposed sequence


def test_strided_heads_really_save_blocks() -> None:
    n = 1024
    layout = strided(n, 2, 32, 32, causal=True, block_size=32)
    full = causal(n, 1, 32).blocks.sum()
    # a stride column touches every block row: as a plain mask the strided head would need all causal blocks
    assert layout.blocks[1].sum() * 8 < full
    assert layout.blocks[0].sum() * 8 < full


@pytest.mark.parametrize("is_causal", [True, False])
def test_fixed(is_causal: bool) -> None:
    l, c = 16, 3
    want = (I // l == J // l) | (J % l >= l - c)
    if is_causal:
        want = want & (J <= I)
    _check(fixed(N, H, l, c, causal=is_causal, block_size=BS), want)


def test_fixed_saves_blocks_when_the_period_spans_blocks() -> None:
    n = 2048
    layout = fixed(n, 1, 256, 32, causal=True, block_size=64)
    assert layout.blocks.sum() * 2 < causal(n, 1, 64).blocks.sum()  # 192 of 528 blocks


@pytest.mark.parametrize("is_causal", [True, False])
def test_bigbird(is_causal: bool) -> None:
    g, r = 1, 2
    layout = bigbird(N, H, 10, g, r, causal=is_causal, block_size=BS, seed=3)
    nb, reach = layout.n_blocks, 2  # ⌈10 / 8⌉ blocks of window
    bi, bj = torch.arange(nb)[:, None], torch.arange(nb)[None, :]
    blocks = layout.blocks
    assert blocks[:, :, :g][..., (bj <= bi)[:, :g]].all() if is_causal else blocks[:, :, :g].all()
    in_window = (bi - bj).abs() <= reach if not is_causal else (bi - bj >= 0) & (bi - bj <= reach)
    assert blocks[:, in_window].all()
    if not is_causal:
        assert blocks[:, :g, :].all()  # global rows see everything
    extra = blocks & ~in_window & (bj >= g)
    if not is_causal:
        extra = extra & (bi >= g)
    assert (extra.sum(-1) <= r).all() and extra.any()  # the random blocks
    want_rows = layout.blocks[:, I.squeeze(1) // BS][:, :, J.squeeze(0) // BS]
    _check(layout, want_rows & (J <= I) if is_causal else want_rows)


def test_bigbird_is_seeded_and_causal_rows_do_not_depend_on_length() -> None:
    a = bigbird(512, 2, 64, 1, 2, causal=True, block_size=32, seed=7)
    b = bigbird(512, 2, 64, 1, 2, causal=True, block_size=32, seed=7)
    c = bigbird(512, 2, 64, 1, 2, causal=True, block_size=32, seed=8)
    longer = bigbird(1024, 2, 64, 1, 2, causal=True, block_size=32, seed=7)
    assert torch.equal(a.blocks, b.blocks) and not torch.equal(a.blocks, c.blocks)
    assert torch.equal(longer.blocks[:, :16, :16], a.blocks)
    assert not torch.equal(a.blocks[0], a.blocks[1])  # random blocks differ per head


def test_from_adjacency() -> None:
    adj = torch.rand(2, N, N, generator=torch.Generator().manual_seed(0)) < 0.05
    layout = from_adjacency(adj, BS)
    _check(layout, adj | torch.eye(N, dtype=torch.bool))
    single = from_adjacency(adj[0], BS)
    assert single.n_heads == 1 and torch.equal(single.mask()[0], adj[0] | torch.eye(N, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        from_adjacency(adj.float(), BS)


def test_mask_rows_are_a_slice_of_the_full_mask() -> None:
    layout = strided(N, H, 6, 5, causal=True, block_size=BS)
    assert torch.equal(layout.mask(slice(30, 33)), layout.mask()[:, 30:33])


def test_layout_for_follows_the_config_per_layer_and_head() -> None:
    cfg = AttentionConfig(pattern="local", window=4, head_windows="growing", dense_every=2, block_size=8)
    assert layout_for(cfg, 1, N, H, True) is None  # every 2nd layer is dense
    layout = layout_for(cfg, 0, N, H, True)
    assert torch.equal(layout.mask()[2], (J >= I - 12) & (J <= I))
    assert layout_for(cfg, 2, N, H, True) is layout  # built once, shared
    configs = {
        "strided": AttentionConfig(pattern="strided", window=4, stride=4, block_size=8),
        "fixed": AttentionConfig(pattern="fixed", stride=8, summary=2, block_size=8),
        "bigbird": AttentionConfig(pattern="bigbird", window=8, globals=1, randoms=1, block_size=8),
    }
    for name, cfg in configs.items():
        layout = layout_for(cfg, 0, N, H, False)
        assert isinstance(layout, Layout) and layout.n == N, name
    assert layout_for(AttentionConfig(), 0, N, H, True) is None


def test_layout_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="blocks"):
        Layout(N, BS, torch.ones(1, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="order"):
        dataclasses.replace(dense(N, 2, BS), order=torch.arange(N)[None])


CACHED = {
    "local": AttentionConfig(pattern="local", block_size=4, window=3),
    "strided": AttentionConfig(pattern="strided", block_size=4, window=4, stride=3),
    "fixed": AttentionConfig(pattern="fixed", block_size=4, stride=4, summary=1),
    "bigbird": AttentionConfig(pattern="bigbird", block_size=4, window=4, globals=1, randoms=1),
}


@pytest.mark.parametrize("pattern", sorted(CACHED))
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_layouts_cached_under_inference_mode_serve_a_later_backward(kind: str, pattern: str) -> None:
    """A layout (and its tiles) first built inside ``torch.inference_mode()`` is cached and reused; a later
    forward with autograd on must still be able to save it for backward (one inference request must not
    break every later gradient request of the same length)."""
    from modeling.config import DecoderConfig, EncoderConfig
    from modeling.decoder import Decoder
    from modeling.encoder import Encoder

    shape = dict(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=64, dropout=0.0)
    torch.manual_seed(0)
    if kind == "encoder":
        model = Encoder(EncoderConfig(**shape, attention=CACHED[pattern])).eval()
    else:
        model = Decoder(DecoderConfig(**shape, attention=CACHED[pattern])).eval()
    n = 23 + sorted(CACHED).index(pattern) + (10 if kind == "decoder" else 0)  # a length no other test builds
    ids = torch.randint(5, 50, (1, n))
    with torch.inference_mode():
        first = model(ids, need_weights=True).logits
    layout = layout_for(CACHED[pattern], 0, n, 2, kind == "decoder")
    assert not layout.blocks.is_inference()
    assert not any(t.is_inference() for t in dataclasses.astuple(layout.tiles()))
    output = model(ids, need_weights=True)  # autograd on: saves the cached layout's tensors for backward
    output.logits[0, -1].logsumexp(-1).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    torch.testing.assert_close(output.logits.detach(), first, rtol=0, atol=0)
