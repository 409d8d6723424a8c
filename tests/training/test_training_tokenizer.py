"""The tokenizers keep Spanish intact and expose the ids the model configs need."""

from __future__ import annotations

import pytest
from training_helpers import spanish_text

from training.tokenizer import TokenizerError, special_ids, train_tokenizer

SENTENCE = "¿Qué año es? ¡Señor Núñez, el pingüino comió piñones en Cádiz!"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [spanish_text(i, 200) for i in range(3)] + [SENTENCE * 3]


def test_wordpiece_round_trip_keeps_spanish_characters(texts: list[str]) -> None:
    tok = train_tokenizer("wordpiece", texts, 400)
    encoding = tok.encode(SENTENCE)
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    decoded = tok.decode(encoding.ids)
    for ch in "ñáéíóúüÑ¿¡Ú":
        assert decoded.count(ch) == SENTENCE.count(ch), ch
    # WordPiece re-spaces punctuation; apart from whitespace the text is the same, case included
    assert decoded.replace(" ", "") == SENTENCE.replace(" ", "")
    assert special_ids(tok) == {"vocab_size": tok.get_vocab_size(), "pad_token_id": 0, "mask_token_id": 4}
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]


def test_byte_level_bpe_round_trip_is_exact(texts: list[str]) -> None:
    tok = train_tokenizer("bpe", texts, 400)
    encoding = tok.encode(SENTENCE)
    assert encoding.ids[0] == 1  # <s>
    assert tok.decode(encoding.ids) == SENTENCE
    unseen = "Ñandú, über, 漢字 y emoji 🙂"  # bytes never seen in training still round-trip
    assert tok.decode(tok.encode(unseen).ids) == unseen
    assert special_ids(tok) == {"vocab_size": 400, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def test_bad_tokenizer_requests_are_clear_errors(texts: list[str]) -> None:
    with pytest.raises(TokenizerError, match="tokenizer.kind"):
        train_tokenizer("unigram", texts, 400)
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_tokenizer("bpe", texts, 10)
