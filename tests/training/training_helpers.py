"""Helpers for the training tests: a tiny Spanish corpus made here and tiny recipes (never ../shared)."""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ["El niño", "La niña", "El señor", "La señora", "Mi abuela", "El pingüino", "Un pájaro", "Ana"]
VERBS = ["come", "mira", "busca", "encuentra", "pinta", "canta", "lleva", "guarda"]
OBJECTS = ["pan", "una canción", "el árbol", "la montaña", "un corazón", "la mañana", "el camión", "agua"]
PLACES = ["en la casa", "junto al río", "por la calle", "en el jardín", "después de la lección"]


def spanish_text(seed: int, sentences: int) -> str:
    """Simple grammatical sentences with ñ, accents, ¿ and ¡: a language a tiny model can learn fast."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        s, v, o, p = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)
        form = rng.random()
        if form < 0.6:
            lines.append(f"{s} {v} {o} {p}.")
        elif form < 0.8:
            lines.append(f"¿Por qué {v.lower()} {s.lower()} {o}?")
        else:
            lines.append(f"¡{s} {v} {o}!")
    return "\n".join(lines) + "\n"


TINY = {
    "encoder": """
[model]
kind = "encoder"
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_len = 32
dropout = 0.1
{attention}
[tokenizer]
kind = "wordpiece"
vocab_size = 300
""",
    "decoder": """
[model]
kind = "decoder"
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_len = 32
dropout = 0.1
position = "rope"
norm = "rms"
feed_forward = "swiglu"
{attention}
[tokenizer]
kind = "bpe"
vocab_size = 300
""",
}

TRAINING = """
[data]
seq_len = 32
validation_fraction = 0.2
seed = 0

[training]
batch_size = 8
steps = {steps}
warmup = 10
noam_factor = 0.5
eval_every = {eval_every}
eval_batches = 2
checkpoint_every = {checkpoint_every}
log_every = 1
threads = 1
precision = "{precision}"
"""


def write_recipe(
    folder: Path,
    kind: str,
    *,
    steps: int = 40,
    eval_every: int = 20,
    checkpoint_every: int = 20,
    precision: str = "auto",
    attention: str = "",
) -> Path:
    path = folder / f"tiny-{kind}.toml"
    text = TINY[kind].format(attention=attention) + TRAINING.format(
        steps=steps, eval_every=eval_every, checkpoint_every=checkpoint_every, precision=precision
    )
    path.write_text(text, encoding="utf-8")
    return path
