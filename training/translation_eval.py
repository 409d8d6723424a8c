"""Evaluating a translator checkpoint on its held-out block: the model and both baselines, per document and overall.

The split is rebuilt from the run's own record (``training.json``: the data section of its recipe), so the
evaluation uses exactly the rows the run held out. The dictionary baseline learns from that run's training
pairs. Written as ``evaluation.json`` beside the weights with ``--save``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from modeling.checkpoint import CheckpointError, load_checkpoint
from training.seq2seq import TranslationData, corpus_split, translate
from training.translation_scores import baselines, scores_by_document


def evaluate_translator(
    checkpoint: str | Path,
    *,
    split: str = "test",
    num_beams: int = 4,
    length_penalty: float = 1.0,
    max_new_tokens: int = 128,
    limit: int = 0,
) -> dict[str, Any]:
    """chrF / chrF++ / BLEU of the checkpoint's translations of the held-out ``split`` (test or validation),
    beside the copy and dictionary baselines; ``limit`` > 0 scores only the first rows (a quick look)."""
    if split not in ("test", "validation"):
        raise ValueError(f"split: must be test or validation, got {split!r}")
    path = Path(checkpoint)
    loaded = load_checkpoint(path)
    if loaded.config.kind != "translator":
        raise CheckpointError(f"{path}: a {loaded.config.kind} checkpoint, not a translator")
    record_path = path / "training.json"
    if not record_path.is_file():
        raise CheckpointError(f"{path}: no training.json, so the held-out rows are unknown")
    recipe = json.loads(record_path.read_text(encoding="utf-8"))["recipe"]
    data = TranslationData(**recipe["data"])
    parts, _ = corpus_split(data)
    rows = parts[split][:limit] if limit > 0 else parts[split]
    model = loaded.model.eval()
    started = time.monotonic()
    with torch.inference_mode():
        hypotheses = translate(
            model, loaded.tokenizer, [p.source for p in rows], num_beams=num_beams,
            length_penalty=length_penalty, max_new_tokens=max_new_tokens,
        )  # fmt: skip
    seconds = time.monotonic() - started
    references, documents = [p.target for p in rows], [p.document for p in rows]
    result: dict[str, Any] = {
        "kind": "translator",
        "split": split,
        "data": recipe["data"],
        "decoding": {
            "num_beams": num_beams,
            "length_penalty": length_penalty,
            "max_new_tokens": max_new_tokens,
        },
        "model": scores_by_document(hypotheses, references, documents),
        "baselines": {},
        "translate_seconds": round(seconds, 1),
    }
    train_pairs = [(p.source, p.target) for p in parts["train"]]
    for name, baseline in baselines(train_pairs).items():
        result["baselines"][name] = scores_by_document(
            [baseline(p.source) for p in rows], references, documents
        )
    return result


def table(result: dict[str, Any]) -> str:
    """The result as a Markdown table: one row per document and overall, model beside both baselines."""
    lines = [
        "| document | pairs | model chrF | chrF++ | BLEU | copy chrF | BLEU | dictionary chrF | BLEU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    copy, dictionary = result["baselines"]["copy"], result["baselines"]["dictionary"]
    for document, m in result["model"].items():
        name = "**overall**" if document == "overall" else document
        c, d = copy[document], dictionary[document]
        lines.append(
            f"| {name} | {m['count']} | {m['chrf']:.1f} | {m['chrf++']:.1f} | {m['bleu']:.1f} | "
            f"{c['chrf']:.1f} | {c['bleu']:.1f} | {d['chrf']:.1f} | {d['bleu']:.1f} |"
        )
    return "\n".join(lines)
