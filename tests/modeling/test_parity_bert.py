"""An EncoderConfig that mirrors BERT gives the logits of transformers' BertForMaskedLM on the same weights.

Tolerance 1e-4 in float32 (the issue's bound): both sides run the same operations in a possibly different
order (our LayerNorm is written out, the fused QKV is one matmul instead of three), so only rounding differs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modeling.config import EncoderConfig
from modeling.encoder import Encoder
from modeling.interop import config_from_hf, weights_from_hf, weights_to_hf

transformers = pytest.importorskip("transformers")

CONFIG = EncoderConfig(
    vocab_size=101, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=40, dropout=0.0, position="learned",
    norm="layer", norm_eps=1e-12, norm_placement="post", feed_forward="gelu", bias=True, type_vocab_size=2,
    embedding_norm=True, pad_token_id=0, mask_token_id=3,
)  # fmt: skip


def bert_reference(attn_implementation: str) -> torch.nn.Module:
    hf_config = transformers.BertConfig(
        vocab_size=CONFIG.vocab_size, hidden_size=CONFIG.d_model, num_hidden_layers=CONFIG.n_layers,
        num_attention_heads=CONFIG.n_heads, intermediate_size=CONFIG.d_ff, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=CONFIG.max_len,
        type_vocab_size=CONFIG.type_vocab_size, layer_norm_eps=CONFIG.norm_eps, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForMaskedLM.from_config(hf_config, attn_implementation=attn_implementation)
    assert type(model).__name__ == "BertForMaskedLM"
    with torch.no_grad():  # non-trivial norms and biases, so that a wrong mapping cannot pass
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def copy_bert_weights(hf: torch.nn.Module, ours: Encoder) -> None:
    """transformers' weights into ours through ``modeling.interop`` (strict: a missing or extra name raises)."""
    ours.load_state_dict(weights_from_hf(ours.config, hf.state_dict()), strict=True)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_bert_masked_lm_logits_match(attn_implementation) -> None:
    hf = bert_reference(attn_implementation)
    ours = Encoder(CONFIG).eval()
    copy_bert_weights(hf, ours)
    torch.manual_seed(1)
    ids = torch.randint(5, CONFIG.vocab_size, (3, 17))
    types = torch.randint(0, 2, (3, 17))
    pad = torch.ones(3, 17, dtype=torch.bool)
    pad[1, 12:] = False
    pad[2, 5:] = False
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=types, attention_mask=pad.long()).logits
        got = ours(ids, pad_mask=pad, token_types=types).logits
    real = pad[..., None].expand_as(got)  # padded rows are free to differ
    assert (got[real] - expected[real]).abs().max() <= 1e-4


def test_bert_attention_probabilities_match() -> None:
    hf = bert_reference("eager")
    ours = Encoder(CONFIG).eval()
    copy_bert_weights(hf, ours)
    ids = torch.randint(5, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(input_ids=ids, output_attentions=True).attentions
        got = ours(ids, need_weights=True).attentions
    assert len(got) == CONFIG.n_layers
    for ours_layer, hf_layer in zip(got, expected, strict=True):
        assert ours_layer.shape == hf_layer.shape == (2, CONFIG.n_heads, 9, 9)
        assert (ours_layer - hf_layer).abs().max() <= 1e-5


def test_bert_config_and_weights_round_trip() -> None:
    """transformers → ours → transformers gives back the same config fields and the very same tensors."""
    hf = bert_reference("eager")
    ours = Encoder(CONFIG).eval()
    copy_bert_weights(hf, ours)
    assert dataclasses.replace(config_from_hf(hf.config), mask_token_id=CONFIG.mask_token_id) == CONFIG
    back = weights_to_hf(ours)
    expected = {k: v for k, v in hf.state_dict().items() if not k.startswith("cls.predictions.decoder")}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)
