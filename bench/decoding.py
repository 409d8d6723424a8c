"""Decoding benchmark: our decode loop against transformers, CTranslate2 and ONNX Runtime GenAI, same weights.

The shipped decoder (default ``checkpoints/decoder-dense``) is exported to a transformers ``LlamaForCausalLM``
folder with the parity mapping (weights, ``tokenizer.json`` and a ``tokenizer_config.json``); CTranslate2's
transformers converter and ONNX Runtime GenAI's model builder convert that folder (fp32, and int8 weights),
so every engine runs the same numbers. Greedy decoding of ``--new-tokens`` tokens after a 16-token prompt, at
batch 1, 8 and 32 (equal-length prompts, no padding), at 1 and 2 threads. The end-of-sequence token is
suppressed everywhere (transformers' ``min_new_tokens``, CTranslate2's and GenAI's ``min_length``, a masked
logit in ours) so that every engine produces exactly that many tokens. Two of ours decode eagerly: ``ours eager``
in lock step over a growing cache (``Decoder.next_logits``), ``ours engine`` as the serving engine does (a
preallocated cache, prompts of one length prefilled together, each row at its own position).

Before timing, each fp32 engine's ids are checked equal to transformers' (an int8 engine reports the share of
ids it agrees on). Then all engines take turns, ``--repeats`` rounds, so that they share the machine's load
alike; each is timed in wall seconds and in CPU seconds of this process (all its threads).

    pip install -e '.[bench]'                 # the peer engines (never needed by the service or the tests)
    python -m bench.decoding                  # writes the `decoding` section of docs/benchmarks.md
    python -m bench.decoding --quick          # batch 1 only, 1 thread, fewer repeats; prints only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.report import machine, write_section
from modeling.checkpoint import load_checkpoint
from modeling.decode_step import CompiledDecoder
from modeling.decoder import Decoder
from modeling.quantization import quantize

REPO = Path(__file__).resolve().parent.parent
PROMPT_LEN = 16

Runner = Callable[[torch.Tensor], list[list[int]]]  # prompt ids (B, 16) -> B lists of new ids


# ---- the same weights for every engine ------------------------------------------------------------------------
def export_transformers(checkpoint: Path, out: Path) -> None:
    """The folder every engine converts: ``atencion export CHECKPOINT --to transformers OUT`` (``modeling.interop``)."""
    from modeling.interop import export_transformers as export

    export(load_checkpoint(checkpoint), out)


def convert(checkpoint: Path, work: Path, engines: list[str]) -> Path:
    """The transformers folder, and the CTranslate2 / GenAI conversions the chosen engines need, under ``work``."""
    hf_dir = work / "transformers"
    if not (hf_dir / "config.json").exists():
        export_transformers(checkpoint, hf_dir)
    for precision in ("fp32", "int8"):
        out = work / f"ctranslate2-{precision}"
        if f"ctranslate2 {precision}" in engines and not (out / "model.bin").exists():
            quantize = ["--quantization", "int8"] if precision == "int8" else []
            _run(["ct2-transformers-converter", "--model", str(hf_dir), "--output_dir", str(out), "--force"]
                 + quantize)  # fmt: skip
        out = work / f"genai-{precision}"
        if f"onnxruntime-genai {precision}" in engines and not (out / "genai_config.json").exists():
            # int8: weight-only MatMulNBits, activations quantized to int8 too (accuracy level 4, its fast CPU path)
            extra = ["--extra_options", "int4_accuracy_level=4"] if precision == "int8" else []
            _run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
                  "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")] + extra)  # fmt: skip
    return hf_dir


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])}… failed:\n{done.stderr[-2000:]}")


# ---- one runner per engine ------------------------------------------------------------------------------------
def ours(model: Decoder | CompiledDecoder, new_tokens: int) -> Runner:
    """Our bare loop: the prompt fills the KV cache, then one forward of length 1 per token."""
    eos = model.config.eos_token_id

    def run(prompt: torch.Tensor) -> list[list[int]]:
        with torch.inference_mode():
            cache = model.new_cache(len(prompt)) if isinstance(model, CompiledDecoder) else model.new_cache()
            ids, out = prompt, []
            for _ in range(new_tokens):
                logits = model.next_logits(ids, cache)  # (B, V)
                if eos is not None:
                    logits[:, eos] = float("-inf")
                ids = logits.argmax(-1, keepdim=True)  # (B, 1)
                out.append(ids)
            return torch.cat(out, 1).tolist()

    return run


def ours_engine(model: Decoder, new_tokens: int) -> Runner:
    """The serving engine's step (``service.engine``): a preallocated cache, the prompts (arriving together, of
    one length) prefilled as one batch, then one step for all rows with per-row positions, reading the columns
    ``step_reads`` picks. Greedy
    with the end token masked, like ``ours`` (the engine's own token choice, log-probabilities and detokenizing
    are left out, as every runner leaves them out)."""
    from service.engine import step_reads

    eos = model.config.eos_token_id
    caches: dict[int, list] = {}  # the engine allocates its cache once, at start-up

    def run(prompt: torch.Tensor) -> list[list[int]]:
        B, T = prompt.shape
        with torch.inference_mode():
            if B not in caches:
                caches[B] = model.preallocated_cache(B)
            cache = caches[B]
            last = model.next_logits(prompt, [c.view(slice(0, B)) for c in cache])  # (B, V): one prefill
            out = []
            for step in range(new_tokens):
                if eos is not None:
                    last[:, eos] = float("-inf")
                ids = last.argmax(-1, keepdim=True)  # (B, 1)
                out.append(ids)
                if step == new_tokens - 1:
                    break
                span, segments = step_reads([T + step + 1] * B, model.config.max_len)
                positions = torch.full((B, 1), T + step)  # (B, 1): each row at its own (here equal) position
                views = [c.view(slice(0, B), span, segments) for c in cache]
                last = model.next_logits(ids, views, positions=positions)  # (B, V)
            return torch.cat(out, 1).tolist()

    return run


def transformers_generate(hf_dir: Path, new_tokens: int) -> Runner:
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="sdpa").eval()

    def run(prompt: torch.Tensor) -> list[list[int]]:
        with torch.inference_mode():
            out = hf.generate(
                prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )
        return out[:, prompt.shape[1] :].tolist()

    return run


def ctranslate2_generate(folder: Path, precision: str, threads: int, new_tokens: int, hf_dir: Path) -> Runner:
    import ctranslate2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    compute_type = "int8" if precision == "int8" else "float32"
    generator = ctranslate2.Generator(
        str(folder), device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1
    )

    def run(prompt: torch.Tensor) -> list[list[int]]:
        tokens = [[tokenizer.id_to_token(i) for i in row] for row in prompt.tolist()]
        results = generator.generate_batch(
            tokens, max_length=new_tokens, min_length=new_tokens, sampling_topk=1, beam_size=1,
            include_prompt_in_result=False,
        )  # fmt: skip
        return [r.sequences_ids[0] for r in results]

    return run


def genai_generate(folder: Path, threads: int, new_tokens: int) -> Runner:
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)

    def run(prompt: torch.Tensor) -> list[list[int]]:
        B, T = prompt.shape
        params = og.GeneratorParams(model)
        params.set_search_options(
            max_length=T + new_tokens, min_length=T + new_tokens, do_sample=False, batch_size=B
        )
        generator = og.Generator(model, params)
        generator.append_tokens(prompt.numpy().astype(np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        return [list(generator.get_sequence(b))[T:] for b in range(B)]

    return run


ENGINES = (
    "transformers fp32",
    "ours eager fp32",
    "ours engine fp32",
    "ours compiled fp32",
    "ours compiled int8",
    "ctranslate2 fp32",
    "ctranslate2 int8",
    "onnxruntime-genai fp32",
    "onnxruntime-genai int8",
)


def runners(
    engines: list[str],
    models: dict[str, Decoder | CompiledDecoder],
    work: Path,
    hf_dir: Path,
    threads: int,
    n: int,
) -> dict[str, Runner]:
    made: dict[str, Runner] = {}
    for name in engines:
        family, precision = name.rsplit(" ", 1)
        if family == "transformers":
            made[name] = transformers_generate(hf_dir, n)
        elif family == "ours engine":
            made[name] = ours_engine(models["ours eager fp32"], n)
        elif family.startswith("ours"):
            made[name] = ours(models[name], n)
        elif family == "ctranslate2":
            made[name] = ctranslate2_generate(
                work / f"ctranslate2-{precision}", precision, threads, n, hf_dir
            )
        elif family == "onnxruntime-genai":
            made[name] = genai_generate(work / f"genai-{precision}", threads, n)
    return made


# ---- timing ---------------------------------------------------------------------------------------------------
def agreement(ids: list[list[int]], reference: list[list[int]]) -> float:
    pairs = [(a, b) for row, ref in zip(ids, reference, strict=True) for a, b in zip(row, ref, strict=True)]
    return sum(a == b for a, b in pairs) / len(pairs)


def measure(made: dict[str, Runner], prompt: torch.Tensor, repeats: int) -> dict[str, dict[str, float]]:
    """Check the ids, then time every engine in turns; median wall and CPU seconds per run."""
    reference = None
    results: dict[str, dict[str, float]] = {}
    for name, run in made.items():  # also the warm-up (where a compiled step builds its graphs)
        first = time.perf_counter()
        ids = run(prompt)
        first = time.perf_counter() - first
        reference = ids if reference is None else reference
        share = agreement(ids, reference)
        if name.endswith("fp32") and share != 1.0:
            raise SystemExit(f"{name}: greedy ids differ from transformers' ({share:.1%} agree)")
        results[name] = {"agree": share, "wall": [], "cpu": [], "first": first}
    for _ in range(repeats):
        for name, run in made.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run(prompt)
            results[name]["wall"].append(time.perf_counter() - wall)
            results[name]["cpu"].append(time.process_time() - cpu)
    for r in results.values():
        r["wall"], r["cpu"] = statistics.median(r["wall"]), statistics.median(r["cpu"])
    return results


def table(per_batch: dict[int, dict[str, dict[str, float]]], new_tokens: int) -> str:
    batches = list(per_batch)
    head = " | ".join(f"batch {b}: tokens/s (× tf) | CPU-s ratio" for b in batches)
    lines = [f"| engine | ids equal to transformers' | {head} |", "|---|---|" + "---|---|" * len(batches)]
    for name in next(iter(per_batch.values())):
        agree = min(per_batch[b][name]["agree"] for b in batches)
        cells = [f"{agree:.0%}" if agree < 1 else "yes"]
        for b in batches:
            base, r = per_batch[b]["transformers fp32"], per_batch[b][name]
            cells.append(f"{b * new_tokens / r['wall']:,.0f} ({base['wall'] / r['wall']:.2f}×)")
            cells.append(f"{base['cpu'] / r['cpu']:.2f}×")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    firsts = [
        f"{name} batch {b}: {per_batch[b][name]['first']:.1f} s"
        for name in next(iter(per_batch.values()))
        if "compiled" in name
        for b in batches
    ]
    if firsts:
        lines.append("\nFirst run (includes compiling the graphs it needs): " + "; ".join(firsts) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "decoder-dense")
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes (1,8,32)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (1,2)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated, from: " + ", ".join(ENGINES)
    )
    parser.add_argument(
        "--work", type=Path, default=REPO / "runs" / "bench-decoding", help="conversions go here"
    )
    parser.add_argument("--quick", action="store_true", help="batch 1, 1 thread, 1 repeat; print only")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.threads, args.repeats = "1", "1", 1
    engines = [e.strip() for e in args.engines.split(",")]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or engines[0] != "transformers fp32":
        raise SystemExit(f"--engines: start with 'transformers fp32' and pick from {ENGINES} (got {unknown})")
    checkpoint = args.checkpoint.resolve()
    work = args.work / checkpoint.name
    if work.exists() and not (work / "transformers" / "config.json").exists():
        shutil.rmtree(work)
    hf_dir = convert(checkpoint, work, engines)
    model = load_checkpoint(checkpoint).model.eval()
    where = machine()
    batches = [int(b) for b in args.batches.split(",")]
    sections = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        models = {
            "ours eager fp32": model
        }  # compiled anew per thread count: Inductor's loops are built for it
        if "ours compiled fp32" in engines:
            models["ours compiled fp32"] = CompiledDecoder(model)
        if "ours compiled int8" in engines:
            models["ours compiled int8"] = CompiledDecoder(quantize(model, "int8"))
        made = runners(engines, models, work, hf_dir, threads, args.new_tokens)
        per_batch = {}
        for batch in batches:
            generator = torch.Generator().manual_seed(batch)
            prompt = torch.randint(3, model.config.vocab_size, (batch, PROMPT_LEN), generator=generator)
            per_batch[batch] = measure(made, prompt, args.repeats)
            print(f"threads {threads}, batch {batch} done", file=sys.stderr, flush=True)
        load = os.getloadavg()[0]
        sections.append(
            f"### {threads} thread{'s' if threads > 1 else ''} (load average {load:.1f} at the end)\n\n"
            + table(per_batch, args.new_tokens)
        )
    text = f"""## Decoding: ours against transformers, CTranslate2 and ONNX Runtime GenAI (bench/decoding.py)

Command: `python -m bench.decoding --checkpoint checkpoints/{checkpoint.name} --batches {args.batches} --threads {args.threads}`
(peer engines from `pip install -e '.[bench]'`) · machine: {where} (each run below sets its own threads). Other
jobs may share this machine (each table gives the load average): wall times are noisy; the CPU-seconds ratio (this
process, all threads) is the steadier measure, and all engines take turns under the same load.

Same weights everywhere: `checkpoints/{checkpoint.name}` exported to a transformers `LlamaForCausalLM` folder,
converted by CTranslate2 ({_version("ctranslate2")}) and ONNX Runtime GenAI ({_version("onnxruntime_genai")}).
Greedy, prompt {PROMPT_LEN} tokens, {args.new_tokens} new tokens per row, end token suppressed; median of
{args.repeats} runs per engine. "× tf" = tokens/s relative to transformers `generate` (fp32, SDPA, its KV cache)
in the same run; the CPU-s ratio is transformers' CPU seconds over the engine's. int8 rows: CTranslate2 `int8`
(weights and activations); GenAI `int8` (weight-only MatMulNBits, 8 bits, activations quantized, accuracy
level 4); "ids equal" gives the share of greedy ids that agree with fp32 transformers' where it is not 100 %.

""" + "\n\n".join(sections)
    print(text)
    if not args.quick:
        write_section("decoding", text)


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return "not installed"


if __name__ == "__main__":
    main()
