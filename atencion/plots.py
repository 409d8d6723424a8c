"""The pictures the workshop draws, as numbers first and PNGs second (``atencion plot …``).

Each ``*_data`` function returns the numbers a picture shows, so the guide and the tests can check them;
each ``draw_*`` writes the PNG (matplotlib, Agg) and returns its path.

- ``positions_data``: the sinusoidal table PE (positions × dimensions) of Vaswani et al. 2017, eq. 5 (unit 3.1).
- ``noam_data``: a recipe's learning rate per step — Noam (Vaswani 2017, eq. 3) and its optional cooldown (9.2).
- ``next_token_data``: a decoder's next-token probabilities at one position, the most likely first (4.1), from
  ``modeling.logprobs`` — the machinery of ``/generate``'s ``top_n_tokens`` and the OpenAI ``logprobs``.
- ``embeddings_data``: token embeddings projected on their first two principal components (3.1).

Tokens are shown as text (the byte-level BPE's «Ġperro» is « perro», its «Ċ» a line break ↵), never as the
vocabulary's byte symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modeling.logprobs import log_probs, top_alternatives
from service.inspection import token_text
from service.picture import shown


@dataclass(frozen=True)
class Curve:
    steps: list[int]  # 1 … total
    rates: list[float]  # the learning rate of each step
    peak_step: int
    peak_rate: float


def positions_data(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model) sinusoidal table: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(…)."""
    from modeling.positions import SinusoidalPositions

    return SinusoidalPositions(max_len, d_model).table.clone()


def noam_data(recipe: Any) -> Curve:
    """The rate of every step of ``recipe`` (a ``training.recipe.Recipe``), as the training loop sets it."""
    from training.schedule import cooldown, noam

    t, total = recipe.training, recipe.total_steps
    rates = [
        noam(s, d_model=recipe.model.d_model, warmup=t.warmup, factor=t.noam_factor)
        * cooldown(s, total=total, steps=t.cooldown)
        for s in range(1, total + 1)
    ]
    peak = max(range(total), key=rates.__getitem__)
    return Curve(list(range(1, total + 1)), rates, peak + 1, rates[peak])


@torch.no_grad()
def next_token_data(checkpoint: Any, text: str, position: int | None = None, top: int = 10) -> dict[str, Any]:
    """The ``top`` most likely next tokens after token ``position`` (default: the last) of ``text``:
    ``{"tokens": [shown text …], "position", "after", "candidates": [(text, id, probability) …]}``."""
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    if model.config.kind != "decoder":
        raise ValueError("next-token: the model is an encoder; give a decoder (e.g. taller, decoder-dense)")
    ids = tokenizer.encode(text).ids
    if not 1 <= len(ids) <= model.config.max_len:
        raise ValueError(f"text: {len(ids)} tokens; the model takes 1 to {model.config.max_len}")
    position = len(ids) - 1 if position is None else position
    if not 0 <= position < len(ids):
        raise ValueError(f"position: {position} is not a token position (0–{len(ids) - 1})")
    model.eval()
    row = log_probs(model(torch.tensor([ids])).logits[0, position])  # (V,) float32, as /generate's top_tokens
    shown_tokens = [shown(token_text(tokenizer, i)) for i in ids]
    return {
        "tokens": shown_tokens,
        "position": position,
        "after": shown_tokens[position],
        "candidates": [
            (shown(token_text(tokenizer, i)), i, math.exp(lp)) for i, lp in top_alternatives(row, top)
        ],
    }


@torch.no_grad()
def embeddings_data(checkpoint: Any, words: list[str] | None = None, top: int = 40) -> dict[str, Any]:
    """Token embeddings on their first two principal components (of the chosen tokens, centred).

    ``words``: each must be one token of the vocabulary (tried as « word» and as «word»); default: the
    ``top`` whole-word tokens with the lowest ids (a BPE's earliest merges, its most frequent words).
    Returns ``{"labels", "ids", "points" (N, 2), "explained" (share of the variance per component)}``."""
    tokenizer = checkpoint.tokenizer
    table = checkpoint.model.embeddings.tokens.weight.detach().float()  # (V, d)
    if words:
        ids = []
        for word in words:
            found = [tokenizer.encode(form, add_special_tokens=False).ids for form in (" " + word, word)]
            single = next((f for f in found if len(f) == 1), None)
            if single is None:
                raise ValueError(f"words: {word!r} is not a single token of this vocabulary")
            ids.append(single[0])
    else:
        texts = ((i, token_text(tokenizer, i).strip()) for i in range(tokenizer.get_vocab_size()))
        ids = [i for i, t in texts if len(t) >= 2 and t.isalpha()][:top]
    if len(ids) < 3:
        raise ValueError(f"embeddings: need at least 3 tokens to project, got {len(ids)}")
    vectors = table[ids]  # (N, d)
    centred = vectors - vectors.mean(0)  # (N, d)
    _, singular, basis = torch.linalg.svd(centred, full_matrices=False)  # basis: (min(N, d), d)
    points = centred @ basis[:2].T  # (N, 2)
    variance = singular**2
    return {
        "labels": [token_text(tokenizer, i).strip() for i in ids],
        "ids": ids,
        "points": points,
        "explained": (variance[:2] / variance.sum()).tolist(),
    }


# ---- drawing -----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, out: Path) -> Path:
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    _plt().close(figure)
    return out


def draw_positions(table: torch.Tensor, out: Path) -> Path:
    plt = _plt()
    figure, axes = plt.subplots(figsize=(8, 5))
    image = axes.imshow(table.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    axes.set(xlabel="dimension", ylabel="position", title=f"sinusoidal positions, d = {table.shape[1]}")
    figure.colorbar(image, ax=axes)
    return _save(figure, out)


def draw_noam(curve: Curve, out: Path, title: str) -> Path:
    plt = _plt()
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(curve.steps, curve.rates)
    axes.axvline(curve.peak_step, color="grey", linestyle=":")
    axes.set(xlabel="step", ylabel="learning rate", title=title)
    return _save(figure, out)


def draw_next_token(data: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    candidates = data["candidates"]
    figure, axes = plt.subplots(figsize=(8, 0.4 * len(candidates) + 1.2))
    axes.barh([c[0] for c in candidates][::-1], [c[2] for c in candidates][::-1])
    for y, (_, _, p) in enumerate(candidates[::-1]):
        axes.text(p, y, f" {p:.3f}", va="center")
    prefix = "".join(data["tokens"][1 : data["position"] + 1]).strip() or data["tokens"][0]
    axes.set(xlabel="probability", xlim=(0, 1.12), title=f"next token after «{prefix}»")
    return _save(figure, out)


def draw_embeddings(data: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    figure, axes = plt.subplots(figsize=(7, 7))
    points = data["points"].numpy()
    axes.scatter(points[:, 0], points[:, 1], s=12)
    for (x, y), label in zip(points, data["labels"], strict=True):
        axes.annotate(label, (x, y), fontsize=9, xytext=(3, 3), textcoords="offset points")
    first, second = data["explained"]
    axes.set(xlabel=f"component 1 ({first:.0%})", ylabel=f"component 2 ({second:.0%})")
    axes.set_title("token embeddings, first two principal components")
    return _save(figure, out)
