"""Fill-mask: a masked-LM's guesses for each mask token, in the Hugging Face pipeline's shape.

One implementation for the service (``POST /fill-mask``), the CLI (``atencion fill-mask``) and the release's
first-tried examples. Scores follow the pipeline: softmax over the whole vocabulary at the mask position, then
the ``top_k`` best (or the best of the given ``targets``). Each candidate is ``{score, token, token_str,
sequence}``:

- ``token_str`` is the candidate decoded alone, special tokens kept (as the pipeline's ``decode([token])``), so a
  special token shows as itself (``[SEP]``) rather than as an empty string;
- ``sequence`` is the text with that one mask filled in, special tokens (the other masks too) left out.

Padded batches run the encoder once and the MLM head only at the mask positions: ``(M, V)``, not ``(B, T, V)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from torch import Tensor

from modeling.config import EncoderConfig


class FillMaskError(ValueError):
    """Input fill-mask cannot run: ``kind`` is ``too_long``, ``no_mask`` or ``out_of_range``; the message says
    what is wrong (callers put their own field name in front)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class MaskedText:
    """One text, tokenized: its ids and the positions of its mask tokens."""

    ids: list[int]
    masks: list[int]


def encode(
    tokenizer: Tokenizer, config: EncoderConfig, text: str, max_tokens: int | None = None
) -> MaskedText:
    """Tokenize ``text``; at most ``max_tokens`` (and the model's ``max_len``) tokens, at least one mask."""
    cap = config.max_len if max_tokens is None else min(max_tokens, config.max_len)
    ids = tokenizer.encode(text).ids
    if len(ids) > cap:
        raise FillMaskError(
            "too_long", f"{len(ids)} tokens, more than the {cap} allowed: send a shorter text"
        )
    masks = [i for i, token in enumerate(ids) if token == config.mask_token_id]
    if not masks:
        mask = tokenizer.id_to_token(config.mask_token_id)
        raise FillMaskError(
            "no_mask", f"no {mask} token in {text[:60]!r}; put {mask} where the model should guess a word"
        )
    return MaskedText(ids, masks)


def target_ids(tokenizer: Tokenizer, words: list[str]) -> list[int]:
    """Each target word's token, in order, without repeats; a word outside the vocabulary counts as its first
    piece, as in the Hugging Face pipeline."""
    targets: list[int] = []
    for word in words:
        token = tokenizer.token_to_id(word)
        if token is None:
            pieces = tokenizer.encode(word, add_special_tokens=False).ids
            if not pieces:
                raise FillMaskError("out_of_range", f"{word!r} gives no token")
            token = pieces[0]
        if token not in targets:
            targets.append(token)
    return targets


@torch.inference_mode()
def mask_probabilities(
    model: torch.nn.Module, texts: list[MaskedText], device: str | torch.device = "cpu"
) -> Tensor:
    """One padded forward over ``texts``; the probabilities ``(M, V)`` (float32, on the CPU) at every mask,
    text by text and mask by mask in order."""
    pad = model.config.pad_token_id
    longest = max(len(t.ids) for t in texts)
    ids = torch.full((len(texts), longest), pad, dtype=torch.long)  # (B, T)
    real = torch.zeros(len(texts), longest, dtype=torch.bool)  # (B, T)
    for row, text in enumerate(texts):
        ids[row, : len(text.ids)] = torch.tensor(text.ids)
        real[row, : len(text.ids)] = True
    hidden, _ = model.hidden_states(ids.to(device), pad_mask=real.to(device))  # (B, T, d)
    rows, columns = torch.tensor([(row, m) for row, t in enumerate(texts) for m in t.masks]).T  # (M,), (M,)
    at_masks = hidden[rows.to(hidden.device), columns.to(hidden.device)]  # (M, d)
    return model.logits(at_masks).float().softmax(-1).cpu()  # (M, V)


def candidates(
    probs: Tensor,
    ids: list[int],
    position: int,
    tokenizer: Tokenizer,
    top_k: int,
    targets: list[int] | None = None,
) -> list[dict]:
    """The ``top_k`` tokens (of ``targets`` when given) at one mask, best first, in the pipeline's fields."""
    if targets is not None:
        pool = torch.tensor(targets)
        scores, order = probs[pool].topk(min(top_k, len(targets)))
        tokens = pool[order]
    else:
        scores, tokens = probs.topk(min(top_k, probs.shape[-1]))
    out = []
    for score, token in zip(scores.tolist(), tokens.tolist(), strict=True):
        filled = list(ids)
        filled[position] = token
        out.append(
            {
                "score": score,
                "token": token,
                "token_str": tokenizer.decode([token], skip_special_tokens=False),
                "sequence": tokenizer.decode(filled, skip_special_tokens=True),
            }
        )
    return out


def fill_mask(
    model: torch.nn.Module, tokenizer: Tokenizer, text: str, top_k: int = 5, targets: list[str] | None = None
) -> list[list[dict]]:
    """Per mask of ``text``, its ``top_k`` candidates, most likely first."""
    if top_k < 1:
        raise FillMaskError("out_of_range", f"top_k must be >= 1, got {top_k}")
    masked = encode(tokenizer, model.config, text)
    pool = None if targets is None else target_ids(tokenizer, targets)
    probs = mask_probabilities(model, [masked], next(model.parameters()).device)  # (M, V)
    return [candidates(probs[m], masked.ids, p, tokenizer, top_k, pool) for m, p in enumerate(masked.masks)]
