"""chrF / BLEU through sacrebleu, per document and overall, and the two baselines."""

from __future__ import annotations

import pytest

from training.translation_scores import WordDictionary, baselines, scores, scores_by_document

pytest.importorskip("sacrebleu")


def test_scores_rank_a_perfect_translation_first() -> None:
    refs = ["ra ndähi bi zo̱ho̱", "ma hñäki di ñä"]
    perfect = scores(refs, refs)
    assert perfect["chrf"] == pytest.approx(100.0) and perfect["bleu"] == pytest.approx(100.0)
    partial = scores(["ra ndähi", "ma hñäki"], refs)
    assert 0 < partial["chrf"] < 100 and partial["chrf++"] < 100
    assert scores(["xyz", "qqq"], refs)["chrf"] < partial["chrf"]


def test_per_document_and_overall() -> None:
    result = scores_by_document(["a b c", "d e f", "g"], ["a b c", "x y z", "g"], ["one", "two", "one"])
    assert set(result) == {"one", "two", "overall"}
    assert result["one"]["count"] == 2 and result["one"]["chrf"] > result["two"]["chrf"]
    assert result["overall"]["count"] == 3


def test_the_dictionary_learns_word_pairs_and_keeps_punctuation() -> None:
    pairs = [
        ("el perro come", "ra dängo tsi"),
        ("el perro duerme", "ra dängo ähä"),
        ("la niña come", "ra txutsi tsi"),
    ]
    dictionary = WordDictionary(pairs)
    assert dictionary.translate("Perro, come.") == "dängo, tsi."  # Dice: perro ~ dängo (1.0) over ra (0.8)
    assert dictionary.translate("Un gato") == "Un gato"  # unknown words stay
    assert baselines(pairs)["copy"]("hola") == "hola"
