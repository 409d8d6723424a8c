"""A translator run made into a shipped folder: weights, tokenizer, records, the fixed examples, the card, sums.

    python -m training.translation_release runs/translator-es-oto --out checkpoints/translator-es-oto

Copies the run's best checkpoint (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``training.json``),
evaluates it on the held-out test block beside both baselines (``evaluation.json``), translates the fixed
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
DECODING = {"num_beams": 4, "length_penalty": 1.0, "max_new_tokens": 128}
FILES = ("config.json", "model.safetensors", "tokenizer.json")


def samples(directory: Path, data: TranslationData) -> list[dict[str, str]]:
    """The fixed examples' translations; test-block rows come with their reference."""
    loaded = load_checkpoint(directory)
    parts, _ = corpus_split(data)
    firsts: dict[str, Any] = {}
    for pair in parts["test"]:
        firsts.setdefault(pair.document, pair)
    rows = [{"source": text} for text in EXAMPLES]
    rows += [{"source": p.source, "reference": p.target, "document": p.document} for p in firsts.values()]
    with torch.inference_mode():
        outputs = translate(loaded.model.eval(), loaded.tokenizer, [r["source"] for r in rows], **DECODING)
    return [r | {"translation": out} for r, out in zip(rows, outputs, strict=True)]


def _clean_training(record: dict[str, Any], name: str) -> dict[str, Any]:
    record = dict(record)
    record["command"] = f"atencion train translator-es-oto --out runs/{name}"
    if "--set" in record.get("original_command", ""):
        record["overrides"] = record["original_command"]
    return record


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
        {"step": m["step"], **m["validation"]} for m in metrics if "validation" in m
    ]
    training["original_command"] = training.get("command", "")
    training = _clean_training(training, out.name)
    (out / "training.json").write_text(
        json.dumps(training, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    evaluation = evaluate_translator(out, split="test", **DECODING)
    (out / "evaluation.json").write_text(
        json.dumps(evaluation, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    data = TranslationData(**training["recipe"]["data"])
    (out / "samples.json").write_text(
        json.dumps(samples(out, data), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
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
