"""Training an encoder–decoder translator: the sequence-to-sequence objective, its recipe and its loop.

Objective (Vaswani et al. 2017, §5.4): teacher forcing — the decoder reads ``<s> y₁ … yₙ`` and predicts
``y₁ … yₙ </s>`` — with label-smoothed cross-entropy (ε = 0.1 in the paper: the target distribution puts
1 − ε on the gold token and spreads ε over the vocabulary). The source is ``x₁ … xₘ </s>``. Optimiser: Adam
with β = (0.9, 0.98), ε = 1e-9 and the Noam rate (``training.schedule``). One byte-level BPE vocabulary is
trained on both languages' training sides, so the encoder and decoder share embeddings and names and numbers
can be copied across.

A run folder holds ``checkpoint/`` (the best validation chrF so far: what you ship), ``metrics.jsonl``,
``split.json`` and ``training.json``.

Recipe (TOML): ``[model]`` TranslatorConfig fields (vocabulary sizes and special ids come from the tokenizer),
``[tokenizer]`` vocab_size, ``[data]`` validation, test, include_toluca, max_tokens, ``[training]`` below.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import shlex
import sys
import time
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor

from modeling.beam_search import translate
from modeling.checkpoint import load_checkpoint, save_checkpoint
from modeling.config import ConfigError, TranslatorConfig, config_from_dict
from modeling.translator import Translator
from training.parallel import TOLUCA, Pair, clean, describe_split, load_tsunkua, split
from training.precision import autocast_for
from training.recipe import RecipeError, _attention, _coerce, apply_override, recipe_path
from training.schedule import noam_scheduler
from training.tokenizer import train_bpe
from training.translation_scores import WordDictionary, scores_by_document


@dataclass(frozen=True)
class TranslationData:
    validation: float = 0.1  # share of each document held out for validation (a block before the test one)
    test: float = 0.1  # share of each document held out for test (its last rows)
    include_toluca: bool = False  # the Toluca-variety document (its own spelling): see the model card
    max_tokens: int = 128  # longer sides are cut to this many tokens (training only)
    lexicon: bool = False  # add the word pairs of the training pairs' Dice dictionary as short training pairs


@dataclass(frozen=True)
class TranslationTraining:
    batch_size: int = 32  # sentence pairs per step (at most, when batch_tokens is set)
    batch_tokens: int = 0  # > 0: batches of similar-length pairs up to this many padded tokens (both sides)
    steps: int = 3000
    warmup: int = 400
    noam_factor: float = 1.0
    cooldown: int = 0  # the last N steps' rate falls linearly towards 0 (training.schedule)
    label_smoothing: float = 0.1  # Vaswani 2017, §5.4
    clip: float = 1.0
    eval_every: int = 250  # steps between validation chrF (greedy), keeping the best checkpoint
    eval_beams: int = 1
    precision: str = "auto"
    threads: int = 1
    seed: int = 0
    embedding_std: float = 0.0  # > 0: token embeddings drawn from N(0, std²) (Vaswani: d_model ** -0.5)
    average_last: int = 0  # > 1: also try the average of the last N evaluated weights (Vaswani 2017, §6.1)
    init_from: str = (
        ""  # a translator checkpoint folder to continue from (its tokenizer and shape); "" = fresh
    )


@dataclass(frozen=True)
class TranslationRecipe:
    model: TranslatorConfig
    vocab_size: int = 4000
    data: TranslationData = field(default_factory=TranslationData)
    training: TranslationTraining = field(default_factory=TranslationTraining)

    def to_dict(self) -> dict[str, Any]:
        model = self.model.to_dict()
        for name in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "source_vocab_size"):
            model.pop(name, None)
        return {
            "model": model,
            "tokenizer": {"kind": "bpe", "vocab_size": self.vocab_size},
            "data": dataclasses.asdict(self.data),
            "training": dataclasses.asdict(self.training),
        }


def is_translation_recipe(name_or_path: str | Path) -> bool:
    try:
        data = tomllib.loads(recipe_path(name_or_path).read_text(encoding="utf-8"))
    except (RecipeError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return (data.get("model") or {}).get("kind") == "translator"


def load_translation_recipe(
    name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> TranslationRecipe:
    """Read a translator recipe, apply ``key=value`` overrides, validate everything (``RecipeError``)."""
    data = tomllib.loads(recipe_path(name_or_path).read_text(encoding="utf-8"))
    for item in overrides:
        apply_override(data, item)
    unknown = sorted(set(data) - {"model", "tokenizer", "data", "training"})
    if unknown:
        raise RecipeError(f"{unknown[0]}: unknown recipe section")
    parts: dict[str, Any] = {}
    for section, cls in (("data", TranslationData), ("training", TranslationTraining)):
        values, hints = dict(data.get(section) or {}), typing.get_type_hints(cls)
        for key, value in values.items():
            if key not in hints:
                raise RecipeError(f"{section}.{key}: unknown key")
            values[key] = _coerce(value, hints[key], f"{section}.{key}")
        parts[section] = cls(**values)
    tokenizer = dict(data.get("tokenizer") or {})
    if set(tokenizer) - {"kind", "vocab_size"} or tokenizer.get("kind", "bpe") != "bpe":
        raise RecipeError("tokenizer: a translator takes kind = 'bpe' and vocab_size only")
    vocab_size = _coerce(tokenizer.get("vocab_size", 4000), int, "tokenizer.vocab_size")
    if vocab_size < 300:
        raise RecipeError(f"tokenizer.vocab_size: must be >= 300, got {vocab_size}")
    model = dict(data.get("model") or {})
    hints = typing.get_type_hints(TranslatorConfig)
    for key, value in list(model.items()):
        if key == "attention":
            model[key] = _attention(value)
        elif key in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "source_vocab_size"):
            raise RecipeError(f"model.{key}: set by the trained tokenizer")
        elif key != "kind":
            if key not in hints:
                raise RecipeError(f"model.{key}: unknown key for a translator config")
            model[key] = _coerce(value, hints[key], f"model.{key}")
    try:
        config = config_from_dict({**model, "vocab_size": vocab_size})
    except ConfigError as error:
        raise RecipeError(f"model.{error}") from error
    t = parts["training"]
    for name in ("batch_size", "steps", "warmup", "eval_every", "eval_beams", "threads"):
        if getattr(t, name) < 1:
            raise RecipeError(f"training.{name}: must be >= 1, got {getattr(t, name)}")
    for name in ("batch_tokens", "cooldown", "average_last"):
        if getattr(t, name) < 0:
            raise RecipeError(f"training.{name}: must be >= 0, got {getattr(t, name)}")
    if t.cooldown > t.steps:
        raise RecipeError(f"training.cooldown: must be <= training.steps ({t.steps}), got {t.cooldown}")
    if not 0 <= t.label_smoothing < 1:
        raise RecipeError(f"training.label_smoothing: must be in [0, 1), got {t.label_smoothing}")
    return TranslationRecipe(config, vocab_size, **parts)


# ---- data ---------------------------------------------------------------------------------------------------
def corpus_split(data: TranslationData) -> tuple[dict[str, list[Pair]], dict]:
    """The cleaned Tsunkua pairs split by contiguous blocks, and what cleaning dropped."""
    pairs, dropped = clean(load_tsunkua(), exclude_documents=() if data.include_toluca else (TOLUCA,))
    return split(pairs, data.validation, data.test), dropped


def encode_side(tokenizer: Tokenizer, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
    ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [row[:max_tokens] for row in ids] if max_tokens else ids


def pad(rows: list[list[int]], value: int) -> tuple[Tensor, Tensor]:
    """Rows of ids → ``(B, T)`` long tensor padded with ``value`` and its ``(B, T)`` bool mask (True = real)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


def make_batch(
    sources: list[list[int]], targets: list[list[int]], config: TranslatorConfig
) -> dict[str, Tensor]:
    """Teacher forcing: source ``x </s>``, decoder input ``<s> y``, labels ``y </s>`` (-100 on padding)."""
    bos, eos, pad_id = config.bos_token_id, config.eos_token_id, config.pad_token_id
    source, source_mask = pad([s + [eos] for s in sources], pad_id)
    target, target_mask = pad([[bos] + t for t in targets], pad_id)
    labels, _ = pad([t + [eos] for t in targets], -100)
    return {
        "source": source,
        "source_mask": source_mask,
        "target": target,
        "target_mask": target_mask,
        "labels": labels,
    }


def batches(
    n: int, batch_size: int, lengths: list[int], rng: random.Random, max_tokens: int = 0
) -> list[list[int]]:
    """Shuffled batches of similar lengths (sorted inside pools of 50 batches), in random order: ``batch_size``
    rows each, or with ``max_tokens`` > 0 as many rows (up to ``batch_size``) as keep rows × the longest row's
    length within ``max_tokens`` (token buckets: short pairs travel in big batches, long ones in small)."""
    order = list(range(n))
    rng.shuffle(order)
    out: list[list[int]] = []
    pool = 50 * batch_size
    for start in range(0, n, pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        if not max_tokens:
            out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            continue
        batch: list[int] = []
        for i in chunk:  # ascending lengths: the newest row is the longest
            if batch and (len(batch) == batch_size or (len(batch) + 1) * lengths[i] > max_tokens):
                out.append(batch)
                batch = []
            batch.append(i)
        out.append(batch)
    rng.shuffle(out)
    return out


def seq2seq_loss(model: Translator, batch: dict[str, Tensor], label_smoothing: float) -> Tensor:
    """Mean label-smoothed cross-entropy over the real target tokens."""
    logits = model(batch["source"], batch["target"], batch["source_mask"], batch["target_mask"]).logits
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        batch["labels"].flatten(),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )


def average_weights(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of one model's state dicts (checkpoint averaging, Vaswani et al. 2017, §6.1);
    integer buffers come from the last."""
    return {
        name: torch.stack([s[name].float() for s in states]).mean(0).to(tensor.dtype)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in states[-1].items()
    }


def init_embeddings(model: Translator, std: float) -> None:
    """Draw the token embeddings from N(0, std²). With sinusoidal positions the embeddings are scaled by √d, so
    std = d^-1/2 gives tokens unit scale beside the unit-scale sinusoids (Vaswani et al. 2017, §3.4, as their
    tensor2tensor code and fairseq initialise); the project's default 0.02 leaves each source token a quarter
    of its position's scale at d = 128 (docs/benchmarks.md, "Translation": how soon the decoder uses the source)."""
    with torch.no_grad():
        for embeddings in (model.source_embeddings, model.target_embeddings):
            torch.nn.init.normal_(embeddings.tokens.weight, std=std)


# ---- the loop -----------------------------------------------------------------------------------------------
def train_translator(recipe: TranslationRecipe, out: str | Path, command: str = "") -> Path:
    """Train a translator from ``recipe`` into the run folder ``out``; return its best checkpoint's path."""
    t = recipe.training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)
    torch.set_num_threads(t.threads)
    rng = random.Random(t.seed)
    parts, dropped = corpus_split(recipe.data)
    train_pairs = parts["train"]
    if t.init_from:
        start = load_checkpoint(t.init_from)
        tokenizer, model = start.tokenizer, start.model
        config = dataclasses.replace(start.config, dropout=recipe.model.dropout)
        model.config = config
        for module in model.modules():  # the recipe's dropout, not the starting run's
            if isinstance(module, torch.nn.Dropout):
                module.p = config.dropout
            elif hasattr(module, "dropout") and isinstance(module.dropout, float):
                module.dropout = config.dropout
    else:
        tokenizer = train_bpe(
            [p.source for p in train_pairs] + [p.target for p in train_pairs], recipe.vocab_size
        )
        vocab = tokenizer.get_vocab()
        config = dataclasses.replace(
            recipe.model, vocab_size=tokenizer.get_vocab_size(), pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
        )  # fmt: skip
        model = Translator(config)
        if recipe.training.embedding_std:
            init_embeddings(model, recipe.training.embedding_std)
    limit = min(recipe.data.max_tokens, config.max_len - 1)
    pairs = [(p.source, p.target) for p in train_pairs]
    if recipe.data.lexicon:
        pairs += WordDictionary(pairs).entries()
    sources = encode_side(tokenizer, [s for s, _ in pairs], limit)
    targets = encode_side(tokenizer, [u for _, u in pairs], limit)
    lengths = [len(s) + len(u) for s, u in zip(sources, targets, strict=True)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scheduler = noam_scheduler(
        optimizer, d_model=config.d_model, warmup=t.warmup, factor=t.noam_factor, total=t.steps,
        cooldown_steps=t.cooldown,
    )  # fmt: skip
    autocast, precision = autocast_for(t.precision, torch.device("cpu"))
    split_record = {
        "dropped": dropped,
        "documents": describe_split(parts),
        "include_toluca": recipe.data.include_toluca,
    }
    (out / "split.json").write_text(json.dumps(split_record, indent=2, ensure_ascii=False) + "\n")
    val = parts["validation"]
    record = {
        "recipe": recipe.to_dict(), "command": command, "precision": precision,
        "parameters": sum(p.numel() for p in model.parameters()), "train_pairs": len(train_pairs),
        "lexicon_pairs": len(pairs) - len(train_pairs),
    }  # fmt: skip
    metrics = (out / "metrics.jsonl").open("a", encoding="utf-8")

    def log(line: dict[str, Any], show: bool = False) -> None:
        metrics.write(json.dumps(line) + "\n")
        metrics.flush()
        if show:
            print(json.dumps(line), file=sys.stderr, flush=True)

    def validate() -> dict[str, float]:
        model.eval()
        hyps = translate(model, tokenizer, [p.source for p in val], num_beams=t.eval_beams, max_new_tokens=96)
        return scores_by_document(hyps, [p.target for p in val], [p.document for p in val])["overall"]

    best, step, tokens, started = -1.0, 0, 0, time.monotonic()
    snapshots: collections.deque[tuple[int, dict[str, Tensor]]] = collections.deque(maxlen=t.average_last)

    def keep_if_best(result: dict[str, float], **extra: Any) -> None:
        nonlocal best
        if result["chrf"] > best:
            best = result["chrf"]
            done = {**record, "step": step, "steps": t.steps, "tokens": tokens,
                    "train_seconds": round(time.monotonic() - started, 1), "validation": result, **extra}  # fmt: skip
            save_checkpoint(model, tokenizer, out / "checkpoint", extra={"training.json": done})

    epoch = 0
    while step < t.steps:
        epoch += 1
        for rows in batches(len(pairs), t.batch_size, lengths, rng, t.batch_tokens):
            if step >= t.steps:
                break
            model.train()
            batch = make_batch([sources[i] for i in rows], [targets[i] for i in rows], config)
            with autocast():
                loss = seq2seq_loss(model, batch, t.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip)
            optimizer.step()
            scheduler.step()
            step += 1
            tokens += int(batch["target_mask"].sum() + batch["source_mask"].sum())
            if step % 10 == 0:
                log({"step": step, "epoch": epoch, "loss": round(loss.item(), 4), "lr": scheduler.get_last_lr()[0],
                     "tokens": tokens, "elapsed_s": round(time.monotonic() - started, 1)})  # fmt: skip
            if step % t.eval_every == 0 or step == t.steps:
                result = validate()
                log({"step": step, "epoch": epoch, "validation": result,
                     "elapsed_s": round(time.monotonic() - started, 1)}, show=True)  # fmt: skip
                keep_if_best(result)
                if t.average_last > 1:
                    snapshots.append((step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    if len(snapshots) > 1:  # the mean of the last evaluated weights, kept if it validates better
        model.load_state_dict(average_weights([state for _, state in snapshots]))
        averaged = [s for s, _ in snapshots]
        result = validate()
        log({"step": step, "average_of_steps": averaged, "validation": result,
             "elapsed_s": round(time.monotonic() - started, 1)}, show=True)  # fmt: skip
        keep_if_best(result, average_of_steps=averaged)
    metrics.close()
    return out / "checkpoint"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.seq2seq", description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[])
    args = parser.parse_args(argv)
    recipe = load_translation_recipe(args.recipe, args.overrides)
    print(train_translator(recipe, args.out, command=shlex.join(["atencion", "train", *sys.argv[1:]])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
