"""Held-out evaluation, each number next to an interpolated Kneser-Ney trigram over the same tokenizer.

* Decoder: perplexity exp(mean next-token NLL) over packed validation windows; the trigram scores exactly
  the same target tokens (its context: the two tokens before each, across window edges).
* Encoder: masked-LM top-1 / top-5 accuracy with a fixed-seed random 15 % of the tokens **all** replaced by
  ``[MASK]`` (what a fill-mask user sees; 80/10/10 would inflate accuracy with the 10 % left unchanged), and
  pseudo-perplexity (Salazar et al. 2020: mask one token at a time) on a bounded sample. Baseline: the
  trigram's top-1 for the same masked positions from both sides, argmax_w of
  P(w|l2,l1)·P(r1|l1,w)·P(r2|w,r1) — the trigram's own probability of the whole sequence, up to the factors
  without w — which sees the same (masked) context as the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling.checkpoint import load_checkpoint
from modeling.quantization import quantize
from training.data import (
    DataError,
    load_stream,
    mask_tokens,
    pack_decoder,
    pack_encoder,
    read_corpus,
    shift,
    token_stream,
)
from training.ngram import KneserNeyTrigram
from training.objectives import hidden_of
from training.precision import Autocast, autocast_for
from training.tokenizer import all_special_ids


def _batches(rows: Tensor, batch_size: int):
    for start in range(0, rows.shape[0], batch_size):
        yield rows[start : start + batch_size]


@torch.no_grad()
def decoder_metrics(
    model: nn.Module, rows: Tensor, *, batch_size: int, autocast: Autocast
) -> dict[str, float]:
    """Next-token loss and perplexity over ``rows (R, T + 1)``."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in _batches(rows, batch_size):
        inputs, targets = shift(batch.to(device))  # (B, T), (B, T)
        with autocast():
            logits = model.logits(hidden_of(model, inputs))  # (B, T, V)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"))
        count += targets.numel()
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count}


def eval_masking(rows: Tensor, *, mask_id: int, vocab_size: int, specials: list[int], seed: int):
    """The evaluation's masking: 15 % of the real tokens, every one replaced by [MASK], fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return mask_tokens(
        rows,
        mask_id=mask_id,
        vocab_size=vocab_size,
        special_ids=specials,
        generator=generator,
        replace=(1.0, 0.0),
    )


@torch.no_grad()
def encoder_metrics(
    model: nn.Module, rows: Tensor, *, batch_size: int, specials: list[int], seed: int, autocast: Autocast
) -> dict[str, float]:
    """Masked-token loss, perplexity and top-1 / top-5 accuracy over ``rows (R, T)``."""
    model.eval()
    c = model.config
    device = next(model.parameters()).device
    masked = eval_masking(
        rows, mask_id=c.mask_token_id, vocab_size=c.vocab_size, specials=specials, seed=seed
    )
    total, top1, top5, count = 0.0, 0, 0, 0
    for start in range(0, rows.shape[0], batch_size):
        part = slice(start, start + batch_size)
        inputs = masked.inputs[part].to(device)  # (B, T)
        where = masked.positions[part].to(device)  # (B, T)
        labels = masked.labels[part].to(device)[where]  # (M,)
        if labels.numel() == 0:
            continue
        with autocast():
            logits = model.logits(hidden_of(model, inputs)[where]).float()  # (M, V)
        total += float(F.cross_entropy(logits, labels, reduction="sum"))
        best = logits.topk(5, dim=-1).indices  # (M, 5)
        top1 += int((best[:, 0] == labels).sum())
        top5 += int((best == labels[:, None]).any(dim=-1).sum())
        count += labels.numel()
    if count == 0:
        raise ValueError("no token was masked: the evaluation text is too short")
    loss = total / count
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "top1": top1 / count,
        "top5": top5 / count,
        "masked": count,
    }


@torch.no_grad()
def pseudo_perplexity(
    model: nn.Module,
    rows: Tensor,
    *,
    specials: list[int],
    max_tokens: int,
    batch_size: int,
    autocast: Autocast,
) -> dict[str, float]:
    """exp(−mean log P(x_t | x without t)) over the first ``max_tokens`` real tokens of ``rows`` (Salazar 2020)."""
    model.eval()
    device = next(model.parameters()).device
    mask_id = model.config.mask_token_id
    special = torch.isin(rows, torch.as_tensor(specials, dtype=rows.dtype))
    where = (~special).nonzero()[:max_tokens]  # (N, 2): (row, position)
    total = 0.0
    for start in range(0, where.shape[0], batch_size):
        rows_at, cols = where[start : start + batch_size].unbind(1)  # (b,), (b,)
        inputs = rows[rows_at].clone()  # (b, T): one copy per scored token
        labels = inputs[torch.arange(len(cols)), cols].clone()  # (b,)
        inputs[torch.arange(len(cols)), cols] = mask_id
        inputs = inputs.to(device)
        with autocast():
            hidden = hidden_of(model, inputs)[
                torch.arange(len(cols), device=device), cols.to(device)
            ]  # (b, d)
            logits = model.logits(hidden).float()  # (b, V)
        total += float(F.cross_entropy(logits, labels.to(device), reduction="sum"))
    count = where.shape[0]
    return {"pseudo_perplexity": math.exp(total / count), "tokens": count}


def ngram_perplexity(lm: KneserNeyTrigram, rows: Tensor, boundary: int) -> dict[str, float]:
    """The trigram's perplexity on the targets of ``rows (R, T + 1)`` (stride-T windows of one stream)."""
    T = rows.shape[1] - 1
    stream = torch.cat([torch.tensor([boundary, rows[0, 0]]), rows[:, 1:].reshape(-1)])  # (2 + R·T,)
    log_probs = lm.stream_log_probs(stream)  # (R·T,)
    nll = float(-log_probs.mean())
    return {"perplexity": math.exp(nll), "loss": nll, "tokens": rows.shape[0] * T}


def ngram_fill_accuracy(
    lm: KneserNeyTrigram, masked: Any, *, specials: list[int], max_positions: int, edge_ids: tuple[int, int]
) -> dict[str, float]:
    """The trigram's top-1 accuracy on the first ``max_positions`` masked positions, from both sides."""
    inputs = masked.inputs  # (R, T)
    R, T = inputs.shape
    padded = torch.cat(
        [torch.full((R, 2), edge_ids[0]), inputs, torch.full((R, 2), edge_ids[1])], dim=1
    )  # (R, T + 4)
    where = masked.positions.nonzero()[:max_positions]  # (P, 2)
    r, t = where[:, 0], where[:, 1] + 2  # positions in the padded rows
    candidates = torch.tensor([i for i in range(lm.V) if i not in set(specials)])
    correct = 0
    for start in range(0, where.shape[0], 32):
        part = slice(start, start + 32)
        rr, tt = r[part], t[part]
        scores = lm.fill(
            padded[rr, tt - 2], padded[rr, tt - 1], padded[rr, tt + 1], padded[rr, tt + 2], candidates
        )
        guess = candidates[scores.argmax(dim=-1)]  # (p,)
        correct += int((guess == masked.labels[where[part, 0], where[part, 1]]).sum())
    count = where.shape[0]
    return {"top1": correct / count if count else float("nan"), "masked": count}


def evaluate_checkpoint(
    path: str | Path,
    corpus: str | Path,
    *,
    max_sequences: int = 128,
    batch_size: int = 8,
    pppl_tokens: int = 512,
    ngram_positions: int = 1000,
    seed: int = 0,
    precision: str = "auto",
    quantization: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a corpus folder; the dictionary ``--save`` writes as evaluation.json.

    ``quantization`` ("int8"): score the decoder with int8 weights (``modeling.quantization``) instead.

    On the training corpus (every document of its recorded split present) only the validation documents
    are scored; on any other folder, every document. The n-gram is trained on the recorded training
    documents, read from the corpus being evaluated or, failing that, from the training run's corpus.
    """
    path, corpus = Path(path), Path(corpus)
    ckpt = load_checkpoint(path)
    model, config, tokenizer = ckpt.model, ckpt.config, ckpt.tokenizer
    if quantization is not None:
        model = quantize(model, quantization)
    info_path = path / "training.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    split = info.get("split", {})
    documents = read_corpus(corpus)
    recorded = set(split.get("train", [])) | set(split.get("validation", []))
    on_training_corpus = bool(recorded) and recorded <= set(documents)
    names = sorted(split["validation"]) if on_training_corpus else sorted(documents)
    seq_len = info.get("recipe", {}).get("data", {}).get("seq_len", config.max_len)
    seq_len = min(seq_len, config.max_len)
    stream = token_stream(tokenizer, [documents[n] for n in names])
    vocab = tokenizer.get_vocab()
    specials = all_special_ids(tokenizer)
    autocast, used = autocast_for(precision, torch.device("cpu"))
    extra: dict[str, Any] = {}
    if config.kind == "encoder":
        rows = pack_encoder(stream, seq_len, vocab["[CLS]"], vocab["[SEP]"])[:max_sequences]  # (R, L)
        metrics = encoder_metrics(
            model, rows, batch_size=batch_size, specials=specials, seed=seed, autocast=autocast
        )
        pppl = pseudo_perplexity(
            model,
            rows,
            specials=specials,
            max_tokens=pppl_tokens,
            batch_size=batch_size * 8,
            autocast=autocast,
        )
        extra["pseudo_perplexity_tokens"] = pppl["tokens"]
        # exp(masked loss) is not reported as a "perplexity": the card would mix it up with pseudo-perplexity
        metrics = {k: metrics[k] for k in ("top1", "top5", "loss", "masked")}
        metrics["pseudo_perplexity"] = pppl["pseudo_perplexity"]
    else:
        rows = pack_decoder(stream, seq_len)[:max_sequences]  # (R, L + 1)
        metrics = decoder_metrics(model, rows, batch_size=batch_size, autocast=autocast)
    baseline = _baseline(
        config, tokenizer, rows, split, corpus, documents, info, specials, seed, ngram_positions
    )
    return {
        "kind": config.kind,
        "checkpoint": str(path),
        "corpus": str(corpus),
        "documents": names,
        "held_out": on_training_corpus,
        "split": "validation (held-out documents)" if on_training_corpus else "all documents",
        "sequences": int(rows.shape[0]),
        "seq_len": int(seq_len),
        "precision": used,
        "quantization": quantization,
        "metrics": metrics,
        "baseline": baseline,
        "baseline_name": baseline["name"],
        "masking": "15 % of the real tokens, all replaced by [MASK], seed " + str(seed)
        if config.kind == "encoder"
        else None,
        **extra,
    }


def _baseline(config, tokenizer, rows, split, corpus, documents, info, specials, seed, positions) -> dict:
    """The Kneser-Ney trigram on the recorded training documents, scored like the model (or why not)."""
    train_names = split.get("train", [])
    source = documents
    if train_names and not set(train_names) <= set(documents) and info.get("corpus"):
        try:
            source = read_corpus(info["corpus"])
        except DataError:
            source = {}
    if not train_names or not set(train_names) <= set(source):
        return {
            "name": "interpolated Kneser-Ney trigram",
            "skipped": "the training documents are not available",
        }
    stream = _training_stream(tokenizer, train_names, source, info)
    lm = KneserNeyTrigram(stream, tokenizer.get_vocab_size())
    result: dict[str, Any] = {
        "name": "interpolated Kneser-Ney trigram",
        "trained_on": f"{len(train_names)} training documents",
    }
    vocab = tokenizer.get_vocab()
    if config.kind == "encoder":
        masked = eval_masking(
            rows, mask_id=config.mask_token_id, vocab_size=config.vocab_size, specials=specials, seed=seed
        )
        result |= ngram_fill_accuracy(
            lm, masked, specials=specials, max_positions=positions, edge_ids=(vocab["[CLS]"], vocab["[SEP]"])
        )
    else:
        result |= ngram_perplexity(lm, rows, boundary=vocab["</s>"])
    return result


def _training_stream(tokenizer, train_names: list[str], source: dict[str, str], info: dict) -> Tensor:
    """The training documents' tokens: the run's cache (OUT/data) when it matches, else tokenized now."""
    cache = Path(info["run_dir"]) / "data" if info.get("run_dir") else None
    if cache is not None and (cache / "train.npy").is_file() and (cache / "key.json").is_file():
        key = json.loads((cache / "key.json").read_text(encoding="utf-8"))
        cached = json.loads((cache / "tokenizer.json").read_text(encoding="utf-8"))
        if key.get("train") == train_names and cached == json.loads(tokenizer.to_str()):
            return load_stream(cache / "train.npy")
    return token_stream(tokenizer, [source[n] for n in train_names])


def save_evaluation(path: str | Path, result: dict[str, Any]) -> Path:
    """Write ``evaluation.json`` into the checkpoint directory (temporary file, then rename)."""
    target = Path(path) / "evaluation.json"
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(target)
    return target
