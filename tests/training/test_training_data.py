"""Corpus reading, the document split, packing, masked-LM masking and causal shifting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.data import (
    DataError,
    epoch_order,
    mask_tokens,
    pack_decoder,
    pack_encoder,
    read_corpus,
    shard,
    shift,
    split_documents,
)


def test_read_corpus_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "missing")
    with pytest.raises(DataError, match="no .txt files"):
        read_corpus(tmp_path)
    (tmp_path / "bien.txt").write_text("¡Hola, señor!", encoding="utf-8")
    (tmp_path / "mal.txt").write_bytes("año".encode("latin-1"))
    with pytest.raises(DataError, match="mal.txt: not UTF-8"):
        read_corpus(tmp_path)
    (tmp_path / "mal.txt").unlink()
    assert read_corpus(tmp_path) == {"bien.txt": "¡Hola, señor!"}


def test_split_is_by_document_seeded_and_disjoint() -> None:
    names = [f"obra_{i:02d}.txt" for i in range(55)]
    train, validation = split_documents(names, 0.05, seed=0)
    assert not set(train) & set(validation)
    assert set(train) | set(validation) == set(names)
    assert len(validation) == 3  # round(0.05 * 55)
    assert split_documents(names, 0.05, seed=0) == (train, validation)
    assert split_documents(names, 0.05, seed=1)[1] != validation
    train, validation = split_documents(["a.txt", "b.txt"], 0.01, seed=0)  # at least one each
    assert len(train) == len(validation) == 1
    with pytest.raises(DataError, match="at least 2 documents"):
        split_documents(["a.txt"], 0.05, seed=0)


def test_packing_shapes_and_causal_shift() -> None:
    stream = torch.arange(10, 60)  # 50 tokens
    rows = pack_encoder(stream, 12, cls_id=2, sep_id=3)
    assert rows.shape == (5, 12)
    assert (rows[:, 0] == 2).all() and (rows[:, -1] == 3).all()
    assert torch.equal(rows[:, 1:-1].reshape(-1), stream[:50])
    windows = pack_decoder(stream, 8)  # stride 8, length 9: every token is a target once
    assert windows.shape == (6, 9)
    inputs, targets = shift(windows)
    assert torch.equal(targets.reshape(-1), stream[1:49])
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    with pytest.raises(DataError, match="too few"):
        pack_decoder(stream[:5], 8)


def test_masking_proportions_80_10_10_and_never_specials() -> None:
    # 200k tokens: binomial std of the 15 % share is 0.08 %; of each 80/10/10 share ~0.25 %. Tolerance 1 %.
    V, specials = 1000, [0, 1, 2, 3, 4]
    rows = torch.randint(5, V, (400, 500))
    rows[:, 0], rows[:, -1], rows[:, -50:] = 2, 3, 0  # [CLS], [SEP], padding
    m = mask_tokens(
        rows, mask_id=4, vocab_size=V, special_ids=specials, generator=torch.Generator().manual_seed(0)
    )
    real = ~torch.isin(rows, torch.tensor(specials))
    assert not (m.positions & ~real).any()  # specials and padding never chosen
    assert abs(m.positions.sum() / real.sum() - 0.15) < 0.01
    chosen_inputs = m.inputs[m.positions]
    chosen_labels = m.labels[m.positions]
    n = chosen_inputs.numel()
    as_mask = (chosen_inputs == 4).float().sum() / n
    kept = (chosen_inputs == chosen_labels).float().sum() / n  # includes random draws of the same id (0.1 %)
    assert abs(as_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01
    assert abs(1 - as_mask - kept - 0.1) < 0.01  # the random share
    assert (chosen_inputs[chosen_inputs != 4] >= 5).all()  # random replacements are ordinary tokens
    assert torch.equal(m.inputs[~m.positions], rows[~m.positions])  # everything else untouched
    assert torch.equal(m.labels, rows)


def test_epoch_order_and_shards_are_deterministic_and_disjoint() -> None:
    order = epoch_order(103, seed=7, epoch=2)
    assert torch.equal(order, epoch_order(103, seed=7, epoch=2))
    assert not torch.equal(order, epoch_order(103, seed=7, epoch=3))
    a, b = shard(order, 0, 2), shard(order, 1, 2)
    assert a.numel() == b.numel() == 51
    assert not set(a.tolist()) & set(b.tolist())
