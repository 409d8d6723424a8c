"""A DecoderConfig that mirrors Llama gives the logits of transformers' LlamaForCausalLM on the same weights.

Llama: RMSNorm (float32, eps 1e-6, weight only), pre-norm, RoPE in the rotate_half form, SwiGLU, no biases,
an untied lm_head. Tolerance 1e-4 in float32 (the issue's bound): only the order of rounding differs.
"""

from __future__ import annotations

import pytest
import torch

from modeling.config import DecoderConfig
from modeling.decoder import Decoder
from modeling.interop import config_from_hf, weights_from_hf, weights_to_hf

transformers = pytest.importorskip("transformers")

CONFIG = DecoderConfig(
    vocab_size=97, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_len=64, dropout=0.0, position="rope",
    rope_theta=10000.0, norm="rms", norm_eps=1e-6, norm_placement="pre", feed_forward="swiglu", bias=False,
    tie_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)  # fmt: skip


def llama_reference(attn_implementation: str) -> torch.nn.Module:
    hf_config = transformers.LlamaConfig(
        vocab_size=CONFIG.vocab_size, hidden_size=CONFIG.d_model, intermediate_size=CONFIG.d_ff,
        num_hidden_layers=CONFIG.n_layers, num_attention_heads=CONFIG.n_heads,
        num_key_value_heads=CONFIG.n_heads, max_position_embeddings=CONFIG.max_len, rms_norm_eps=CONFIG.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": CONFIG.rope_theta}, attention_bias=False,
        mlp_bias=False, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
    assert type(model).__name__ == "LlamaForCausalLM"
    with torch.no_grad():  # non-trivial norm weights, so that a wrong mapping cannot pass
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def copy_llama_weights(hf: torch.nn.Module, ours: Decoder) -> None:
    """transformers' weights into ours through ``modeling.interop`` (strict: a missing or extra name raises)."""
    ours.load_state_dict(weights_from_hf(ours.config, hf.state_dict()), strict=True)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_llama_causal_lm_logits_match(attn_implementation) -> None:
    hf = llama_reference(attn_implementation)
    ours = Decoder(CONFIG).eval()
    copy_llama_weights(hf, ours)
    ids = torch.randint(3, CONFIG.vocab_size, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        got = ours(ids).logits
    assert got.shape == expected.shape == (2, 23, CONFIG.vocab_size)
    assert (got - expected).abs().max() <= 1e-4


def test_llama_greedy_generation_matches() -> None:
    """Same greedy ids as transformers' generate with its cache (minGPT's test_huggingface_import idea)."""
    hf = llama_reference("sdpa")
    ours = Decoder(CONFIG).eval()
    copy_llama_weights(hf, ours)
    prompt = torch.tensor([[1, 17, 33, 5, 60]])
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    ids, cache = prompt, ours.new_cache()
    generated = []
    with torch.inference_mode():
        for _ in range(12):
            ids = ours.next_logits(ids, cache).argmax(-1, keepdim=True)  # (1, 1)
            generated.append(int(ids))
    assert generated == expected[0, prompt.shape[1] :].tolist()


def test_llama_config_and_weights_round_trip() -> None:
    """transformers → ours → transformers gives back the same config and the very same tensors."""
    hf = llama_reference("eager")
    ours = Decoder(CONFIG).eval()
    copy_llama_weights(hf, ours)
    assert config_from_hf(hf.config) == CONFIG
    back = weights_to_hf(ours)
    expected = hf.state_dict()
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)
