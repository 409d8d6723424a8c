"""Training throughput (tokens/s) of the shipped recipes: bf16 vs fp32, and against transformers.

    python -m bench.training [--steps 3]

For each recipe: a real training step (forward, loss, backward, clip, AdamW) on a recipe-sized batch of
random token ids. The dense recipes are compared with transformers' BertForMaskedLM / LlamaForCausalLM built
with the same sizes, trained in the same loop (same optimizer, batch and autocast); ours and theirs
(and bf16/fp32) alternate step by step so that load from other processes hits them alike. Writes the `training` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time

import torch
import torch.nn.functional as F

from bench.report import machine, write_section
from modeling.checkpoint import build_model
from training.data import mask_tokens
from training.loop import parameter_groups
from training.objectives import CausalLM, MaskedLM
from training.recipe import load_recipe


def reference_model(config):
    """The transformers model with the same sizes as ``config`` (BERT for encoders, Llama for decoders)."""
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

    if config.kind == "encoder":
        hf = BertConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.d_model,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            intermediate_size=config.d_ff,
            max_position_embeddings=config.max_len,
            type_vocab_size=1,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
        )
        return BertForMaskedLM(hf)
    hf = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        intermediate_size=config.d_ff,
        max_position_embeddings=config.max_len,
        rms_norm_eps=config.norm_eps,
        tie_word_embeddings=True,
        attention_dropout=config.dropout,
    )
    return LlamaForCausalLM(hf)


def make_step(model, kind: str, ours: bool, autocast, batch):
    """One optimizer step of ``model``; returns a function that runs it."""
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4, betas=(0.9, 0.98))
    objective = (MaskedLM(model) if kind == "encoder" else CausalLM(model)) if ours else None
    model.train()

    def step() -> None:
        with autocast():
            if kind == "encoder":
                if ours:
                    loss = objective(batch["inputs"], batch["positions"], batch["labels"])
                else:  # transformers' way: logits everywhere, -100 where nothing is predicted
                    labels = batch["labels"].masked_fill(~batch["positions"], -100)
                    loss = model(input_ids=batch["inputs"], labels=labels).loss
            elif ours:
                loss = objective(batch["ids"][:, :-1], batch["ids"][:, 1:])
            else:
                logits = model(input_ids=batch["ids"][:, :-1]).logits
                loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["ids"][:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def timed(steps: list, n: int) -> list[float]:
    """Run the steps in turn, n times after one warm-up round; each step's fastest time (best of n: the
    least disturbed by other jobs on a shared machine)."""
    for step in steps:
        step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(n):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after 1 warm-up)")
    parser.add_argument(
        "--batch-fraction", type=float, default=1.0, help="share of the recipe's batch to use"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    rows = []
    dropout_ratio: dict[str, float] = {}
    for name in ("encoder-dense", "decoder-dense", "encoder-sparse", "decoder-sparse"):
        recipe = load_recipe(name)
        config, kind = recipe.model, recipe.model.kind
        B, L = max(1, round(recipe.training.batch_size * args.batch_fraction)), recipe.data.seq_len
        tokens = B * L
        ids = torch.randint(5, config.vocab_size, (B, L + (kind == "decoder")))
        m = mask_tokens(
            ids,
            mask_id=4,
            vocab_size=config.vocab_size,
            special_ids=[0, 1, 2, 3, 4],
            generator=torch.Generator().manual_seed(0),
        )
        batch = {"ids": ids, "inputs": m.inputs, "positions": m.positions, "labels": m.labels}
        bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
        fp32 = contextlib.nullcontext
        dense = config.attention.pattern == "dense"
        # every variant of this recipe alternates step by step, so load from other jobs hits them alike
        variants = [("bf16", True, bf16)] + (
            [("bf16", False, bf16), ("fp32", True, fp32), ("fp32", False, fp32)] if dense else []
        )
        steps = [
            make_step(build_model(config) if ours else reference_model(config), kind, ours, autocast, batch)
            for _, ours, autocast in variants
        ]
        # the recipe's dropout (0) against dropout 0.05: attention dropout samples a mask over every probability
        # and keeps attention off the fused SDPA path / the recomputing block-sparse kernel
        with_dropout = dataclasses.replace(config, dropout=0.05)
        steps.append(make_step(build_model(with_dropout), kind, True, bf16, batch))
        *measured, dropout_seconds = timed(steps, args.steps)
        seconds = dict(zip([(p, o) for p, o, _ in variants], measured, strict=True))
        dropout_ratio[name] = dropout_seconds / seconds[("bf16", True)]
        for precision in ("bf16", "fp32") if dense else ("bf16",):
            ours = tokens / seconds[(precision, True)]
            theirs = tokens / seconds[(precision, False)] if dense else None
            rows.append((name, precision, f"{B}×{L}", ours, theirs))
            print(
                name,
                precision,
                f"ours {ours:,.0f} tok/s",
                f"transformers {theirs:,.0f} tok/s" if theirs else "",
                flush=True,
            )
    bf16_of = {r[0]: r[3] for r in rows if r[1] == "bf16"}
    lines = [
        "## training",
        "",
        f"`python -m bench.training --steps {args.steps} --batch-fraction {args.batch_fraction} "
        f"--threads {args.threads}` on {machine()}; "
        f"load average at the start {load_start:.1f}, at the end "
        f"{os.getloadavg()[0]:.1f} (other jobs share the 2 cores: absolute numbers are noisy, the "
        "ratios less so, since all variants of a recipe (ours/theirs, bf16/fp32) alternate step by step).",
        "",
        "One full training step (forward, loss, backward, clip, AdamW) on a batch of random ids "
        f"({args.batch_fraction:g} of the recipe's batch); "
        f"best of {args.steps} steps after one warm-up (other jobs make single steps vary up to 3×). transformers = BertForMaskedLM (post-norm; MLM loss "
        "over all positions with -100 labels, its standard use) / LlamaForCausalLM with the same sizes, in "
        "the same loop. Our encoder computes the MLM head only at the 15 % masked positions.",
        "",
        "| recipe | precision | batch | ours tokens/s | transformers tokens/s | ours / transformers | bf16 / fp32 (ours) | recipe (dropout 0) / dropout 0.05 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, precision, shape, ours, theirs in rows:
        ratio = f"{ours / theirs:.2f}×" if theirs else "—"
        speedup = f"{bf16_of[name] / ours:.2f}×" if precision == "fp32" else "—"
        theirs_text = f"{theirs:,.0f}" if theirs else "— (no sparse equivalent)"
        dropout = f"{dropout_ratio[name]:.2f}×" if precision == "bf16" else "—"
        lines.append(
            f"| {name} | {precision} | {shape} | {ours:,.0f} | {theirs_text} | {ratio} | {speedup} | {dropout} |"
        )
    write_section("training", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
