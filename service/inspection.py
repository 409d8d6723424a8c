"""Attention inspection: the body of ``POST /attention`` and of ``atencion inspect``.

``analyse`` runs one forward with the probabilities on (and autograd on, for gradient × attention) and returns
a JSON-ready dict:

- ``tokens``: id, vocabulary string, surface text ``text[start:end]`` (offsets in Python code points, so
  accents and ``ñ`` survive a normaliser that strips them; a special token the template added, with no
  surface, shows its vocabulary string), ``special`` and ``punctuation`` flags;
- ``layouts``: per requested layer the pattern, block size and the layout's token mask (H', n, n) as bits —
  which cells are structurally zero (sparse pattern, causality) as opposed to learned near-zero — and, for a
  block-sparse layer, the cells its kernel computes (``computed``, bits): the rest is never computed;
- ``attentions``: per requested layer the probabilities (H', n, n) in a compact encoding named in the block
  (``service.encoding``): ``dense-u8``, or ``layout-u8`` whose index is the layer's layout mask;
- ``statistics``: per requested layer and head, from float32 (``service.statistics``);
- ``rollout``: Abnar & Zuidema 2020 over all layers and heads, (n, n) ``dense-u8``, and a default row;
- ``gradient``: Chefer et al. 2021's ``mean_h (A ⊙ ∂log p/∂A)^+`` per requested layer and the accumulated
  relevance row for a target position.

Target (what the gradient explains): a decoder explains the next token at position t (default the last
position: its top prediction; earlier positions: the token that really follows). An encoder explains the
masked-LM prediction at t: by default the first ``[MASK]`` (its top prediction); when t holds an ordinary
token, or the text has no ``[MASK]`` (default: the first non-special token), that token is replaced by
``[MASK]`` in the gradient's forward, which then explains how the model recovers the original token — the
attention maps and statistics always come from the text as written.

Errors: ``InspectionError`` (a bad request: 422) and ``InspectionTooLarge`` (over a cap: 413); both carry a
message that names the problem and suggests a smaller request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from service.encoding import encode_bits, encode_dense, encode_head_bits, encode_layout
from service.gradients import attention_gradients
from service.rollout import gradient_times_attention, relevance, rollout
from service.statistics import head_statistics, is_punctuation
from service.structure import allowed_keys

MAX_TOKENS = 512  # longest text analysed (also bounded by the model's max_len)
MAX_CELLS = 4_000_000  # attention values in one answer (≈ 5.3 MB of base64)
ENCODINGS = ("auto", "dense", "layout")


class InspectionError(ValueError):
    """A request ``analyse`` cannot answer; the message names the field. HTTP status: 422."""

    status = 422


class InspectionTooLarge(InspectionError):
    """A request over the token or cell cap; the message suggests a smaller one. HTTP status: 413."""

    status = 413


@dataclass(frozen=True)
class Tokens:
    ids: list[int]
    entries: list[dict[str, Any]]  # one JSON-ready dict per token
    special: Tensor  # (n,) bool
    punctuation: Tensor  # (n,) bool
    mask_id: int | None


def tokenize(tokenizer: Any, text: str) -> Tokens:
    """Token ids, offsets and surface text of ``text`` with a ``tokenizers.Tokenizer``."""
    encoding = tokenizer.encode(text)
    added = tokenizer.get_added_tokens_decoder()
    # [UNK] and a typed [MASK] stand for words of the text; the template's [CLS], [SEP], <s> … are special
    words = {getattr(tokenizer.model, "unk_token", None), "[MASK]"}
    special_ids = {i for i, token in added.items() if token.special and token.content not in words}
    entries = []
    for index, (token_id, token, (start, end), flagged) in enumerate(
        zip(encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask, strict=True)
    ):
        surface = text[start:end]
        special = bool(flagged) or token_id in special_ids
        entries.append(
            {
                "index": index,
                "id": token_id,
                "token": token,
                "text": surface if surface or not special else token,
                "start": start,
                "end": end,
                "special": special,
                "punctuation": (not special) and is_punctuation(surface),
            }
        )
    return Tokens(
        ids=list(encoding.ids),
        entries=entries,
        special=torch.tensor([e["special"] for e in entries], dtype=torch.bool),
        punctuation=torch.tensor([e["punctuation"] for e in entries], dtype=torch.bool),
        mask_id=tokenizer.token_to_id("[MASK]"),
    )


def _choose(values: list[int] | None, count: int, name: str, what: str) -> list[int]:
    if values is None:
        return list(range(count))
    if not isinstance(values, list | tuple) or not values:
        raise InspectionError(f"{name}: give a non-empty list of {what} indices, or leave it out for all")
    chosen: list[int] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
            raise InspectionError(
                f"{name}: {value!r} is not a {what}; this model has {count} (0–{count - 1})"
            )
        if value not in chosen:
            chosen.append(value)
    return chosen


def _default_target(kind: str, tokens: Tokens) -> int:
    n = len(tokens.ids)
    if kind == "decoder":
        return n - 1
    if tokens.mask_id is not None and tokens.mask_id in tokens.ids:
        return tokens.ids.index(tokens.mask_id)
    words = [i for i in range(n) if not tokens.special[i]]
    if not words:
        raise InspectionError("text: has no word to explain; add some text")
    return words[0]


def _check_target(target: int, kind: str, tokens: Tokens) -> None:
    n = len(tokens.ids)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < n:
        raise InspectionError(
            f"target: {target!r} is not a token position; the text has {n} tokens (0–{n - 1})"
        )
    is_mask = tokens.ids[target] == tokens.mask_id
    if kind == "encoder" and tokens.special[target] and not is_mask:
        raise InspectionError(
            f"target: token {target} is the special token {tokens.entries[target]['token']!r}; choose a word"
        )


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def token_text(tokenizer: Any, token_id: int) -> str:
    """The text of one token as a person reads it: decoded, so a byte-level BPE's «Ġperro» is « perro» and its
    «Ċ» a line break; a special token keeps its name."""
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _explain(model: torch.nn.Module, tokenizer: Any, kind: str, tokens: Tokens, target: int) -> tuple:
    """The gradient forward for ``target`` (see the module docstring): (AttentionGradients, target info)."""
    ids = list(tokens.ids)
    masked = kind == "encoder" and ids[target] != tokens.mask_id
    if masked:
        if tokens.mask_id is None:
            raise InspectionError("target: the tokenizer has no [MASK] token to hide the target with")
        ids[target] = tokens.mask_id
    wanted = None
    if kind == "decoder" and target + 1 < len(ids):
        wanted = ids[target + 1]
    elif masked:
        wanted = tokens.ids[target]
    result = attention_gradients(model, ids, target, wanted)
    info = {
        "position": target,
        "explains": "next token" if kind == "decoder" else "masked token",
        "masked_input": masked,
        "token_id": result.token_id,
        "token": tokenizer.id_to_token(result.token_id),  # the vocabulary's string (byte-level: «Ċ» for \n)
        "text": token_text(tokenizer, result.token_id),  # what a person reads
        "log_prob": round(result.log_prob, 6),
        "routes": sorted(set(result.routes)),
    }
    return result, info


def analyse(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    target: int | None = None,
    encoding: str = "auto",
    max_tokens: int = MAX_TOKENS,
    max_cells: int = MAX_CELLS,
    gradient: bool = True,
) -> dict[str, Any]:
    """Everything the viewer draws for ``text``; see the module docstring for the fields and encodings."""
    config = model.config
    kind = "decoder" if config.causal else "encoder"
    if not isinstance(text, str) or not text.strip():
        raise InspectionError("text: is empty; give some text to analyse")
    if encoding not in ENCODINGS:
        raise InspectionError(f"encoding: must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    chosen_layers = _choose(layers, config.n_layers, "layers", "layer")
    chosen_heads = _choose(heads, config.n_heads, "heads", "head")
    tokens = tokenize(tokenizer, text)
    n = len(tokens.ids)
    cap = min(max_tokens, config.max_len)
    if n == 0:
        raise InspectionError("text: gives no tokens; give some text to analyse")
    if n > cap:
        raise InspectionTooLarge(
            f"text: has {n} tokens, more than the {cap} this model can inspect; send a shorter text"
        )
    target = _default_target(kind, tokens) if target is None else target
    _check_target(target, kind, tokens)

    masks, computed, descriptions = {}, {}, {}
    for layer in range(config.n_layers):
        masks[layer], computed[layer], descriptions[layer] = allowed_keys(config, layer, n)
    head_index = torch.tensor(chosen_heads)
    picked = {layer: masks[layer][head_index] for layer in chosen_layers}  # (H', n, n) each
    use_layout = {
        layer: encoding == "layout" or (encoding == "auto" and not bool(picked[layer].all()))
        for layer in chosen_layers
    }
    cells = sum(int(picked[l].sum()) if use_layout[l] else picked[l].numel() for l in chosen_layers)
    if cells > max_cells:
        raise InspectionTooLarge(
            f"request: asks for {cells:,} attention values (layers × heads × tokens²), more than the cap of "
            f"{max_cells:,}; ask for fewer layers or heads (e.g. layers=[0], heads=[0]) or a shorter text"
        )

    model_was_training = model.training
    model.eval()  # dropout off: the maps are the model's, not a sample
    try:
        explained, target_info = None, None
        if gradient:
            explained, target_info = _explain(model, tokenizer, kind, tokens, target)
            attentions = explained.attentions
        if not gradient or target_info["masked_input"]:  # the maps always come from the text as written
            with torch.inference_mode():
                batch = torch.tensor([tokens.ids], dtype=torch.long, device=_model_device(model))  # (1, n)
                attentions = tuple(model(batch, need_weights=True).attentions)
    finally:
        model.train(model_was_training)
    if attentions is None or len(attentions) != config.n_layers:
        raise RuntimeError("the model returned no attention probabilities for need_weights=True")
    probs = [(a[0] if a.dim() == 4 else a).detach().to(torch.float32).cpu() for a in attentions]  # (H, n, n)

    payload: dict[str, Any] = {
        "text": text,
        "kind": kind,
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "n_tokens": n,
        "pattern": config.attention.pattern,
        "layers": chosen_layers,
        "heads": chosen_heads,
        "tokens": tokens.entries,
        "layouts": [],
        "attentions": [],
        "statistics": [],
        "limits": {"max_tokens": cap, "max_cells": max_cells},
        "cells": cells,
    }
    for layer in chosen_layers:
        mask = picked[layer]
        values = probs[layer][head_index] * mask  # (H', n, n): exactly 0 outside the layout
        kernel = computed[layer]
        payload["layouts"].append(
            descriptions[layer]
            | {
                "density": round(float(mask.float().mean()), 6),
                "mask": encode_head_bits(mask),
                "computed": None if kernel is None else encode_head_bits(kernel[head_index]),
            }
        )
        block = encode_layout(values, mask) if use_layout[layer] else encode_dense(values)
        payload["attentions"].append({"layer": layer} | block)
        for row in head_statistics(values, mask, tokens.special, tokens.punctuation):
            payload["statistics"].append(row | {"layer": layer, "head": chosen_heads[row["head"]]})

    rolled = rollout(probs)  # (n, n)
    first_special = bool(tokens.special[0])
    payload["rollout"] = {
        "row": (0 if first_special else target) if kind == "encoder" else n - 1,
        "matrix": encode_dense(rolled.clamp(0, 1)),
    }
    payload["gradient"] = (
        _gradient_payload(explained, target_info, chosen_layers, masks) if gradient else None
    )
    return payload


def _gradient_payload(
    explained: Any, target_info: dict[str, Any], chosen_layers: list[int], masks: dict[int, Tensor]
) -> dict[str, Any]:
    """Per requested layer the (n, n) map — where some cell is structurally zero for every head, only the
    cells some head may use, indexed by their own ``mask`` bits — and the target's row of the accumulated
    relevance without the identity (what attention, not the residual, brought to the target)."""
    maps = [
        gradient_times_attention(A.float().cpu(), g.float().cpu())  # (n, n)
        for A, g in zip(explained.attentions, explained.gradients, strict=True)
    ]
    n = maps[0].shape[-1]
    row = (relevance(maps) - torch.eye(n))[target_info["position"]]  # (n,)
    encoded = []
    for layer in chosen_layers:
        union = masks[layer].any(0)  # (n, n): the cells some head may use
        if bool(union.all()):
            encoded.append({"layer": layer} | encode_dense(maps[layer]))
        else:
            encoded.append({"layer": layer, "mask": encode_bits(union)} | encode_layout(maps[layer], union))
    return {"target": target_info, "maps": encoded, "relevance": [round(float(v), 6) for v in row]}
