"""A TranslatorConfig that mirrors BART gives the logits of transformers' BartForConditionalGeneration on the
same weights, and the same cross-attention probabilities.

Tolerance 1e-4 in float32 (the issue's bound): the same operations in a different order (fused QKV and KV
projections), so only rounding differs. BART's learned positions are offset by 2 (its table has two extra rows
first); our table is its rows 2… .
"""

from __future__ import annotations

import pytest
import torch

from modeling.config import TranslatorConfig
from modeling.translator import Translator

transformers = pytest.importorskip("transformers")

CONFIG = TranslatorConfig(
    vocab_size=97, d_model=32, n_layers=2, encoder_layers=3, n_heads=4, d_ff=64, max_len=40, dropout=0.0,
    position="learned", norm="layer", norm_eps=1e-5, norm_placement="post", feed_forward="gelu", bias=True,
    embedding_norm=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)  # fmt: skip


def bart_reference(attn_implementation: str) -> torch.nn.Module:
    hf_config = transformers.BartConfig(
        vocab_size=CONFIG.vocab_size, d_model=CONFIG.d_model, encoder_layers=CONFIG.encoder_layers,
        decoder_layers=CONFIG.n_layers, encoder_attention_heads=CONFIG.n_heads,
        decoder_attention_heads=CONFIG.n_heads, encoder_ffn_dim=CONFIG.d_ff, decoder_ffn_dim=CONFIG.d_ff,
        max_position_embeddings=CONFIG.max_len, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        activation_function="gelu", scale_embedding=False, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration._from_config(
        hf_config, attn_implementation=attn_implementation
    )
    with torch.no_grad():  # non-trivial norms and biases, so that a wrong mapping cannot pass
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def copy_bart_weights(hf: torch.nn.Module, ours: Translator) -> None:
    """BART's names → ours; q/k/v are concatenated into the fused qkv, k/v of the cross-attention into kv."""
    s = hf.state_dict()
    n = CONFIG.max_len
    mapping = {
        "source_embeddings.tokens.weight": s["model.shared.weight"],
        "source_embeddings.positions.weight": s["model.encoder.embed_positions.weight"][2 : 2 + n],
        "source_embeddings.norm.weight": s["model.encoder.layernorm_embedding.weight"],
        "source_embeddings.norm.bias": s["model.encoder.layernorm_embedding.bias"],
        "target_embeddings.tokens.weight": s["model.shared.weight"],
        "target_embeddings.positions.weight": s["model.decoder.embed_positions.weight"][2 : 2 + n],
        "target_embeddings.norm.weight": s["model.decoder.layernorm_embedding.weight"],
        "target_embeddings.norm.bias": s["model.decoder.layernorm_embedding.bias"],
        "lm_head.weight": s["model.shared.weight"],
    }
    for kind in ("weight", "bias"):
        for i in range(CONFIG.encoder_layers):
            h, o = f"model.encoder.layers.{i}.", f"encoder_blocks.{i}."
            qkv = [s[f"{h}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            mapping[f"{o}attention.qkv.{kind}"] = torch.cat(qkv)
            mapping[f"{o}attention.out.{kind}"] = s[f"{h}self_attn.out_proj.{kind}"]
            mapping[f"{o}attention_norm.{kind}"] = s[f"{h}self_attn_layer_norm.{kind}"]
            mapping[f"{o}feed_forward.up.{kind}"] = s[f"{h}fc1.{kind}"]
            mapping[f"{o}feed_forward.down.{kind}"] = s[f"{h}fc2.{kind}"]
            mapping[f"{o}feed_forward_norm.{kind}"] = s[f"{h}final_layer_norm.{kind}"]
        for i in range(CONFIG.n_layers):
            h, o = f"model.decoder.layers.{i}.", f"decoder_blocks.{i}."
            qkv = [s[f"{h}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            mapping[f"{o}attention.qkv.{kind}"] = torch.cat(qkv)
            mapping[f"{o}attention.out.{kind}"] = s[f"{h}self_attn.out_proj.{kind}"]
            mapping[f"{o}attention_norm.{kind}"] = s[f"{h}self_attn_layer_norm.{kind}"]
            mapping[f"{o}cross_attention.q.{kind}"] = s[f"{h}encoder_attn.q_proj.{kind}"]
            kv = [s[f"{h}encoder_attn.{p}_proj.{kind}"] for p in "kv"]
            mapping[f"{o}cross_attention.kv.{kind}"] = torch.cat(kv)
            mapping[f"{o}cross_attention.out.{kind}"] = s[f"{h}encoder_attn.out_proj.{kind}"]
            mapping[f"{o}cross_attention_norm.{kind}"] = s[f"{h}encoder_attn_layer_norm.{kind}"]
            mapping[f"{o}feed_forward.up.{kind}"] = s[f"{h}fc1.{kind}"]
            mapping[f"{o}feed_forward.down.{kind}"] = s[f"{h}fc2.{kind}"]
            mapping[f"{o}feed_forward_norm.{kind}"] = s[f"{h}final_layer_norm.{kind}"]
    ours.load_state_dict(mapping, strict=True)  # raises on a missing or unexpected name


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    source = torch.randint(3, CONFIG.vocab_size, (3, 13), generator=g)
    target = torch.randint(3, CONFIG.vocab_size, (3, 9), generator=g)
    source_mask = torch.ones(3, 13, dtype=torch.bool)
    source_mask[1, 8:] = False
    source_mask[2, 3:] = False
    target_mask = torch.ones(3, 9, dtype=torch.bool)
    target_mask[2, 6:] = False
    return source, target, source_mask, target_mask


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_bart_logits_match(attn_implementation) -> None:
    hf = bart_reference(attn_implementation)
    ours = Translator(CONFIG).eval()
    copy_bart_weights(hf, ours)
    source, target, source_mask, target_mask = inputs()
    with torch.no_grad():
        expected = hf(
            input_ids=source, attention_mask=source_mask.long(), decoder_input_ids=target,
            decoder_attention_mask=target_mask.long(),
        ).logits  # fmt: skip
        got = ours(source, target, source_mask, target_mask).logits
    real = target_mask[..., None].expand_as(got)  # padded target rows are free to differ
    assert got.shape == expected.shape == (3, 9, CONFIG.vocab_size)
    assert (got[real] - expected[real]).abs().max() <= 1e-4


def test_bart_cross_attention_probabilities_match() -> None:
    hf = bart_reference("eager")
    ours = Translator(CONFIG).eval()
    copy_bart_weights(hf, ours)
    source, target, source_mask, _ = inputs()
    with torch.no_grad():
        expected = hf(
            input_ids=source,
            attention_mask=source_mask.long(),
            decoder_input_ids=target,
            output_attentions=True,
        )
        got = ours(source, target, source_mask, need_weights=True)
    assert len(got.cross_attentions) == CONFIG.n_layers
    for ours_layer, hf_layer in zip(got.cross_attentions, expected.cross_attentions, strict=True):
        assert ours_layer.shape == hf_layer.shape == (3, CONFIG.n_heads, 9, 13)
        assert (ours_layer - hf_layer).abs().max() <= 1e-5
        assert ours_layer[2, :, :, 3:].abs().max() == 0.0  # padding gets exactly nothing
    for ours_layer, hf_layer in zip(got.encoder_attentions, expected.encoder_attentions, strict=True):
        real = source_mask[:, None, :, None].expand_as(ours_layer)  # padded query rows are free to differ
        assert (ours_layer[real] - hf_layer[real]).abs().max() <= 1e-5
