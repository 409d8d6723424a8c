"""Model benchmark: our encoder and decoder against transformers' BERT and Llama on the same weights.

- Encoder forward, batch 16 × 128 tokens: ``Encoder`` vs ``BertForMaskedLM`` (SDPA), tokens/s.
- Greedy generation, batch 1, prompt 16, 128 new tokens: ``stream_tokens`` vs ``LlamaForCausalLM.generate``
  (with its KV cache), tokens/s.

Both sides run in this process, one after the other, on the same weights (copied with the parity tests'
mappings); the ids they produce are checked to be equal, so the comparison is like for like. Our models are
also timed in bfloat16 (weights cast to bf16; this CPU has avx512_bf16) next to float32.

    python -m bench.models            # writes the `models` section of docs/benchmarks.md
    python -m bench.models --quick    # fewer repeats, prints only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "modeling"))  # the parity tests' weight mappings

from test_parity_bert import copy_bert_weights  # noqa: E402
from test_parity_llama import copy_llama_weights  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402

from bench.report import machine, write_section  # noqa: E402
from modeling.config import DecoderConfig, EncoderConfig  # noqa: E402
from modeling.decoder import Decoder  # noqa: E402
from modeling.encoder import Encoder  # noqa: E402
from modeling.generation import Sampling, stream_tokens  # noqa: E402

SHAPE = dict(vocab_size=8000, d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_len=512, dropout=0.0)
BERT = EncoderConfig(
    **SHAPE, norm="layer", norm_eps=1e-12, norm_placement="post", feed_forward="gelu", type_vocab_size=2,
    embedding_norm=True,
)  # fmt: skip
LLAMA = DecoderConfig(
    **SHAPE, position="rope", norm="rms", norm_eps=1e-6, norm_placement="pre", feed_forward="swiglu", bias=False,
    tie_embeddings=False, eos_token_id=2,
)  # fmt: skip


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hf_bert():
    import transformers

    hf_config = transformers.BertConfig(
        vocab_size=BERT.vocab_size, hidden_size=BERT.d_model, num_hidden_layers=BERT.n_layers,
        num_attention_heads=BERT.n_heads, intermediate_size=BERT.d_ff, hidden_act="gelu", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=BERT.max_len, type_vocab_size=2,
        layer_norm_eps=BERT.norm_eps,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.AutoModelForMaskedLM.from_config(hf_config, attn_implementation="sdpa").eval()


def hf_llama():
    import transformers

    hf_config = transformers.LlamaConfig(
        vocab_size=LLAMA.vocab_size, hidden_size=LLAMA.d_model, intermediate_size=LLAMA.d_ff,
        num_hidden_layers=LLAMA.n_layers, num_attention_heads=LLAMA.n_heads, num_key_value_heads=LLAMA.n_heads,
        max_position_embeddings=LLAMA.max_len, rms_norm_eps=LLAMA.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa").eval()


def bench_encoder(repeats: int) -> list[tuple[str, float, float]]:
    """(name, seconds per forward, tokens/s) for HF and ours, fp32 and bf16."""
    hf = hf_bert()
    ours = Encoder(BERT).eval()
    copy_bert_weights(hf, ours)
    ids = torch.randint(5, BERT.vocab_size, (16, 128), generator=torch.Generator().manual_seed(0))
    tokens = ids.numel()
    rows = []
    with torch.inference_mode():
        diff = (hf(input_ids=ids).logits - ours(ids).logits).abs().max().item()
        assert diff < 1e-3, f"encoder logits differ by {diff}"
        rows.append(
            ("transformers BertForMaskedLM, fp32", median_seconds(lambda: hf(input_ids=ids), repeats))
        )
        rows.append(("ours Encoder, fp32", median_seconds(lambda: ours(ids), repeats)))
        ours_bf16 = Encoder(BERT).eval()
        ours_bf16.load_state_dict(ours.state_dict())
        ours_bf16.to(torch.bfloat16)
        rows.append(("ours Encoder, bf16 weights", median_seconds(lambda: ours_bf16(ids), repeats)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rows.append(("ours Encoder, fp32 + bf16 autocast", median_seconds(lambda: ours(ids), repeats)))
    return [(name, s, tokens / s) for name, s in rows]


def byte_tokenizer() -> Tokenizer:
    """A stand-in tokenizer covering the 8000 ids (the decode loop only needs id → text)."""
    return Tokenizer(models.WordLevel({f"t{i}": i for i in range(LLAMA.vocab_size)}, unk_token="t3"))


def bench_generation(repeats: int, new_tokens: int = 128) -> list[tuple[str, float, float]]:
    hf = hf_llama()
    ours = Decoder(LLAMA).eval()
    copy_llama_weights(hf, ours)
    prompt = torch.randint(3, LLAMA.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    tokenizer = byte_tokenizer()
    sampling = Sampling(max_new_tokens=new_tokens)

    def hf_generate() -> list[int]:
        out = hf.generate(
            prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
        )
        return out[0, prompt.shape[1] :].tolist()

    def our_generate(model: Decoder) -> Callable[[], list[int]]:
        return lambda: [t.id for t in stream_tokens(model, tokenizer, prompt[0].tolist(), sampling)]

    rows = []
    with torch.inference_mode():
        reference, mine = hf_generate(), our_generate(ours)()
        assert len(mine) == new_tokens, f"our greedy run stopped after {len(mine)} tokens (an end token?)"
        assert reference == mine, "greedy ids differ from transformers'"
        rows.append(("transformers LlamaForCausalLM.generate, fp32", median_seconds(hf_generate, repeats, 1)))
        rows.append(("ours stream_tokens, fp32", median_seconds(our_generate(ours), repeats, 1)))
        ours_bf16 = Decoder(LLAMA).eval()
        ours_bf16.load_state_dict(ours.state_dict())
        ours_bf16.to(torch.bfloat16)
        rows.append(("ours stream_tokens, bf16 weights", median_seconds(our_generate(ours_bf16), repeats, 1)))
    return [(name, s, new_tokens / s) for name, s in rows]


def table(rows: list[tuple[str, float, float]], unit: str) -> str:
    base = rows[0][2]
    lines = [f"| implementation | {unit} | tokens/s | × reference |", "|---|---|---|---|"]
    for name, seconds, rate in rows:
        lines.append(f"| {name} | {seconds * 1000:.1f} | {rate:,.0f} | {rate / base:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; print, do not write the report")
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    encoder = bench_encoder(repeats)
    generation = bench_generation(max(2, repeats // 2))
    load = os.getloadavg()[0]
    text = f"""## Models: encoder forward and greedy generation against transformers

Command: `python -m bench.models` · machine: {machine()} · load average at the end: {load:.1f}
(other engineers' jobs shared these cores; ratios are measured in the same run, one after the other).
Same weights on both sides (the parity tests' mappings); median of {repeats} runs.

Encoder forward, batch 16 × 128, 4 layers × 256, vocab 8000 (BERT-shaped: post-norm, learned positions):

{table(encoder, "ms / forward")}

Greedy generation, batch 1, prompt 16, 128 new tokens, 4 layers × 256, vocab 8000 (Llama-shaped: RMSNorm,
RoPE, SwiGLU); the ids are checked equal to transformers' before timing:

{table(generation, "ms / 128 tokens")}
"""
    print(text)
    if not args.quick:
        write_section("models", text)


if __name__ == "__main__":
    main()
