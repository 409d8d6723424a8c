"""The layers × heads grid of attention heatmaps as a PNG (matplotlib, Agg), drawn from an ``analyse`` payload.

The same picture as the viewer's grid, for the CLI and the README: one heatmap per (layer, head), queries
down, keys across; cells the layout forbids (sparse pattern, causality) are drawn in a flat grey, so a
structural zero is told apart from a learned near-zero (the darkest colour of the map).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from service.encoding import decode, decode_bits  # noqa: E402

CELL_INCHES = 2.0  # one heatmap
MARGIN_INCHES = (1.2, 0.5, 0.5)  # left (row labels), top (title) and bottom (key labels) room
DPI = 100
FORBIDDEN = "#c8c8c8"  # cells outside the layout (the viewer's grey)
LABELLED_TOKENS = 40  # token labels on the axes up to this many tokens


def _inches(n_layers: int, n_heads: int) -> tuple[float, float]:
    width = MARGIN_INCHES[0] + CELL_INCHES * n_heads
    height = MARGIN_INCHES[1] + CELL_INCHES * n_layers + MARGIN_INCHES[2]
    return width, height


def picture_size(n_layers: int, n_heads: int, dpi: int = DPI) -> tuple[int, int]:
    """The PNG's (width, height) in pixels for a grid of ``n_layers`` rows and ``n_heads`` columns."""
    width, height = _inches(n_layers, n_heads)
    return int(round(width * dpi, 6)), int(round(height * dpi, 6))  # matplotlib truncates to whole pixels


def layer_maps(payload: dict[str, Any]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(layer, probabilities (H', n, n), allowed (H', n, n)) for each layer of the payload."""
    layouts = {entry["layer"]: entry for entry in payload["layouts"]}
    maps = []
    for block in payload["attentions"]:
        mask_block = layouts[block["layer"]]["mask"]
        maps.append((block["layer"], decode(block, mask_block), decode_bits(mask_block)))
    return maps


def head_maximum(probs: np.ndarray, allowed: np.ndarray) -> float:
    """The per-head colour scale's top: the largest weight in rows with more than one allowed key (a causal
    head's first row is always 1 and would wash out the rest)."""
    rows = allowed.sum(-1) > 1  # (n,)
    top = float(probs[rows].max()) if rows.any() else float(probs.max())
    return top if top > 0 else 1.0


def token_label(token: dict[str, Any]) -> str:
    """A token's label: its surface text, ␣ for whitespace, the vocabulary string for special tokens."""
    if token["text"].strip():
        return token["text"]
    return token["token"] if token["special"] else shown(token["text"])


def shown(text: str) -> str:
    """Text with its whitespace made visible where nothing else is: ↵ per line break, ⇥ per tab, ␣ per space."""
    if text.strip():
        return text
    return "".join({"\n": "↵", "\t": "⇥", "\r": ""}.get(c, "␣") for c in text) or "␣"


def draw_grid(
    payload: dict[str, Any], out: str | Path, *, scale: str = "head", dpi: int = DPI
) -> tuple[int, int]:
    """Write the grid PNG to ``out``; ``scale`` is ``head`` (each map to its own maximum) or ``absolute``
    (0–1 for all). Returns the picture's size in pixels."""
    if scale not in ("head", "absolute"):
        raise ValueError(f"scale: must be 'head' or 'absolute', got {scale!r}")
    maps = layer_maps(payload)
    heads = payload["heads"]
    labels = [token_label(token) for token in payload["tokens"]]
    n = len(labels)
    size = picture_size(len(maps), len(heads), dpi)
    width, height = _inches(len(maps), len(heads))
    figure = plt.figure(figsize=(width, height), dpi=dpi)
    colours = plt.get_cmap("viridis").with_extremes(bad=FORBIDDEN)
    title = payload["text"] if len(payload["text"]) <= 80 else payload["text"][:77] + "…"
    figure.text(
        0.5,
        1 - 0.35 / height,
        f"{payload['kind']} · {payload['pattern']} · «{title}»",
        ha="center",
        va="center",
        fontsize=10,
    )
    for row, (layer, probs, allowed) in enumerate(maps):
        for column, head in enumerate(heads):
            left = (MARGIN_INCHES[0] + column * CELL_INCHES + 0.1) / width
            bottom = 1 - (MARGIN_INCHES[1] + (row + 1) * CELL_INCHES - 0.15) / height
            axes = figure.add_axes(
                (left, bottom, (CELL_INCHES - 0.25) / width, (CELL_INCHES - 0.35) / height)
            )
            shown = np.ma.masked_array(probs[column], mask=~allowed[column])
            top = 1.0 if scale == "absolute" else head_maximum(probs[column], allowed[column])
            axes.imshow(shown, cmap=colours, vmin=0.0, vmax=top, interpolation="nearest", aspect="auto")
            axes.set_title(f"L{layer} H{head}", fontsize=8, pad=2)
            _ticks(axes, labels if n <= LABELLED_TOKENS else None, row == len(maps) - 1, column == 0)
        figure.text(
            0.15 / width,
            1 - (MARGIN_INCHES[1] + (row + 0.5) * CELL_INCHES) / height,
            f"layer {layer}",
            rotation=90,
            va="center",
            fontsize=9,
        )
    figure.savefig(out, dpi=dpi, format="png")
    plt.close(figure)
    return size


def _ticks(axes: Any, labels: list[str] | None, bottom: bool, left: bool) -> None:
    if labels is None:
        axes.set_xticks([])
        axes.set_yticks([])
        return
    positions = range(len(labels))
    size = max(3.5, min(6.0, 130 / len(labels)))  # points: the labels of one map must not overlap
    axes.set_xticks(positions, labels if bottom else [], rotation=90, fontsize=size)
    axes.set_yticks(positions, labels if left else [], fontsize=size)
    axes.tick_params(length=0, pad=1)


def draw_cross_grid(payload: dict[str, Any], out: str | Path, *, dpi: int = DPI) -> tuple[int, int]:
    """A translator's cross-attention (``service.translation_inspection``) as a layers × heads grid: target
    tokens down, source tokens across, each map to its own maximum. Returns the picture's size in pixels."""
    heads = payload["heads"]
    blocks = payload["cross_attentions"]
    source = [token_label(t) for t in payload["source_tokens"]]
    target = [token_label(t) for t in payload["tokens"]]
    size = picture_size(len(blocks), len(heads), dpi)
    width, height = _inches(len(blocks), len(heads))
    figure = plt.figure(figsize=(width, height), dpi=dpi)
    title = f"{payload['text']} → {payload['translation']}"
    title = title if len(title) <= 90 else title[:87] + "…"
    figure.text(0.5, 1 - 0.35 / height, f"cross-attention · «{title}»", ha="center", va="center", fontsize=10)
    labelled = max(len(source), len(target)) <= LABELLED_TOKENS
    for row, block in enumerate(blocks):
        maps = decode(block)  # (H', T, S)
        for column, head in enumerate(heads):
            left = (MARGIN_INCHES[0] + column * CELL_INCHES + 0.1) / width
            bottom = 1 - (MARGIN_INCHES[1] + (row + 1) * CELL_INCHES - 0.15) / height
            axes = figure.add_axes(
                (left, bottom, (CELL_INCHES - 0.25) / width, (CELL_INCHES - 0.35) / height)
            )
            top = float(maps[column].max()) or 1.0
            axes.imshow(
                maps[column], cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest", aspect="auto"
            )
            axes.set_title(f"L{block['layer']} H{head}", fontsize=8, pad=2)
            if labelled:
                fontsize = max(3.5, min(6.0, 130 / max(len(source), len(target))))
                axes.set_xticks(
                    range(len(source)),
                    source if row == len(blocks) - 1 else [],
                    rotation=90,
                    fontsize=fontsize,
                )
                axes.set_yticks(range(len(target)), target if column == 0 else [], fontsize=fontsize)
                axes.tick_params(length=0, pad=1)
            else:
                axes.set_xticks([])
                axes.set_yticks([])
        figure.text(0.15 / width, 1 - (MARGIN_INCHES[1] + (row + 0.5) * CELL_INCHES) / height,
                    f"layer {block['layer']}", rotation=90, va="center", fontsize=9)  # fmt: skip
    figure.savefig(out, dpi=dpi, format="png")
    plt.close(figure)
    return size
