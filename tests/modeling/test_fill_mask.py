"""modeling.fill_mask: the Hugging Face fill-mask pipeline's numbers and strings, on the same weights.

A BERT-shaped encoder is exported with ``modeling.interop`` and run through transformers' own
``pipeline("fill-mask")``: same tokens, same ``token_str`` (special tokens kept, as its ``decode([token])``), same
``sequence``, scores within 1e-5 (float32; only the order of rounding differs).
"""

from __future__ import annotations

import pytest
import torch

from modeling.checkpoint import build_model, load_checkpoint, save_checkpoint
from modeling.fill_mask import FillMaskError, encode, fill_mask, mask_probabilities, target_ids
from modeling.interop import export_transformers

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert(tiny_checkpoints, bert_shaped_config, tmp_path_factory):
    """Our checkpoint of a BERT-shaped encoder and transformers' pipeline over its export."""
    tokenizer = load_checkpoint(tiny_checkpoints / "encoder-dense").tokenizer
    torch.manual_seed(5)
    model = build_model(bert_shaped_config)
    with torch.no_grad():  # peaked predictions, so that the top candidates are well apart
        model.embeddings.tokens.weight.mul_(10.0)
    root = tmp_path_factory.mktemp("fill")
    save_checkpoint(model, tokenizer, root / "ours")
    checkpoint = load_checkpoint(root / "ours")
    export_transformers(checkpoint, root / "hf")
    return checkpoint, transformers.pipeline("fill-mask", model=str(root / "hf"), device="cpu")


def same(ours: list[dict], theirs: list[dict]) -> None:
    assert [c["token"] for c in ours] == [c["token"] for c in theirs]
    assert [c["token_str"] for c in ours] == [c["token_str"] for c in theirs]
    assert [c["sequence"] for c in ours] == [c["sequence"] for c in theirs]
    assert [c["score"] for c in ours] == pytest.approx([c["score"] for c in theirs], abs=1e-5)


def test_one_mask_matches_the_pipeline(bert) -> None:
    checkpoint, pipe = bert
    text = "La niña lee un [MASK] en el jardín."
    (ours,) = fill_mask(checkpoint.model, checkpoint.tokenizer, text, top_k=5)
    same(ours, pipe(text, top_k=5))


def test_targets_and_a_special_token_candidate_match_the_pipeline(bert) -> None:
    """A special token as a candidate shows as itself in ``token_str`` (not an empty string), like the pipeline."""
    checkpoint, pipe = bert
    text = "El gato [MASK] en la casa."
    targets = ["[SEP]", "duerme", "casa"]
    (ours,) = fill_mask(checkpoint.model, checkpoint.tokenizer, text, top_k=3, targets=targets)
    assert "[SEP]" in [c["token_str"] for c in ours]
    same(ours, pipe(text, targets=targets, top_k=3))


def test_a_padded_batch_gives_each_text_its_own_probabilities(bert) -> None:
    """Padding a short text next to a long one changes nothing (tolerance 1e-5: float32 noise)."""
    checkpoint, _ = bert
    tokenizer, config = checkpoint.tokenizer, checkpoint.config
    short = encode(tokenizer, config, "El [MASK] duerme.")
    long = encode(tokenizer, config, "Los niños juegan en el [MASK] después de la [MASK].")
    together = mask_probabilities(checkpoint.model, [short, long])  # (1 + 2, V)
    alone = torch.cat([mask_probabilities(checkpoint.model, [t]) for t in (short, long)])
    assert together.shape == (3, config.vocab_size)
    assert (together - alone).abs().max() <= 1e-5


def test_input_fill_mask_cannot_run_is_a_named_error(bert) -> None:
    checkpoint, _ = bert
    tokenizer, config = checkpoint.tokenizer, checkpoint.config
    with pytest.raises(FillMaskError, match=r"no \[MASK\] token") as caught:
        encode(tokenizer, config, "El gato duerme.")
    assert caught.value.kind == "no_mask"
    with pytest.raises(FillMaskError, match="more than the 4 allowed") as caught:
        encode(tokenizer, config, "El gato [MASK] en la casa.", max_tokens=4)
    assert caught.value.kind == "too_long"
    with pytest.raises(FillMaskError, match="gives no token"):
        target_ids(tokenizer, [""])
    with pytest.raises(FillMaskError, match="top_k must be >= 1"):
        fill_mask(checkpoint.model, tokenizer, "El [MASK].", top_k=0)
