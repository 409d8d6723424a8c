"""The Spanish → Otomí translator: training speed per size and precision, and the runs made with the recipe.

    python -m bench.translation [--steps 6] [--runs runs/D runs/E ...]

Speed: real training steps (forward, label-smoothed loss, backward, clip, Adam) of encoder–decoders of several
sizes on token-bucketed batches (~2,000 padded tokens) of the Tsunkua training pairs, one thread; bf16 autocast
and fp32 alternate step by step so that load from other processes hits both alike; median seconds per step.

Runs: for each run folder of ``atencion train translator-es-oto``, its command, size, steps and wall time, the
validation chrF curve (greedy) and the kept checkpoint's held-out **test** chrF (greedy) beside the copy and
dictionary baselines. The test numbers are reported, never used to choose. Writes the ``translation`` section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import time
from pathlib import Path

import torch

from bench.report import machine, write_section
from modeling.translator import Translator
from training.precision import autocast_for
from training.seq2seq import (
    TranslationData,
    TranslationTraining,
    batches,
    corpus_split,
    encode_side,
    load_translation_recipe,
    make_batch,
    seq2seq_loss,
)
from training.tokenizer import train_bpe
from training.translation_eval import evaluate_translator

SIZES = ((128, 2, 512), (128, 3, 512), (192, 3, 768), (256, 3, 1024))  # d_model, layers per side, d_ff


def step_seconds(steps: int, batch_tokens: int = 2000) -> list[dict]:
    """Median s/step of each size in bf16 and fp32 on batches of the real training pairs."""
    recipe = load_translation_recipe("translator-es-oto")
    train = corpus_split(recipe.data)[0]["train"]
    tokenizer = train_bpe([p.source for p in train] + [p.target for p in train], recipe.vocab_size)
    sources = encode_side(tokenizer, [p.source for p in train], 127)
    targets = encode_side(tokenizer, [p.target for p in train], 127)
    lengths = [len(s) + len(t) for s, t in zip(sources, targets, strict=True)]
    order = batches(len(train), 128, lengths, random.Random(0), batch_tokens)
    vocab = tokenizer.get_vocab()
    rows = []
    for d, layers, ff in SIZES:
        config = dataclasses.replace(
            recipe.model, d_model=d, n_layers=layers, encoder_layers=layers, d_ff=ff,
            vocab_size=tokenizer.get_vocab_size(), pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"],
            eos_token_id=vocab["</s>"],
        )  # fmt: skip
        torch.manual_seed(0)
        model = Translator(config).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        times: dict[str, list[float]] = {"bf16": [], "fp32": []}
        for i, ids in enumerate(order[: 2 * (steps + 1)]):
            precision = ("bf16", "fp32")[i % 2]
            autocast, _ = autocast_for(precision, torch.device("cpu"))
            batch = make_batch([sources[j] for j in ids], [targets[j] for j in ids], config)
            started = time.perf_counter()
            with autocast():
                loss = seq2seq_loss(model, batch, 0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if i >= 2:  # one warm-up step each
                times[precision].append(time.perf_counter() - started)
        bf16, fp32 = (statistics.median(times[p]) for p in ("bf16", "fp32"))
        params = sum(p.numel() for p in model.parameters())
        rows.append({"size": f"{d} × {layers}+{layers}, ff {ff}", "params": params, "bf16": bf16, "fp32": fp32,
                     "epoch_steps": len(order)})  # fmt: skip
    return rows


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def command_today(recipe: dict, name: str) -> str:
    """The ``atencion train`` command that repeats a run's recorded recipe with today's recipe file: every
    setting that differs from it as a ``--set``."""
    now = _flat(load_translation_recipe("translator-es-oto").to_dict())
    defaults = {
        "data": dataclasses.asdict(TranslationData()),
        "training": dataclasses.asdict(TranslationTraining()),
    }
    then = _flat(defaults) | _flat(recipe)  # settings added since the run default to what the run did
    sets = [
        f"{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in then.items()
        if key != "tokenizer.kind" and now.get(key) != value
    ]
    return f"atencion train translator-es-oto --out runs/{name}" + (
        " --set " + " ".join(sets) if sets else ""
    )


def run_summary(folder: Path) -> dict:
    """One run folder: its record, its validation curve and its kept checkpoint's test scores (greedy)."""
    record = json.loads((folder / "checkpoint" / "training.json").read_text(encoding="utf-8"))
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    curve = [(m.get("average_of_steps") and "avg") or m["step"] for m in lines if "validation" in m]
    chrf = [m["validation"]["chrf"] for m in lines if "validation" in m]
    last = [m for m in lines if "loss" in m][-1]
    test = evaluate_translator(folder / "checkpoint", split="test", num_beams=1)
    return {
        "name": folder.name,
        "command": command_today(record["recipe"], folder.name),
        "parameters": record["parameters"],
        "steps": last["step"],
        "planned": record["steps"],
        "epochs": last["epoch"],
        "minutes": last["elapsed_s"] / 60,
        "curve": ", ".join(f"{s}: {c:.1f}" for s, c in zip(curve, chrf, strict=True)),
        "kept": record["step"] if "average_of_steps" not in record else "average",
        "validation": record["validation"]["chrf"],
        "test": test["model"]["overall"]["chrf"],
        "copy": test["baselines"]["copy"]["overall"]["chrf"],
        "dictionary": test["baselines"]["dictionary"]["overall"]["chrf"],
    }


def report(speed: list[dict], runs: list[dict], load: tuple[float, float]) -> str:
    lines = [
        "## Translation (bench/translation.py)",
        "",
        f"`python -m bench.translation --runs {' '.join('runs/' + r['name'] for r in runs)}` on {machine()}; "
        f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (other jobs share the "
        "2 cores: absolute times are noisy, the bf16/fp32 ratios less so).",
        "",
        "Training step of the encoder–decoder (one thread, ~2,000 padded tokens per batch of Tsunkua pairs, "
        "median s/step; bf16 and fp32 alternate step by step):",
        "",
        "| size (d × layers, ff) | parameters | bf16 s/step | fp32 s/step | fp32 / bf16 | steps per epoch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in speed:
        lines.append(
            f"| {r['size']} | {r['params']:,} | {r['bf16']:.3f} | {r['fp32']:.3f} | {r['fp32'] / r['bf16']:.2f}× | "
            f"{r['epoch_steps']} |"
        )
    if runs:
        lines += [
            "",
            "Runs of `atencion train translator-es-oto` (validation chrF, greedy, along the run; the kept "
            "checkpoint is the best on validation; its test chrF is reported, not used to choose; runs stopped "
            "by hand before their planned steps say so):",
            "",
            "| run | parameters | steps of planned (epochs) | minutes | validation chrF by step | kept | validation | "
            "test | copy (test) | dictionary (test) |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in runs:
            lines.append(
                f"| {r['name']} | {r['parameters']:,} | {r['steps']} of {r['planned']} ({r['epochs']}) | {r['minutes']:.0f} | "
                f"{r['curve']} | {r['kept']} | {r['validation']:.1f} | {r['test']:.1f} | {r['copy']:.1f} | "
                f"{r['dictionary']:.1f} |"
            )
        lines += ["", "Commands (each run's recorded settings against today's recipe file):", ""]
        lines += [f"- {r['name']}: `{r['command']}`" for r in runs]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.translation", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per size and precision")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders to summarise")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = os.getloadavg()[0]
    speed = step_seconds(args.steps)
    runs = [run_summary(Path(folder)) for folder in args.runs]
    text = report(speed, runs, (start, os.getloadavg()[0]))
    write_section("translation", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
