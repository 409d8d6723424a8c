"""The model card (``README.md``) of a released translator, from its ``config.json``, ``training.json``,
``evaluation.json`` and ``samples.json``: every number in it is read from those records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from training.parallel import TOLUCA
from training.translation_eval import table

LICENSING = (
    "The code of atencion is Apache-2.0. The training data is the Tsunkua corpus as shipped inside the `elotl` "
    "package (version 0.1.1), whose package metadata declares the **MPL-2.0** licence; no separate licence is "
    "stated for the corpus itself or for the source documents it was built from. The weights are a work derived "
    "from that data: check the documents' own terms before any use beyond study."
)


def _threads(n: int) -> str:
    return "one thread" if n == 1 else f"{n} threads"


def _decoding(decoding: dict[str, Any]) -> str:
    if decoding["num_beams"] == 1:
        return "greedy search"
    return f"beam search ({decoding['num_beams']} beams, length penalty {decoding['length_penalty']})"


def _tried(evaluation: dict[str, Any]) -> str:
    tried = evaluation.get("decodings_tried_on_validation", [])
    return "; ".join(f"{_decoding(d)}: validation chrF {d['validation_chrf']:.1f}" for d in tried) or "—"


def _stages(training: dict[str, Any]) -> list[str]:
    lines = []
    for stage in training.get("stages", []):
        minutes = stage["train_seconds"] / 60
        lines += [
            f"Two stages: the first command trains from scratch and keeps step {stage['step']} (validation chrF "
            f"{stage['validation']['chrf']:.1f}, {stage['tokens']:,} tokens, {minutes:.0f} minutes); the second "
            "continues from it with the settings its `--set` names.",
            "",
        ]
    return lines


def _cooldown(t: dict[str, Any]) -> str:
    steps = t.get("cooldown", 0)
    return f", falling linearly to 0 over the last {steps} steps" if steps else ""


def _batches(t: dict[str, Any]) -> str:
    if t.get("batch_tokens"):
        return (
            f"batches of similar-length pairs up to {t['batch_tokens']:,} padded tokens (both sides, at most "
            f"{t['batch_size']} pairs)"
        )
    return f"batches of {t['batch_size']} sentence pairs"


def _precision(training: dict[str, Any]) -> str:
    return "fp32 master weights" if training["precision"] == "bf16" else "no mixed precision"


def _averaging(training: dict[str, Any]) -> str:
    n = training["recipe"]["training"].get("average_last", 0)
    if n < 2:
        return "."
    if "average_of_steps" in training:
        steps = ", ".join(str(s) for s in training["average_of_steps"])
        return (
            f"; the mean of the weights at steps {steps} (checkpoint averaging) validated better and is kept."
        )
    return (
        f"; the mean of the last {n} evaluated weights (checkpoint averaging) was tried and validated worse."
    )


def _step(point: dict[str, Any]) -> str:
    if "average_of_steps" in point:
        return "mean of " + ", ".join(str(s) for s in point["average_of_steps"])
    return str(point["step"])


def _read(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def build_card(folder: str | Path) -> str:
    folder = Path(folder)
    config, training = _read(folder, "config.json"), _read(folder, "training.json")
    evaluation, samples = _read(folder, "evaluation.json"), _read(folder, "samples.json")
    overall = evaluation["model"]["overall"]
    metadata = {
        "language": ["es", "oto"],
        "library_name": "atencion",
        "license": "other",
        "license_name": "derived from the Tsunkua corpus of elotl (MPL-2.0 package)",
        "pipeline_tag": "translation",
        "tags": ["atencion", "translator", "encoder-decoder", "otomi", "hñähñu", "from-scratch"],
        "datasets": ["elotl/tsunkua"],
        "model-index": [{
            "name": folder.name,
            "results": [{
                "task": {"type": "translation", "name": "Spanish → Otomí"},
                "dataset": {"name": "Tsunkua (elotl), held-out test blocks", "type": "tsunkua", "split": "test"},
                "metrics": [
                    {"type": "chrf", "value": overall["chrf"], "name": "chrF"},
                    {"type": "chrf", "value": overall["chrf++"], "name": "chrF++"},
                    {"type": "bleu", "value": overall["bleu"], "name": "BLEU"},
                ],
            }],
        }],
    }  # fmt: skip
    split = training["split"]
    parts = split["documents"]
    documents = list(parts["test"])
    encoder_layers = config["encoder_layers"] or config["n_layers"]
    decoding = evaluation["decoding"]
    copy_chrf = evaluation["baselines"]["copy"]["overall"]["chrf"]
    dictionary_chrf = evaluation["baselines"]["dictionary"]["overall"]["chrf"]
    recipe = training["recipe"]
    lines = [
        "---",
        yaml.safe_dump(metadata, allow_unicode=True, sort_keys=False).strip(),
        "---",
        "",
        f"# {folder.name}",
        "",
        "The workshop's full Transformer: an encoder–decoder with cross-attention, written from scratch in "
        "PyTorch with atencion and trained to translate **Spanish into Otomí** (hñähñu, the Valle del Mezquital "
        "variety and its standard spelling) on the Tsunkua parallel corpus.",
        "",
        f"On the held-out test blocks it reaches **chrF {overall['chrf']:.1f}** (chrF++ {overall['chrf++']:.1f}, "
        f"BLEU {overall['bleu']:.1f}) against {copy_chrf:.1f} for copying the Spanish and {dictionary_chrf:.1f} "
        "for a word-for-word dictionary learned from the same training pairs. That is a small model on ~2,700 "
        "sentence pairs: expect the gist of short sentences, names and set phrases, not fluent translations.",
        "",
        "## Use",
        "",
        "```bash",
        f'python -m atencion translate {folder.name} "La niña juega con el gato."',
        "curl -s localhost:8000/translate -H 'Content-Type: application/json' \\",
        '  -d \'{"inputs": "La niña juega con el gato.", "parameters": {"num_beams": 4}}\'',
        "```",
        "",
        "## Architecture",
        "",
        "| | |",
        "|---|---|",
        "| kind | encoder–decoder (Vaswani et al. 2017), cross-attention in every decoder layer |",
        f"| layers | {encoder_layers} encoder + {config['n_layers']} decoder, {config['n_heads']} heads, width {config['d_model']} |",
        f"| feed-forward | {config['d_ff']} ({config['feed_forward']}) |",
        f"| positions | {config['position']}, up to {config['max_len']} tokens |",
        f"| norm | {config['norm']}, {config['norm_placement']}-norm |",
        f"| attention | {config['attention']['pattern']}; dropout {config['dropout']} |",
        f"| parameters | {training['parameters']:,} |",
        f"| vocabulary | one byte-level BPE of {config['vocab_size']:,} tokens for both languages (trained on the training pairs), "
        "shared by the encoder and the decoder and tied to the output layer |",
        "",
        "## Data",
        "",
        "The Tsunkua corpus ships inside the `elotl` package (`pip install 'atencion[translation]'`, "
        '`elotl.corpus.load("tsunkua")`): 4,963 Spanish–Otomí pairs from six documents, each row '
        "(Spanish, Otomí, variant, document, file, id).",
        "",
        f"Cleaning dropped {split['dropped']['empty']} row(s) with an empty side and "
        f"{split['dropped']['same_on_both_sides']} with the same text on both sides (Spanish copied into the Otomí "
        f"column); {split['dropped']['excluded_document']} rows of the Toluca document were left out (below).",
        "",
        "**The split.** Neighbouring rows of a document continue each other, so each document is cut into "
        f"contiguous blocks in its own order: the last {recipe['data']['test']:.0%} is test, the "
        f"{recipe['data']['validation']:.0%} before it validation (at least one row each), the rest training. "
        "No test row has a training row next to it, and training pairs whose Spanish also occurs in a held-out block "
        "were dropped. Row numbers below count within each document before cleaning.",
        "",
        "| document | training pairs | validation rows | test rows |",
        "|---|---:|---:|---:|",
    ]
    for document in documents:
        t, v, s = parts["train"][document], parts["validation"][document], parts["test"][document]
        lines.append(
            f"| {document} | {t['pairs']} | {v['pairs']} (rows {v['first']}–{v['last']}) | "
            f"{s['pairs']} (rows {s['first']}–{s['last']}) |"
        )
    lines += [
        "",
        f"**Why the Toluca document is left out.** *{TOLUCA}* (1,475 pairs, 30 % of the corpus) is "
        "Otomí of the State of Mexico (ots) written in its own orthography, while every other document is "
        "hñähñu of the Mezquital in the standard spelling. Mixed into one model, the same Spanish sentence would "
        "have two right answers in two spellings and nothing in the input to choose between them, and its "
        "held-out block would score a Mezquital-spelled translation against a Toluca-spelled reference. This "
        "model therefore translates into one variety; the recipe's `data.include_toluca=true` trains with it.",
        "",
        "## Training",
        "",
        "Teacher forcing with label-smoothed cross-entropy "
        f"(ε = {recipe['training']['label_smoothing']}), Adam (β = 0.9, 0.98) with the Noam rate (warm-up "
        f"{recipe['training']['warmup']} steps, factor {recipe['training']['noam_factor']}"
        + _cooldown(recipe["training"])
        + f"), {_batches(recipe['training'])}, {training['precision']} autocast ({_precision(training)}). "
        f"Validation chrF (greedy) every {recipe['training']['eval_every']} steps; the best is kept"
        + _averaging(training),
        "",
        "```bash",
        "pip install 'atencion[translation]'",
        *training["commands"],
        f"atencion release runs/{folder.name} checkpoints/{folder.name}",
        "```",
        "",
        *_stages(training),
        (
            f"The run was stopped by hand at step {training['stopped_at']} (the session's time); the command runs "
            "exactly that far. "
            if training.get("stopped_at")
            else ""
        )
        + f"Kept checkpoint: step {training['step']} of {training['steps']} ({training['tokens']:,} source + target "
        f"tokens seen), {training['train_seconds'] / 60:.0f} minutes of wall time on hardware: "
        f"{_threads(training['recipe']['training'].get('threads', 1))} of a 2-core x86 CPU, no GPU"
        + (
            f"; {training['lexicon_pairs']:,} word pairs of the training pairs' Dice dictionary were added as short training pairs."
            if training.get("lexicon_pairs")
            else "."
        ),
        "",
        "| step | validation chrF | chrF++ | BLEU |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {_step(v)} | {v['chrf']:.1f} | {v['chrf++']:.1f} | {v['bleu']:.1f} |"
        for v in training["validation_curve"]
    ]
    lines += [
        "",
        "## Evaluation",
        "",
        f"sacrebleu chrF (character 6-grams, β = 2), chrF++ (plus word bigrams) and BLEU on the held-out **test** "
        f"blocks ({overall['count']} pairs), decoded with {_decoding(decoding)}, the better on the validation "
        f"block of {_tried(evaluation)}. Baselines scored the same way: *copy* outputs the Spanish source; "
        "*dictionary* replaces each Spanish word by the Otomí word it co-occurs with most (Dice coefficient over "
        "the training pairs) and keeps unknown words.",
        "",
        table(evaluation),
        "",
        f"Reproduce: `python -m atencion evaluate checkpoints/{folder.name} --num-beams {decoding['num_beams']}`. "
        "For scale: the best system of the AmericasNLP 2021 shared task reached chrF 14.7 for Spanish→Otomí on its "
        "own (out-of-domain) test set; these test blocks come from the same documents as the training data.",
        "",
        "## Sample outputs",
        "",
        "The first examples tried, fixed before training: five sentences of our own, then the first test row "
        "of each document (with its reference). Not chosen after seeing outputs.",
        "",
    ]
    for sample in samples:
        lines.append(f"- **es:** {sample['source']}")
        lines.append(f"  **→ oto:** {sample['translation'] or '(empty)'}")
        if "reference" in sample:
            lines.append(f"  *reference ({sample['document']}):* {sample['reference']}")
    lines += [
        "",
        "## Limitations",
        "",
        "Trained on ~2,700 pairs, mostly one 16th-century chronicle (*Visión de los vencidos*): it knows its "
        "vocabulary and style and little else. Otomí is tonal and its spelling varies; chrF rewards partial "
        "words and can rate a wrong translation that shares spelling with the reference. Do not use it where a "
        "correct translation matters; ask Otomí speakers.",
        "",
        "## Licensing",
        "",
        LICENSING,
        "",
    ]
    return "\n".join(lines)
