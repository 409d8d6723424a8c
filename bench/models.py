"""Model benchmark: our encoder and decoder against transformers' BERT and Llama on the same weights.

- Encoder forward, batch 16 × 128 tokens: ``Encoder`` vs ``BertForMaskedLM`` (SDPA), tokens/s.
- Greedy generation, batch 1, prompt 16, 128 new tokens: ``stream_tokens`` vs ``LlamaForCausalLM.generate``
  (with its KV cache), tokens/s.

Both sides run in this process, one after the other, on the same weights (mapped by ``modeling.interop``); the ids they produce are checked to be equal, so the comparison is like for like. Our models are
also timed in bfloat16 (weights cast to bf16; this CPU has avx512_bf16) next to float32.

    python -m bench.models            # writes the `models` section of docs/benchmarks.md
    python -m bench.models --quick    # fewer repeats, prints only
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from tokenizers import Tokenizer, models

from bench.report import machine, write_section
from modeling.config import DecoderConfig, EncoderConfig
from modeling.decoder import Decoder
from modeling.encoder import Encoder
from modeling.generation import Sampling, stream_tokens
from modeling.interop import bert_config, llama_config, weights_from_hf

SHAPE = dict(vocab_size=8000, d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_len=512, dropout=0.0)
BERT = EncoderConfig(
    **SHAPE, norm="layer", norm_eps=1e-12, norm_placement="post", feed_forward="gelu", type_vocab_size=2,
    embedding_norm=True,
)  # fmt: skip
LLAMA = DecoderConfig(
    **SHAPE, position="rope", norm="rms", norm_eps=1e-6, norm_placement="pre", feed_forward="swiglu", bias=False,
    tie_embeddings=False, eos_token_id=2,
)  # fmt: skip


def compare(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per call of each candidate, taking turns so that they share the load alike.

    CPU seconds (this process, all threads) are less sensitive than wall time to other jobs on the machine.
    """
    for fn in candidates.values():  # warm-up
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for name, runs in times.items()
    }


def hf_bert():
    import transformers

    torch.manual_seed(0)
    return transformers.AutoModelForMaskedLM.from_config(bert_config(BERT), attn_implementation="sdpa").eval()


def hf_llama():
    import transformers

    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(
        llama_config(LLAMA), attn_implementation="sdpa"
    ).eval()


def copy_weights(hf: torch.nn.Module, ours: torch.nn.Module) -> None:
    ours.load_state_dict(weights_from_hf(ours.config, hf.state_dict()), strict=True)


def bench_encoder(repeats: int) -> tuple[dict[str, tuple[float, float]], int, float]:
    """Seconds per forward of transformers' BERT and ours (fp32, bf16 weights, bf16 autocast)."""
    hf = hf_bert()
    ours = Encoder(BERT).eval()
    copy_weights(hf, ours)
    ours_bf16 = Encoder(BERT).eval()
    ours_bf16.load_state_dict(ours.state_dict())
    ours_bf16.to(torch.bfloat16)
    ids = torch.randint(5, BERT.vocab_size, (16, 128), generator=torch.Generator().manual_seed(0))

    def autocast_forward() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ours(ids)

    with torch.inference_mode():
        reference = hf(input_ids=ids).logits
        diff = (reference - ours(ids).logits).abs().max().item()
        assert diff < 1e-3, f"encoder logits differ by {diff}"
        bf16_diff = (reference - ours_bf16(ids).logits.float()).abs().max().item()
        results = compare(
            {
                "transformers BertForMaskedLM (SDPA), fp32": lambda: hf(input_ids=ids),
                "ours Encoder, fp32": lambda: ours(ids),
                "ours Encoder, bf16 weights": lambda: ours_bf16(ids),
                "ours Encoder, fp32 weights + bf16 autocast": autocast_forward,
            },
            repeats,
        )
    return results, ids.numel(), bf16_diff


def byte_tokenizer() -> Tokenizer:
    """A stand-in tokenizer covering the 8000 ids (the decode loop only needs id → text)."""
    return Tokenizer(models.WordLevel({f"t{i}": i for i in range(LLAMA.vocab_size)}, unk_token="t3"))


def bench_generation(repeats: int, new_tokens: int = 128) -> tuple[dict[str, tuple[float, float]], int]:
    """Seconds per greedy run of 128 tokens: transformers' generate and our stream_tokens (fp32, bf16)."""
    hf = hf_llama()
    ours = Decoder(LLAMA).eval()
    copy_weights(hf, ours)
    ours_bf16 = Decoder(LLAMA).eval()
    ours_bf16.load_state_dict(ours.state_dict())
    ours_bf16.to(torch.bfloat16)
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

    with torch.inference_mode():
        reference, mine = hf_generate(), our_generate(ours)()
        assert len(mine) == new_tokens, f"our greedy run stopped after {len(mine)} tokens (an end token?)"
        assert reference == mine, "greedy ids differ from transformers'"
        results = compare(
            {
                "transformers LlamaForCausalLM.generate (KV cache, SDPA), fp32": hf_generate,
                "ours stream_tokens (KV cache), fp32": our_generate(ours),
                "ours stream_tokens (KV cache), bf16 weights": our_generate(ours_bf16),
            },
            repeats,
        )
    return results, new_tokens


def table(results: dict[str, tuple[float, float]], tokens: int, unit: str) -> str:
    names = list(results)
    base_wall, base_cpu = results[names[0]]
    lines = [
        f"| implementation | {unit} | tokens/s | × reference | tokens per CPU-second | × reference (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        wall, cpu = results[name]
        lines.append(
            f"| {name} | {wall * 1000:.1f} | {tokens / wall:,.0f} | {base_wall / wall:.2f}× | "
            f"{tokens / cpu:,.0f} | {base_cpu / cpu:.2f}× |"
        )
    return "\n".join(lines)


def verdict(results: dict[str, tuple[float, float]], name: str, target: float) -> str:
    base_wall, base_cpu = next(iter(results.values()))
    wall, cpu = results[name]
    met = "met" if base_wall / wall >= target else "missed"
    return f"{name}: {base_wall / wall:.2f}× wall, {base_cpu / cpu:.2f}× CPU — target {target}× {met}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats; print, do not write the report")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to run (1,2)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    where = machine()  # with torch's default thread count; each run below sets its own
    sections = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        encoder, encoder_tokens, bf16_diff = bench_encoder(repeats)
        generation, new_tokens = bench_generation(repeats)
        load = os.getloadavg()[0]
        sections.append(f"""### {threads} thread{"s" if threads > 1 else ""} (load average {load:.1f} at the end)

Encoder forward, batch 16 × 128 (BERT-shaped: post-norm, learned positions, 4 layers × 256, vocab 8000);
bf16 weights change the logits by up to {bf16_diff:.3f} (fp32 matches transformers within 1e-3):

{table(encoder, encoder_tokens, "ms / forward")}

Greedy generation, batch 1, prompt 16, 128 new tokens (Llama-shaped: RMSNorm, RoPE, SwiGLU, 4 layers × 256,
vocab 8000); the generated ids are checked equal to transformers' before timing:

{table(generation, new_tokens, "ms / 128 tokens")}

- {verdict(encoder, "ours Encoder, fp32", 1.2)}; {verdict(encoder, "ours Encoder, bf16 weights", 1.2)}
- {verdict(generation, "ours stream_tokens (KV cache), fp32", 2.0)}
""")
    text = (
        f"""## Models: encoder forward and greedy generation against transformers

Command: `python -m bench.models --threads {args.threads}` · machine: {where} (default threads; each run below
sets its own). Same weights on both sides (``modeling.interop``), same process; candidates take turns,
median of {repeats} runs each. Other jobs shared these 2 cores while this ran (see the load
averages), so wall times are noisy; CPU-seconds of this process are the steadier measure, and every ratio
compares runs interleaved under the same load.

"""
        + "\n".join(sections)
        + """
Why the targets are missed, where they are:
- Encoder, fp32: both sides run the same float32 GEMMs — about 22 GFLOP per forward, over a third of it in
  the vocabulary projection — and this CPU does ~75 GFLOP/s in fp32, so the forward is GEMM-bound on both
  sides; ours saves the split q/k/v projections and little else: fp32 is at parity. bf16 (weights, or fp32
  weights under autocast) runs the GEMMs on the CPU's avx512_bf16 units, about twice as fast.
- Generation: a decode step is a chain of single-row mat-vecs over ~25 MB of float32 weights, bound by memory
  bandwidth on both sides. Ours saves transformers' per-token overhead (its generate loop, cache objects,
  mask building), computes logits for the last position only, and reads widening projections and the output
  head from an (in, out) copy (`modeling.projection.Projection`, ~2× faster per mat-vec), but the bytes to stream
  stay the same. bf16 weights would halve them, but bf16 mat-vecs here run at ~6 GB/s of weights against
  ~17 GB/s for fp32 (measured streaming 256→1024 weights, 1 thread), so bf16 decoding does not pay. The
  attention module reads RoPE angles from a table, builds no mask for the newest token and runs the fused
  qkv through the same (in, out) copy; what is left per token is the ~25 MB of weights and Python/ATen
  dispatch (~400 small ops per token): the 2× target would need fewer, larger ops (e.g. a compiled or
  fused decode step) rather than fewer bytes.
"""
    )
    print(text)
    if not args.quick:
        write_section("models", text)


if __name__ == "__main__":
    main()
