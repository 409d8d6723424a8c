"""A parallel corpus for translation: the Tsunkua Spanish–Otomí pairs, cleaned and split by contiguous blocks.

The corpus ships inside the ``elotl`` package (``pip install 'atencion[translation]'``): ``elotl.corpus.load
("tsunkua")`` gives rows of (Spanish, Otomí, variant, document, file, id) in each document's order.

**Cleaning.** A row is dropped when a side is empty or when both sides are the same text (Spanish copied into
the Otomí column: such a row would teach the model to copy).

**The split.** Neighbouring rows of a document continue each other (the same passage, names, phrasing), so a
random split would put a test sentence's neighbours in training. Each document is split into three
contiguous blocks in its own order: training first, then validation, then test at the end (each block at least
one row). The only training row next to a held-out row is the last one before validation; test rows touch
only validation rows and each other. Training rows whose pair also occurs in a held-out block (a repeated line)
are dropped from training.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

TOLUCA = "El otomí de toluca, Yolanda Lastra"  # a different variety (ots) with its own spelling


class CorpusError(ValueError):
    """The corpus cannot be read or split; the message says why."""


@dataclass(frozen=True)
class Pair:
    source: str  # Spanish
    target: str  # Otomí
    document: str
    variant: str
    index: int  # position in its document (0-based, before cleaning)


def load_tsunkua() -> list[list[str]]:
    """The raw rows of the Tsunkua corpus from the ``elotl`` package."""
    try:
        import elotl.corpus
    except ImportError as error:
        raise CorpusError(
            "the Tsunkua corpus comes from the elotl package: pip install 'atencion[translation]'"
        ) from error
    return [list(row) for row in elotl.corpus.load("tsunkua")]


def _letters(text: str) -> str:
    return re.sub(r"\W+", "", text.lower())


def clean(rows: list[list[str]], exclude_documents: tuple[str, ...] = (TOLUCA,)) -> tuple[list[Pair], dict]:
    """Rows → pairs in document order, without empty sides, copies of the Spanish, or excluded documents;
    and what was dropped, counted."""
    pairs, dropped = [], {"empty": 0, "same_on_both_sides": 0, "excluded_document": 0}
    seen: dict[str, int] = {}
    for row in rows:
        source, target, variant, document = (str(row[i]) for i in range(4))
        index = seen.get(document, 0)
        seen[document] = index + 1
        source, target = " ".join(source.split()), " ".join(target.split())
        if document in exclude_documents:
            dropped["excluded_document"] += 1
        elif not source or not target:
            dropped["empty"] += 1
        elif _letters(source) == _letters(target):
            dropped["same_on_both_sides"] += 1
        else:
            pairs.append(Pair(source, target, document, variant, index))
    return pairs, dropped


def split(pairs: list[Pair], validation: float = 0.1, test: float = 0.1) -> dict[str, list[Pair]]:
    """``train`` / ``validation`` / ``test``: per document, the last ``test`` share is test, the ``validation``
    share before it validation (at least one row each), the rest training."""
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise CorpusError(f"split: validation ({validation}) and test ({test}) must be in (0, 1), sum < 1")
    documents: dict[str, list[Pair]] = {}
    for pair in pairs:
        documents.setdefault(pair.document, []).append(pair)
    parts: dict[str, list[Pair]] = {"train": [], "validation": [], "test": []}
    for rows in documents.values():
        if len(rows) < 3:
            raise CorpusError(f"split: document {rows[0].document!r} has {len(rows)} rows, needs >= 3")
        n_test = max(1, math.floor(len(rows) * test))
        n_val = max(1, math.floor(len(rows) * validation))
        cut = len(rows) - n_test - n_val
        parts["train"] += rows[:cut]
        parts["validation"] += rows[cut : cut + n_val]
        parts["test"] += rows[cut + n_val :]
    held = {(p.source, p.target) for p in parts["validation"] + parts["test"]}
    held_sources = {p.source for p in parts["validation"] + parts["test"]}
    parts["train"] = [
        p for p in parts["train"] if (p.source, p.target) not in held and p.source not in held_sources
    ]
    return parts


def describe_split(parts: dict[str, list[Pair]]) -> dict[str, dict[str, dict[str, int]]]:
    """Per part and document: how many pairs and which rows (first, last index in the document)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, rows in parts.items():
        per: dict[str, dict[str, int]] = {}
        for p in rows:
            entry = per.setdefault(p.document, {"pairs": 0, "first": p.index, "last": p.index})
            entry["pairs"] += 1
            entry["first"], entry["last"] = min(entry["first"], p.index), max(entry["last"], p.index)
        out[name] = per
    return out
