"""Corpus folder → document split → one token stream → packed fixed-length rows; masking and shifting.

* The split is **by document** (no sentence of a held-out work is ever trained on), seeded, recorded by
  file name in the checkpoint's ``training.json``.
* Packing: the encoder's rows are ``[CLS] chunk [SEP]`` (documents joined by ``[SEP]``, as BERT's); the
  decoder's rows are windows of ``seq_len + 1`` tokens of ``<s> doc </s> <s> doc </s> …`` taken with stride
  ``seq_len`` so every token is a target exactly once.
* Masked-LM corruption of Devlin et al. 2019: 15 % of the real tokens, of which 80 % become ``[MASK]``,
  10 % a random token and 10 % stay; specials and padding are never chosen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor


class DataError(ValueError):
    """A corpus that cannot be used; the message names the folder or file."""


def read_corpus(folder: str | Path) -> dict[str, str]:
    """Every ``*.txt`` file of ``folder`` (sorted by name) as ``{file name: text}``; strict UTF-8."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: corpus folder does not exist or is not a directory")
    paths = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not paths:
        raise DataError(f"{folder}: no .txt files in the corpus folder")
    documents: dict[str, str] = {}
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 ({error.reason} at byte {error.start})") from error
        if text.strip():
            documents[path.name] = text
    if not documents:
        raise DataError(f"{folder}: every .txt file is empty")
    return documents


def split_documents(names: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split document names into (train, validation), at least one each, by a seeded permutation."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.validation_fraction: must be in (0, 1), got {fraction}")
    names = sorted(names)
    if len(names) < 2:
        raise DataError(f"the corpus needs at least 2 documents to hold one out, found {len(names)}")
    n_val = min(len(names) - 1, max(1, round(fraction * len(names))))
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    validation = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, validation


def token_stream(tokenizer: Tokenizer, texts: Sequence[str]) -> Tensor:
    """All documents as one (N,) long stream, with the separators of the tokenizer's kind between them."""
    vocab = tokenizer.get_vocab()
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    pieces: list[np.ndarray] = []
    for encoding in encodings:
        ids = np.asarray(encoding.ids, dtype=np.int64)
        if "[SEP]" in vocab:  # WordPiece: doc [SEP] doc [SEP]
            pieces += [ids, np.asarray([vocab["[SEP]"]])]
        else:  # BPE: <s> doc </s>
            pieces += [np.asarray([vocab["<s>"]]), ids, np.asarray([vocab["</s>"]])]
    return torch.from_numpy(np.concatenate(pieces)) if pieces else torch.zeros(0, dtype=torch.long)


def save_stream(path: Path, stream: Tensor) -> None:
    """Cache a token stream as ``.npy`` (no pickle) — written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npy")
    np.save(temporary, stream.numpy().astype(np.int32), allow_pickle=False)
    temporary.replace(path)


def load_stream(path: Path) -> Tensor:
    return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.int64))


def pack_encoder(stream: Tensor, seq_len: int, cls_id: int, sep_id: int) -> Tensor:
    """(N,) stream → (R, seq_len) rows ``[CLS] chunk [SEP]``; the ragged tail is dropped."""
    body = seq_len - 2
    rows = stream.numel() // body
    if rows == 0:
        raise DataError(f"only {stream.numel()} tokens: too few for one sequence of {seq_len}")
    chunks = stream[: rows * body].view(rows, body)  # (R, seq_len - 2)
    cls = torch.full((rows, 1), cls_id, dtype=stream.dtype)
    sep = torch.full((rows, 1), sep_id, dtype=stream.dtype)
    return torch.cat([cls, chunks, sep], dim=1)  # (R, seq_len)


def pack_decoder(stream: Tensor, seq_len: int) -> Tensor:
    """(N,) stream → (R, seq_len + 1) windows with stride seq_len (consecutive windows share one token)."""
    if stream.numel() < seq_len + 1:
        raise DataError(f"only {stream.numel()} tokens: too few for one sequence of {seq_len}")
    return stream.unfold(0, seq_len + 1, seq_len).contiguous()  # (R, seq_len + 1)


def shift(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Causal-LM inputs and targets: predict token t+1 from tokens ≤ t."""
    return rows[:, :-1], rows[:, 1:]  # (B, T), (B, T)


@dataclass(frozen=True)
class Masked:
    """A masked-LM batch: the corrupted inputs, and which positions to predict (their labels are the rows)."""

    inputs: Tensor  # (B, T) long
    positions: Tensor  # (B, T) bool: the chosen 15 %
    labels: Tensor  # (B, T) long: the original ids


def mask_tokens(
    rows: Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generator: torch.Generator,
    probability: float = 0.15,
    replace: tuple[float, float] = (0.8, 0.1),
) -> Masked:
    """Choose ``probability`` of the non-special tokens; ``replace`` = (share → [MASK], share → random).

    ``replace=(1.0, 0.0)`` masks every chosen token, which is how evaluation measures accuracy.
    """
    special = torch.isin(rows, torch.as_tensor(list(special_ids), dtype=rows.dtype))
    chosen = (torch.rand(rows.shape, generator=generator) < probability) & ~special  # (B, T)
    draw = torch.rand(rows.shape, generator=generator)
    to_mask = chosen & (draw < replace[0])
    to_random = chosen & (draw >= replace[0]) & (draw < replace[0] + replace[1])
    low = max(special_ids) + 1  # random replacements are ordinary tokens only
    random_ids = torch.randint(low, vocab_size, rows.shape, generator=generator, dtype=rows.dtype)
    inputs = torch.where(to_mask, torch.full_like(rows, mask_id), rows)
    inputs = torch.where(to_random, random_ids, inputs)
    return Masked(inputs=inputs, positions=chosen, labels=rows)


def epoch_order(n_rows: int, seed: int, epoch: int) -> Tensor:
    """The row order of one epoch: a permutation fixed by (seed, epoch), so a resumed run sees the same."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def shard(order: Tensor, rank: int, world: int) -> Tensor:
    """The rows of ``order`` that rank ``rank`` of ``world`` trains on (disjoint, equal lengths)."""
    usable = (order.numel() // world) * world
    return order[:usable][rank::world]


@dataclass(frozen=True)
class Prepared:
    """A corpus ready to train on: the tokenizer, the split and both token streams."""

    tokenizer: Tokenizer
    train: list[str]  # document names
    validation: list[str]
    train_stream: Tensor  # (N,) long
    validation_stream: Tensor  # (M,) long


def prepare_corpus(
    corpus: str | Path, cache: Path, *, kind: str, vocab_size: int, fraction: float, seed: int, build: bool
) -> Prepared:
    """Split the corpus, train the tokenizer on the training documents and tokenize both sides once.

    The result is cached in ``cache`` (tokenizer.json, train.npy, validation.npy, key.json) and reused while
    the corpus text, the split and the tokenizer recipe are unchanged. With ``build=False`` (DDP ranks other
    than 0, after rank 0 built it) the cache must already match.
    """
    from training.tokenizer import load_tokenizer, train_tokenizer

    documents = read_corpus(corpus)
    train, validation = split_documents(list(documents), fraction, seed)
    digest = hashlib.sha256()
    for name in sorted(documents):
        digest.update(name.encode() + b"\0" + documents[name].encode() + b"\0")
    key = {"corpus_sha256": digest.hexdigest(), "train": train, "validation": validation}
    key |= {"tokenizer": {"kind": kind, "vocab_size": vocab_size}}
    key_path = cache / "key.json"
    fresh = key_path.is_file() and json.loads(key_path.read_text(encoding="utf-8")) == key
    if not fresh:
        if not build:
            raise DataError(f"{cache}: tokenized corpus cache is missing or stale")
        tokenizer = train_tokenizer(kind, (documents[n] for n in train), vocab_size)
        cache.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(cache / "tokenizer.json"))
        save_stream(cache / "train.npy", token_stream(tokenizer, [documents[n] for n in train]))
        save_stream(cache / "validation.npy", token_stream(tokenizer, [documents[n] for n in validation]))
        key_path.write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
    return Prepared(
        tokenizer=load_tokenizer(cache / "tokenizer.json"),
        train=train,
        validation=validation,
        train_stream=load_stream(cache / "train.npy"),
        validation_stream=load_stream(cache / "validation.npy"),
    )
