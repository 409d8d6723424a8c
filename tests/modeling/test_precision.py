"""bf16 for fill-mask only where it keeps fp32's answers: the check, and the fall-back when it fails."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from modeling.config import EncoderConfig
from modeling.encoder import Encoder
from modeling.precision import CHECK_SENTENCES, choose, compare

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]


def tokenizer() -> Tokenizer:
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(WORDS[:5])
    return t


def encoder(bias: torch.Tensor) -> Encoder:
    """An encoder whose logits are ``bias`` exactly (zero embeddings, tied to the output): the test sets how
    close the best tokens are."""
    config = EncoderConfig(vocab_size=len(WORDS), d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=64,
                           dropout=0.0, mask_token_id=4)  # fmt: skip
    model = Encoder(config).eval()
    with torch.no_grad():
        model.embeddings.tokens.weight.zero_()
        model.head.bias.copy_(bias)
    return model


def fragile() -> Encoder:
    """The best tokens 1e-3 apart around 10: distinct in fp32, one value in bf16 (its step there is 1/16)."""
    ramp = -(torch.arange(len(WORDS)) - 30).abs().float()  # peaks at token 30
    return encoder(10 + 1e-3 * ramp)


def robust() -> Encoder:
    """Six best tokens a whole unit apart: bf16 represents each exactly."""
    bias = torch.zeros(len(WORDS))
    bias[10:16] = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0, 5.0])
    return encoder(bias)


def always(device: torch.device) -> bool:
    return True


def never(device: torch.device) -> bool:
    return False


def test_the_check_counts_every_sentence():
    a = compare(robust(), tokenizer())
    assert a.masks == len(CHECK_SENTENCES) and a.identical


def test_auto_takes_bf16_where_every_answer_is_kept():
    choice = choose("auto", robust(), tokenizer(), supported=always)
    assert choice.precision == "bf16" and choice.agreement.identical


def test_auto_falls_back_to_fp32_where_bf16_changes_an_answer():
    choice = choose("auto", fragile(), tokenizer(), supported=always)
    assert choice.precision == "fp32" and "changed" in choice.reason
    assert choice.agreement.same_top1 < choice.agreement.masks


def test_auto_is_fp32_without_bf16_hardware_and_explicit_choices_are_kept():
    assert choose("auto", robust(), tokenizer(), supported=never).precision == "fp32"
    assert choose("fp32", robust(), tokenizer(), supported=always).agreement is None
    forced = choose("bf16", fragile(), tokenizer(), supported=never)
    assert forced.precision == "bf16" and not forced.agreement.identical  # asked for: served, and reported
    with pytest.raises(ValueError, match="precision"):
        choose("fp16", robust(), tokenizer())
