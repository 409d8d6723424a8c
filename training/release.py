"""Releasing a run: a training run's checkpoint made into a folder to ship or push, with a clean record.

``atencion release RUN OUT --corpus DIR`` (or ``python -m training.release …``) copies the checkpoint files of ``RUN/checkpoint``
(config, weights, tokenizer, training.json, evaluation.json) to ``OUT`` and then:

* rewrites the training record so it says what was trained, not where: the corpus becomes ``CORPUS`` (the
  folder the command was given), the run folder ``runs/NAME``; a run stopped at a checkpoint before its last
  step is recorded as a run of that many steps (``training.steps=N`` added to the command — the Noam schedule
  and the data order do not depend on the total, so the weights are the same);
* lists the works trained and validated on, with title, author and Project Gutenberg number, when the corpus
  folder has a ``MANIFEST.tsv`` (columns ``file``, ``title``, ``author``, ``gutenberg_id``);
* runs the fixed examples below through the model (``samples.json``): the first inputs tried, written
  here before any model was trained, so the card shows ordinary behaviour rather than chosen successes;
* writes the model card (``training.model_card``) and ``SHA256SUMS`` over every checkpoint beside ``OUT``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from modeling.checkpoint import CONFIG, SUMS, TOKENIZER, WEIGHTS
from modeling.digests import sha256
from training.model_card import build_model_card

RECORDS = ("training.json", "evaluation.json")
FILL_MASK_EXAMPLES = (
    "El perro [MASK] en la calle.",
    "La casa de mi [MASK] es muy grande.",
    "Don Quijote salió de su [MASK] al amanecer.",
    "Me gusta mucho leer [MASK] por la noche.",
    "Ella abrió la [MASK] y salió al jardín.",
    "Los soldados llegaron a la [MASK] antes de la noche.",
)
GENERATION_EXAMPLES = (
    "Era una noche oscura y",
    "El caballero entró en la sala y",
    "—¿Qué quiere usted? —preguntó la mujer.",
    "Al día siguiente, muy de mañana,",
)
# Sampling for the examples: seeded, so the card's outputs are reproducible.
SAMPLING = {"max_new_tokens": 40, "do_sample": True, "temperature": 0.8, "top_p": 0.95, "seed": 0}


def read_manifest(corpus: Path) -> dict[str, dict[str, str]]:
    """``MANIFEST.tsv`` of the corpus folder as file name → row; empty when the folder has none."""
    path = corpus / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    missing = {"file", "title", "author", "gutenberg_id"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return {row["file"]: row for row in rows}


def works(split: dict, manifest: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """Each document of the split with its side and, where the manifest has it, title/author/PG number."""
    listed = []
    for side in ("train", "validation"):
        for name in split.get(side) or []:
            row = manifest.get(name, {})
            listed.append(
                {
                    "file": name,
                    "split": side,
                    "title": row.get("title", ""),
                    "author": row.get("author", ""),
                    "gutenberg_id": row.get("gutenberg_id", ""),
                }
            )
    return listed


def clean_command(command: str, name: str, step: int, total: int) -> str:
    """The recorded command with the corpus as ``CORPUS``, the run as ``runs/NAME``, no ``--resume``, and
    ``training.steps=STEP`` in place of the run's own when it was stopped before its total (a run that
    reached its total keeps the steps it was given)."""
    words = command.split()
    out: list[str] = []
    skip = None
    for word in words:
        if skip:
            out.append(skip)
            skip = None
            continue
        if word in ("--corpus", "--out"):
            out.append(word)
            skip = "CORPUS" if word == "--corpus" else f"runs/{name}"
        elif word != "--resume" and not (step < total and word.startswith("training.steps=")):
            out.append(word)
    if step < total:
        out += ["training.steps=" + str(step)] if "--set" in out else ["--set", f"training.steps={step}"]
    return " ".join(out)


def compute_time(metrics: Path, tokens_seen: int) -> dict[str, float] | None:
    """Training time as tokens seen / the run's median tokens/s (its metrics.jsonl lines): unlike the wall
    time, it does not count pauses (a run stopped and resumed, or sharing its cores with other runs)."""
    if not metrics.is_file() or tokens_seen <= 0:
        return None
    rates = sorted(
        r["tokens_per_s"]
        for r in map(json.loads, metrics.read_text(encoding="utf-8").splitlines())
        if "split" not in r and r.get("tokens_per_s", 0) > 0
    )
    if not rates:
        return None
    median = rates[len(rates) // 2]
    return {"compute_time_s": round(tokens_seen / median, 1), "median_tokens_per_s": round(median, 1)}


def clean_record(record: dict[str, Any], name: str, manifest: dict[str, dict[str, str]]) -> dict[str, Any]:
    """training.json without machine paths, as a run of the steps it reached, with the works listed."""
    record = dict(record)
    record.pop("run_dir", None)
    record["corpus"] = "CORPUS"
    step, total = int(record.get("step", 0)), int(record.get("total_steps", 0))
    if record.get("command"):
        record["command"] = clean_command(str(record["command"]), name, step, total)
    cooling = isinstance(record.get("recipe"), dict) and record["recipe"].get("training", {}).get("cooldown")
    if step and step < total and cooling:
        raise ValueError(
            f"the run stopped at step {step} of {total} with a cooldown: no run of {step} steps equals it"
        )
    if step and step < total:
        record["stopped"] = f"stopped at step {step} of {total}; equal to a run with training.steps={step}"
        record["total_steps"], record["complete"] = step, True
        if isinstance(record.get("recipe"), dict):
            training = dict(record["recipe"].get("training", {}))
            training["steps"] = step
            record["recipe"] = {**record["recipe"], "training": training}
    split = record.get("split") if isinstance(record.get("split"), dict) else {}
    if split:
        record["works"] = works(split, manifest)
    return record


def read_examples(path: Path) -> tuple[str, ...]:
    """A JSON list of strings: prompts for a decoder, sentences with ``[MASK]`` for an encoder."""
    try:
        examples = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--examples: {path} is not a readable JSON file ({error})") from error
    if not isinstance(examples, list) or not examples or not all(isinstance(e, str) and e for e in examples):
        raise ValueError(f"--examples: {path} must hold a JSON list of non-empty strings")
    return tuple(examples)


def run_examples(directory: Path, examples: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    """The examples through the checkpoint: fill-mask (top 3) for an encoder, sampling for a decoder; by
    default the fixed Spanish ones above."""
    from modeling.checkpoint import load_checkpoint
    from modeling.fill_mask import fill_mask
    from modeling.generation import Sampling, generate_text

    checkpoint = load_checkpoint(directory)
    checkpoint.model.eval()
    samples = []
    if checkpoint.config.kind == "encoder":
        for text in examples or FILL_MASK_EXAMPLES:
            (candidates,) = fill_mask(checkpoint.model, checkpoint.tokenizer, text, top_k=3)
            shown = ", ".join(f"{c['token_str']} ({c['score']:.2f})" for c in candidates)
            samples.append({"input": text, "output": shown})
        return samples
    room = checkpoint.config.max_len // 2  # a model with a short context gets a shorter example
    sampling = Sampling(**{**SAMPLING, "max_new_tokens": min(SAMPLING["max_new_tokens"], room)})
    for prompt in examples or GENERATION_EXAMPLES:
        ids = checkpoint.tokenizer.encode(prompt).ids[-room:]
        completion = generate_text(checkpoint.model, checkpoint.tokenizer, ids, sampling)
        samples.append({"prompt": prompt, "completion": completion})
    return samples


def write_sums(root: Path) -> Path:
    """``root/SHA256SUMS`` over the files of every checkpoint folder in ``root`` (sha256sum format)."""
    lines = []
    for folder in sorted(p for p in root.iterdir() if (p / CONFIG).is_file()):
        for file in sorted(p for p in folder.iterdir() if p.is_file()):
            lines.append(f"{sha256(file)}  {folder.name}/{file.name}")
    target = root / SUMS
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def release(
    run: Path, out: Path, corpus: Path | None = None, examples: tuple[str, ...] | None = None
) -> Path:
    """Make ``out`` the released form of ``run``'s checkpoint; returns ``out``."""
    source = run / "checkpoint"
    for required in (CONFIG, WEIGHTS, TOKENIZER, "training.json"):
        if not (source / required).is_file():
            raise ValueError(f"{source}: missing {required} (is {run} a finished training run?)")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file():
            stale.unlink()
    for name in (CONFIG, WEIGHTS, TOKENIZER, *RECORDS):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    manifest = read_manifest(corpus) if corpus else {}
    record = json.loads((out / "training.json").read_text(encoding="utf-8"))
    record = clean_record(record, out.name, manifest)
    record |= compute_time(run / "metrics.jsonl", int(record.get("tokens_seen") or 0)) or {}
    (out / "training.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", "utf-8")
    if (out / "evaluation.json").is_file():
        evaluation = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
        evaluation["corpus"] = "the held-out documents of CORPUS"
        evaluation["checkpoint"] = out.name
        evaluation.pop("saved_to", None)
        (out / "evaluation.json").write_text(
            json.dumps(evaluation, indent=1, ensure_ascii=False) + "\n", "utf-8"
        )
    write_sums(out.parent)  # the sums of an earlier release of ``out`` no longer hold
    samples = run_examples(out, examples)
    (out / "samples.json").write_text(json.dumps(samples, indent=1, ensure_ascii=False) + "\n", "utf-8")
    (out / "README.md").write_text(build_model_card(out), encoding="utf-8")
    write_sums(out.parent)
    texts = [p for p in out.iterdir() if p.suffix in (".json", ".md")]
    leftover = [p.name for p in texts if re.search(r"/(work|home|root|tmp)/", p.read_text(encoding="utf-8"))]
    if leftover:
        raise ValueError(f"{out}: machine paths remain in {', '.join(leftover)}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="the training run's folder (holds checkpoint/)")
    parser.add_argument("out", type=Path, help="the released checkpoint's folder, e.g. checkpoints/NAME")
    parser.add_argument("--corpus", type=Path, help="the corpus folder, for its MANIFEST.tsv")
    parser.add_argument("--examples", type=Path, help="a JSON list of prompts (or of sentences with [MASK])")


def run_command(args: argparse.Namespace) -> int:
    """The command (``atencion release`` or ``python -m training.release``): prints ``OUT``; exit code 1 with
    one ``error:`` line on failure."""
    try:
        examples = read_examples(args.examples) if args.examples else None
        print(release(args.run, args.out, args.corpus, examples))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.release", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
