"""A translator run made into a shipped folder: weights, tokenizer, records, the fixed examples, the card, sums.

    python -m training.translation_release runs/translator-es-oto --out checkpoints/translator-es-oto

Copies the run's best checkpoint (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``training.json``),
chooses greedy or beam search by chrF on the validation block, evaluates that on the held-out test block
beside both baselines (``evaluation.json``), translates the fixed
examples (``samples.json``): ``EXAMPLES``, written before the model was trained, and the first row of each
document's test block with its reference — none chosen after looking at outputs. Then writes ``README.md`` (the
model card) and the ``SHA256SUMS`` of the checkpoints folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from modeling.beam_search import translate
from modeling.checkpoint import load_checkpoint
from training.release import write_sums
from training.seq2seq import TranslationData, corpus_split
from training.translation_eval import evaluate_translator, table

# Fixed before training: short sentences of the workshop's kind, and one of each kind the corpus holds.
EXAMPLES = (
    "El perro come tortillas.",
    "La niña juega con el gato.",
    "Mañana iremos al mercado.",
    "Los mexicanos llegaron a la ciudad.",
    "¿Dónde está tu casa?",
)
# Decodings tried on the validation block; the best by chrF is the one the test block is scored with.
DECODINGS = (
    {"num_beams": 1, "length_penalty": 1.0, "max_new_tokens": 128},
    {"num_beams": 4, "length_penalty": 1.0, "max_new_tokens": 128},
)
FILES = ("config.json", "model.safetensors", "tokenizer.json")


def samples(directory: Path, data: TranslationData, decoding: dict[str, Any]) -> list[dict[str, str]]:
    """The fixed examples' translations; test-block rows come with their reference."""
    loaded = load_checkpoint(directory)
    parts, _ = corpus_split(data)
    firsts: dict[str, Any] = {}
    for pair in parts["test"]:
        firsts.setdefault(pair.document, pair)
    rows = [{"source": text} for text in EXAMPLES]
    rows += [{"source": p.source, "reference": p.target, "document": p.document} for p in firsts.values()]
    with torch.inference_mode():
        outputs = translate(loaded.model.eval(), loaded.tokenizer, [r["source"] for r in rows], **decoding)
    return [r | {"translation": out} for r, out in zip(rows, outputs, strict=True)]


def _overrides(command: str) -> list[str]:
    """The ``--set`` values of a recorded ``atencion train`` command."""
    words = command.split()
    return words[words.index("--set") + 1 :] if "--set" in words else []


def commands(record: dict[str, Any], name: str) -> list[str]:
    """The commands that reproduce the run, with neutral folder names: a continued run (``init_from``) is
    preceded by its first stage, cut at the step its checkpoint was kept."""
    stage1 = f"runs/{name}-stage1"
    out = []
    init = record["recipe"]["training"].get("init_from")
    if init:
        first = record["stages"][0]
        sets = [s for s in _overrides(first["command"]) if not s.startswith("training.steps=")]
        sets.append(f"training.steps={first['step']}")
        out.append(f"atencion train translator-es-oto --out {stage1} --set {' '.join(sets)}")
    sets = [
        f"training.init_from={stage1}/checkpoint" if s.startswith("training.init_from=") else s
        for s in _overrides(record["command"])
    ]
    out.append(
        f"atencion train translator-es-oto --out runs/{name}" + (f" --set {' '.join(sets)}" if sets else "")
    )
    return out


def release(run: Path, out: Path) -> Path:
    """Build the shipped folder ``out`` from the run folder ``run``; return ``out``."""
    source = run / "checkpoint"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in FILES:
        shutil.copy2(source / name, out / name)
    training = json.loads((source / "training.json").read_text(encoding="utf-8"))
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    training["split"] = split
    training["validation_curve"] = [
        {"step": m["step"], **{k: m[k] for k in ("average_of_steps",) if k in m}, **m["validation"]}
        for m in metrics
        if "validation" in m
    ]
    init = training["recipe"]["training"].get("init_from")
    if init:
        first = json.loads((Path(init) / "training.json").read_text(encoding="utf-8"))
        training["stages"] = [
            {k: first[k] for k in ("recipe", "command", "step", "tokens", "train_seconds", "validation")}
        ]
    reached = max(m["step"] for m in metrics)
    if reached < training["steps"]:  # stopped by hand: the command runs exactly as far as the run went
        t = training["recipe"]["training"]
        if t.get("cooldown") and reached > training["steps"] - t["cooldown"]:
            raise ValueError(
                f"{run}: stopped at step {reached}, inside its cooldown: no command reproduces it"
            )
        words = training["command"].split()
        changed = ("training.steps=", "training.cooldown=", "training.average_last=")
        sets = [w for w in _overrides(training["command"]) if not w.startswith(changed)]
        head = words[: words.index("--set")] if "--set" in words else words
        # before its cooldown a stopped run equals a shorter one without cooldown or the final averaging
        sets += [f"training.steps={reached}"] + (["training.cooldown=0"] if t.get("cooldown") else [])
        sets += ["training.average_last=0"] if t.get("average_last") else []
        training["command"] = " ".join([*head, "--set", *sets])
        training["stopped_at"], training["steps"] = reached, reached
        t.update(steps=reached, cooldown=0, average_last=0)
    training["commands"] = commands(training, out.name)
    training["command"] = training["commands"][-1]
    for stage in training.get("stages", []):
        stage["command"] = training["commands"][0]
    training["recipe"]["training"]["init_from"] = f"runs/{out.name}-stage1/checkpoint" if init else ""
    (out / "training.json").write_text(
        json.dumps(training, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    tried = []
    for decoding in DECODINGS:
        validation = evaluate_translator(out, split="validation", **decoding)
        tried.append({**decoding, "validation_chrf": validation["model"]["overall"]["chrf"]})
    best = max(tried, key=lambda d: d["validation_chrf"])
    decoding = {k: best[k] for k in DECODINGS[0]}
    evaluation = evaluate_translator(out, split="test", **decoding)
    evaluation["decodings_tried_on_validation"] = tried
    (out / "evaluation.json").write_text(
        json.dumps(evaluation, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    data = TranslationData(**training["recipe"]["data"])
    (out / "samples.json").write_text(
        json.dumps(samples(out, data, decoding), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    from training.translation_card import build_card

    (out / "README.md").write_text(build_card(out), encoding="utf-8")
    write_sums(out.parent)
    print(table(evaluation))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.translation_release", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run", help="the run folder of `atencion train translator-es-oto`")
    parser.add_argument("--out", required=True, help="the shipped folder, e.g. checkpoints/translator-es-oto")
    args = parser.parse_args(argv)
    print(release(Path(args.run), Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
