"""Attention inspection of an encoder–decoder: the body of ``POST /attention`` (and ``atencion inspect``) for a
translator.

The source text is encoded as in training (``x₁ … xₘ </s>``); the target is the given ``translation`` or, by
default, the model's greedy translation, read by the decoder as ``<s> y₁ … yₙ``. One teacher-forced forward
(probabilities on, autograd on) gives, per layer:

- ``cross_attentions``: the cross-attention (H', T, S) — rows are target positions, columns source tokens;
- ``attentions``: the decoder's causal self-attention (H', T, T); ``encoder_attentions``: the encoder's (H', S, S).

For a chosen target position t (``target``; default 0, the row that predicts the first word) it says which
source and target tokens the token at t + 1 came from:

- ``rollout`` (Abnar & Zuidema 2020) through the decoder, ``R_dec = Π_l (½·mean_h A_l + ½·I)``; the source
  row is ``R_dec[t] · C̄ · R_enc`` with ``C̄`` the mean cross-attention over layers and heads and ``R_enc`` the
  encoder's rollout (each factor is row-stochastic, so the row sums to 1);
- ``gradient`` (Chefer et al. 2021): per layer ``mean_h (A ⊙ ∂ log p(y_{t+1}) / ∂A)^+`` for the cross- and the
  self-attention, and their rows at t summed over layers.

Every map travels as ``dense-u8`` (``service.encoding``). Errors as in ``service.inspection``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from modeling.beam_search import greedy
from service.encoding import encode_dense
from service.inspection import MAX_CELLS, MAX_TOKENS, InspectionError, InspectionTooLarge, _choose
from service.rollout import gradient_times_attention, rollout
from service.statistics import is_punctuation


def _entries(
    tokenizer: Any, text: str | None, ids: list[int], offsets: list[tuple[int, int]] | None
) -> list[dict]:
    """One JSON-ready dict per token; the surface text comes from the offsets when the text is known."""
    specials = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    entries = []
    for index, token_id in enumerate(ids):
        special = token_id in specials
        if offsets is not None and text is not None and index < len(offsets) and not special:
            start, end = offsets[index]
            surface = text[start:end]
        else:
            start = end = None
            surface = tokenizer.id_to_token(token_id) if special else tokenizer.decode([token_id])
        entries.append({
            "index": index, "id": token_id, "token": tokenizer.id_to_token(token_id), "text": surface,
            "start": start, "end": end, "special": special,
            "punctuation": (not special) and is_punctuation(surface.strip()),
        })  # fmt: skip
    return entries


def analyse_translation(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    translation: str | None = None,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    target: int | None = None,
    max_tokens: int = MAX_TOKENS,
    max_cells: int = MAX_CELLS,
    gradient: bool = True,
    max_new_tokens: int = 64,
) -> dict[str, Any]:
    """Cross-, self- and encoder attention, rollout and gradient × attention of ``text`` → its translation."""
    c = model.config
    if not isinstance(text, str) or not text.strip():
        raise InspectionError("text: is empty; give some Spanish text to translate")
    if translation is not None and not translation.strip():
        raise InspectionError("translation: is empty; leave it out to inspect the model's own translation")
    chosen_layers = _choose(layers, c.n_layers, "layers", "layer")
    encoder_layers = c.encoder_layers or c.n_layers
    chosen_heads = _choose(heads, c.n_heads, "heads", "head")
    cap = min(max_tokens, c.max_len)
    source = tokenizer.encode(text, add_special_tokens=False)
    source_ids = source.ids + [c.eos_token_id]
    if len(source_ids) > cap:
        raise InspectionTooLarge(
            f"text: has {len(source_ids)} tokens, more than the {cap} allowed; send a shorter text"
        )
    device = next(model.parameters()).device
    model_was_training = model.training
    model.eval()
    try:
        batch = torch.tensor([source_ids], dtype=torch.long, device=device)  # (1, S)
        if translation is None:
            generated = greedy(model, batch, max_new_tokens=min(max_new_tokens, cap - 1))[0]
            target_text, target_offsets = None, None
        else:
            encoded = tokenizer.encode(translation, add_special_tokens=False)
            generated, target_text, target_offsets = (
                encoded.ids,
                translation,
                [(0, 0)] + list(encoded.offsets),
            )
        target_ids = [c.bos_token_id] + generated[: cap - 1]  # decoder inputs
        S, T = len(source_ids), len(target_ids)
        position = 0 if target is None else target
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < T:
            raise InspectionError(
                f"target: {position!r} is not a target position; the target has {T} (0–{T - 1})"
            )
        H = len(chosen_heads)
        cells = len(chosen_layers) * H * (T * S + T * T) + min(encoder_layers, len(chosen_layers)) * H * S * S
        if cells > max_cells:
            raise InspectionTooLarge(
                f"request: asks for {cells:,} attention values, more than the cap of {max_cells:,}; ask for fewer "
                "layers or heads (e.g. layers=[0], heads=[0]) or a shorter text"
            )
        following = target_ids[position + 1] if position + 1 < T else None
        with torch.inference_mode(False), torch.enable_grad():
            out = model(batch, torch.tensor([target_ids], dtype=torch.long, device=device), need_weights=True)
            log_probs = out.logits[0, position].float().log_softmax(-1)  # (V,)
            wanted = int(log_probs.argmax()) if following is None else following
            crosses, selfs = list(out.cross_attentions), list(out.attentions)
            grads = [None] * (len(crosses) + len(selfs))
            if gradient:
                grads = list(torch.autograd.grad(log_probs[wanted], crosses + selfs, allow_unused=True))
        log_prob = float(log_probs[wanted].detach())
    finally:
        model.train(model_was_training)

    def plain(tensors: list[Tensor]) -> list[Tensor]:
        return [t[0].detach().float().cpu() for t in tensors]  # (H, ·, ·) each

    cross, self_, encoder = plain(crosses), plain(selfs), plain(out.encoder_attentions)
    head_index = torch.tensor(chosen_heads)
    source_entries = _entries(tokenizer, text, source_ids, list(source.offsets))
    target_entries = _entries(tokenizer, target_text, target_ids, target_offsets)
    decoder_rollout, encoder_rollout = rollout(self_), rollout(encoder)  # (T, T), (S, S)
    mean_cross = torch.stack(cross).mean(dim=(0, 1))  # (T, S)
    source_row = decoder_rollout[position] @ mean_cross @ encoder_rollout  # (S,)
    payload: dict[str, Any] = {
        "text": text,
        "translation": tokenizer.decode(target_ids[1:], skip_special_tokens=True).strip(),
        "kind": "translator",
        "n_layers": c.n_layers,
        "encoder_layers": encoder_layers,
        "n_heads": c.n_heads,
        "n_tokens": T,
        "n_source_tokens": S,
        "pattern": c.attention.pattern,
        "layers": chosen_layers,
        "heads": chosen_heads,
        "source_tokens": source_entries,
        "tokens": target_entries,
        "cross_attentions": [{"layer": l} | encode_dense(cross[l][head_index]) for l in chosen_layers],
        "attentions": [{"layer": l} | encode_dense(self_[l][head_index]) for l in chosen_layers],
        "encoder_attentions": [
            {"layer": l} | encode_dense(encoder[l][head_index]) for l in chosen_layers if l < encoder_layers
        ],
        "rollout": {
            "row": position,
            "matrix": encode_dense(decoder_rollout.clamp(0, 1)),
            "source": [round(float(v), 6) for v in source_row],
        },
        "limits": {"max_tokens": cap, "max_cells": max_cells},
        "cells": cells,
        "gradient": None,
    }
    if gradient:
        zeros = [torch.zeros_like(a) for a in cross + self_]
        grads = [z if g is None else g[0].float().cpu() for g, z in zip(grads, zeros, strict=True)]
        cross_maps = [gradient_times_attention(a, g) for a, g in zip(cross, grads[: len(cross)], strict=True)]
        self_maps = [gradient_times_attention(a, g) for a, g in zip(self_, grads[len(cross) :], strict=True)]
        payload["gradient"] = {
            "target": {
                "position": position,
                "explains": "next target token",
                "token_id": wanted,
                "token": tokenizer.id_to_token(wanted),
                "log_prob": round(log_prob, 6),
            },  # fmt: skip
            "cross_maps": [{"layer": l} | encode_dense(cross_maps[l]) for l in chosen_layers],
            "maps": [{"layer": l} | encode_dense(self_maps[l]) for l in chosen_layers],
            "source_relevance": [round(float(v), 6) for v in sum(m[position] for m in cross_maps)],
            "relevance": [round(float(v), 6) for v in sum(m[position] for m in self_maps)],
        }
    return payload
