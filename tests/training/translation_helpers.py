"""Shared by the translator tests: a tiny recipe and a synthetic word-for-word parallel corpus."""

from __future__ import annotations

import random

WORDS = {"perro": "dängo", "gato": "mixi", "come": "tsi", "duerme": "ähä", "el": "ra", "niño": "bätsi"}
TINY = [
    "model.d_model=32", "model.n_layers=1", "model.encoder_layers=1", "model.n_heads=2", "model.d_ff=64",
    "model.max_len=32", "model.dropout=0.0", "tokenizer.vocab_size=300", "training.batch_size=8",
    "training.steps=60", "training.warmup=10", "training.eval_every=30", "training.noam_factor=2.0",
    "training.batch_tokens=0", "training.cooldown=0", "training.average_last=0", "training.embedding_std=0.0",
    "data.lexicon=false",
]  # fmt: skip


def synthetic_rows(n: int = 120) -> list[list[str]]:
    """Word-for-word 'translations' in three documents, in order."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        source = " ".join(rng.choice(list(WORDS)) for _ in range(rng.randint(2, 5)))
        rows.append([source, " ".join(WORDS[w] for w in source.split()), "v", f"doc{i % 3}", "f", "id"])
    return rows
