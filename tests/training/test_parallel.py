"""The parallel corpus: cleaning, and a split in contiguous blocks that keeps test sentences and their
neighbours out of training (on the real Tsunkua corpus, which the elotl package ships)."""

from __future__ import annotations

import pytest

from training.parallel import TOLUCA, CorpusError, Pair, clean, split

elotl = pytest.importorskip("elotl.corpus")


def test_cleaning_drops_empty_copied_and_excluded_rows() -> None:
    rows = [
        ["Hola, amigo.", "Ki hats'i", "v", "A", "f", "i"],
        ["Se fue.", "", "v", "A", "f", "i"],
        ["Igual aquí.", "igual  aquí", "v", "A", "f", "i"],
        ["Otra", "Nu'u", "v", TOLUCA, "f", "i"],
    ]
    pairs, dropped = clean(rows)
    assert [p.source for p in pairs] == ["Hola, amigo."]
    assert dropped == {"empty": 1, "same_on_both_sides": 1, "excluded_document": 1}
    assert len(clean(rows, exclude_documents=())[0]) == 2


def test_the_real_split_keeps_test_rows_and_their_neighbours_out_of_training() -> None:
    rows = elotl.load("tsunkua")
    pairs, dropped = clean(rows)
    assert dropped["empty"] == 1 and dropped["same_on_both_sides"] >= 9
    assert all(p.document != TOLUCA for p in pairs)
    parts = split(pairs)
    train = {(p.document, p.index) for p in parts["train"]}
    documents = {p.document for p in pairs}
    assert {p.document for p in parts["test"]} == documents == {p.document for p in parts["validation"]}
    for p in parts["test"]:
        for neighbour in (p.index - 1, p.index, p.index + 1):
            assert (p.document, neighbour) not in train
    train_sources = {p.source for p in parts["train"]}
    assert not any(p.source in train_sources for p in parts["test"] + parts["validation"])
    for document in documents:  # test is the document's end, validation the block right before it
        test = [p.index for p in parts["test"] if p.document == document]
        val = [p.index for p in parts["validation"] if p.document == document]
        kept = [p.index for p in pairs if p.document == document]
        assert (
            max(test) == max(kept)
            and max(val) < min(test)
            and max(i for d, i in train if d == document) < min(val)
        )
    assert 0.75 < len(parts["train"]) / len(pairs) < 0.82


def test_split_errors() -> None:
    pairs = [Pair("a", "b", "doc", "v", i) for i in range(2)]
    with pytest.raises(CorpusError, match="needs >= 3"):
        split(pairs)
    with pytest.raises(CorpusError, match="validation"):
        split(pairs * 3, validation=0.6, test=0.5)
