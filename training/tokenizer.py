"""Tokenizers trained on the corpus with the `tokenizers` library, saved as one ``tokenizer.json``.

* Encoder: WordPiece (Schuster & Nakajima 2012, as in BERT, Devlin et al. 2019) with
  ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4`` and the ``[CLS] $A [SEP]`` template.
* Decoder: byte-level BPE (Sennrich et al. 2016; byte-level as in GPT-2, Radford et al. 2019) with
  ``<pad>=0 <s>=1 </s>=2``; every text is encoded as ``<s> …`` and decodes back byte for byte.

Both are **cased and keep accents** (only NFC normalisation): Spanish needs ñ, á, ¿ and ¡ to survive
``decode(encode(text))``, and fill-mask / generation should show words as they are written (proper names,
sentence starts). Lowercasing would buy a slightly denser vocabulary at the cost of a lossy round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BPE_SPECIALS = ("<pad>", "<s>", "</s>")
KINDS = ("wordpiece", "bpe")


class TokenizerError(ValueError):
    """A tokenizer that cannot be trained or read; the message says why."""


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A cased, accent-keeping WordPiece tokenizer for the masked-LM encoder."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # split on whitespace and punctuation
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(WORDPIECE_SPECIALS), min_frequency=2, show_progress=False
    )
    tokenizer.train_from_iterator(_lines(texts), trainer=trainer)
    # The trainer's vocabulary is deterministic but its ids are not (hash-map order): number the tokens
    # afresh, specials first, then in code-point order, so the same corpus always gives the same ids.
    vocab = tokenizer.get_vocab()
    ordered = list(WORDPIECE_SPECIALS) + sorted(set(vocab) - set(WORDPIECE_SPECIALS))
    tokenizer.model = models.WordPiece(
        {token: i for i, token in enumerate(ordered)}, unk_token="[UNK]", max_input_chars_per_word=100
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer for the causal decoder: lossless, no unknown tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_lines(texts), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train the tokenizer ``kind`` (``wordpiece`` or ``bpe``) from an iterator over documents."""
    if kind not in KINDS:
        raise TokenizerError(f"tokenizer.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if vocab_size < 300:
        raise TokenizerError(f"tokenizer.vocab_size: must be >= 300 (bytes + specials), got {vocab_size}")
    return train_wordpiece(texts, vocab_size) if kind == "wordpiece" else train_bpe(texts, vocab_size)


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """The ids a model config needs: pad and mask (WordPiece) or pad, bos and eos (BPE), plus vocab_size."""
    vocab = tokenizer.get_vocab()
    if "[MASK]" in vocab:
        ids = {"pad_token_id": vocab["[PAD]"], "mask_token_id": vocab["[MASK]"]}
    elif "<s>" in vocab:
        ids = {"pad_token_id": vocab["<pad>"], "bos_token_id": vocab["<s>"], "eos_token_id": vocab["</s>"]}
    else:
        raise TokenizerError("tokenizer has neither [MASK] (WordPiece) nor <s> (BPE) special tokens")
    return {"vocab_size": tokenizer.get_vocab_size(), **ids}


def all_special_ids(tokenizer: Tokenizer) -> list[int]:
    """Every special token id: never masked, never predicted by the masked-LM."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab[t] for t in (*WORDPIECE_SPECIALS, *BPE_SPECIALS) if t in vocab)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a ``tokenizer.json`` (or the one inside a checkpoint directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"{path}: no tokenizer.json there")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises a plain Exception for a malformed file
        raise TokenizerError(f"{path}: not a valid tokenizer.json ({error})") from error


def _lines(texts: Iterable[str]) -> Iterator[str]:
    """Feed the trainer paragraph-sized pieces: whole novels as one string are slow to pre-tokenize."""
    for text in texts:
        yield from text.split("\n")
