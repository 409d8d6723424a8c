"""The teaching model ``checkpoints/taller``: complete and verified, its recipe as the workshop builds it, served
by default, and its first head sees only its own token — read from ``/attention`` over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modeling.checkpoint import load_checkpoint
from service.encoding import decode, decode_bits
from training.recipe import load_recipe

FOLDER = Path(__file__).resolve().parents[2] / "checkpoints" / "taller"
SENTENCE = "el perro come pan en la cocina."


def test_taller_is_small_verified_and_built_as_the_workshop_builds_it() -> None:
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) < 1_000_000
    config = load_checkpoint(FOLDER).config  # checks SHA256SUMS
    attention = config.attention
    assert (attention.pattern, attention.window, attention.head_windows) == ("local", 1, "workshop")
    assert config.position == "sinusoidal" and attention.score in ("additive", "general")
    assert load_recipe("taller").model.attention == attention
    card = (FOLDER / "README.md").read_text(encoding="utf-8")
    assert "atencion train taller --corpus CORPUS" in card and "training/corpora/taller" in card


def test_served_by_default_with_one_band_per_head_over_http(start_server) -> None:
    server = start_server()  # no --encoder/--decoder: the shipped checkpoints
    names = [m["name"] for m in server.get("/info").json()["models"]]
    assert "taller" in names and names[0] != "taller"  # the defaults stay the big models
    answer = server.post(
        "/attention", {"inputs": SENTENCE, "model": "taller", "parameters": {"encoding": "dense"}}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    n = body["n_tokens"]
    assert [t["text"] for t in body["tokens"]][1:4] == ["el", " perro", " come"]
    allowed = decode_bits(body["layouts"][0]["mask"]).astype(bool)  # (H, n, n)
    probs = decode(body["attentions"][0])  # (H, n, n)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    for h in range(body["n_heads"]):  # head h: the token and the h before it, a band h + 1 wide
        assert np.array_equal(allowed[h], (j <= i) & (j >= i - h)), h
        assert np.all(probs[h][~allowed[h]] == 0), h
    assert np.allclose(probs[0], np.eye(n), atol=1e-2)  # head 0: the token alone, all its weight on itself
    assert body["statistics"][0]["self"] == 1.0
