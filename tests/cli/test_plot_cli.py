"""`atencion plot …`: each picture is written, and the numbers it prints are the right ones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atencion.cli import main
from atencion.plots import embeddings_data, next_token_data
from modeling.checkpoint import load_checkpoint
from service.picture import shown

TALLER = Path(__file__).resolve().parents[2] / "checkpoints" / "taller"


def _plot(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(["plot", *argv])
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def _picture(path) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB"))
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20, "the picture is (nearly) blank"
    return image


def test_positions_prints_vaswanis_sinusoids(capsys, tmp_path) -> None:
    code, out, err = _plot(
        capsys, "positions", "--max-len", "16", "--d-model", "8", "--out", str(tmp_path / "p.png")
    )
    assert code == 0, err
    want = [math.sin(1), math.cos(1), math.sin(1 / 10000 ** (2 / 8)), math.cos(1 / 10000 ** (2 / 8))]
    assert "PE[1, 0:4] = " + " ".join(f"{v:.4f}" for v in want) in out
    _picture(tmp_path / "p.png")


def test_noam_peaks_at_the_warmup_with_the_formulas_rate(capsys, tmp_path) -> None:
    code, out, err = _plot(
        capsys, "noam", "taller", "--set", "training.warmup=50", "--out", str(tmp_path / "n.png")
    )
    assert code == 0, err
    peak = 32**-0.5 * 50**-0.5  # d_model^-0.5 · warmup^-0.5, the taller recipe's factor 1
    assert f"peak {peak:.3e} at step 50" in out and f"last step 250 {32**-0.5 * 250**-0.5:.3e}" in out
    _picture(tmp_path / "n.png")


def test_next_token_bars_are_the_models_probabilities(capsys, tmp_path) -> None:
    code, out, err = _plot(
        capsys, "next-token", "el perro come", "--top", "5", "--out", str(tmp_path / "t.png")
    )
    assert code == 0, err
    checkpoint = load_checkpoint(TALLER)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    ids = tokenizer.encode("el perro come").ids
    with torch.no_grad():  # a different path than the plot's: one token at a time through the KV cache
        cache = model.new_cache()
        for token in ids:
            logits = model.next_logits(torch.tensor([[token]]), cache)[0]
    probs = torch.softmax(logits.float(), -1)
    best = torch.topk(probs, 5)
    for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True):
        assert f"{p:.4f}  {shown(tokenizer.decode([i]))!r}" in out
    assert "Ġ" not in out and "Ċ" not in out  # text, never the byte-level vocabulary's symbols
    assert best.values[0] > 0.5  # the teaching model has learned what the dog eats
    _picture(tmp_path / "t.png")


def test_next_token_bars_match_the_services_top_tokens(capsys, tmp_path, start_server) -> None:
    """The chart's numbers are the ones /generate reports as TGI's top_n_tokens for its first new token."""
    server = start_server("--decoder", str(TALLER))
    body = {
        "inputs": "la niña mira la",
        "parameters": {"max_new_tokens": 1, "top_n_tokens": 5, "details": True},
    }
    answer = server.post("/generate", body)
    assert answer.status_code == 200, answer.text
    served = answer.json()["details"]["top_tokens"][0]
    data = next_token_data(load_checkpoint(TALLER), "la niña mira la", top=5)
    assert [c[1] for c in data["candidates"]] == [t["id"] for t in served]
    for (text, _, p), token in zip(data["candidates"], served, strict=True):
        assert p == pytest.approx(math.exp(token["logprob"]), abs=1e-5) and text == shown(token["text"])


def test_next_token_shows_a_line_break_as_text() -> None:
    data = next_token_data(load_checkpoint(TALLER), "el perro come pan en la cocina.", top=3)
    assert (
        data["candidates"][0][0] == "↵"
    )  # after a full stop the corpus breaks the line: «Ċ» in the vocabulary


def test_embeddings_are_the_first_two_principal_components(capsys, tmp_path) -> None:
    words = "perro,gato,niña,niño,pan,leche,come,bebe"
    code, out, err = _plot(capsys, "embeddings", "--words", words, "--out", str(tmp_path / "e.png"))
    assert code == 0, err
    data = embeddings_data(load_checkpoint(TALLER), words.split(","))
    assert data["labels"] == words.split(",")
    table = load_checkpoint(TALLER).model.embeddings.tokens.weight.detach().numpy()
    centred = table[data["ids"]] - table[data["ids"]].mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:2].T  # numpy's PCA: the same points up to each axis's sign
    assert np.allclose(np.abs(data["points"].numpy()), np.abs(reference), atol=1e-4)
    assert np.allclose(data["explained"], s[:2] ** 2 / (s**2).sum(), atol=1e-6)
    assert f"{data['points'][0, 0]:+.3f} {data['points'][0, 1]:+.3f}  perro" in out
    _picture(tmp_path / "e.png")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["next-token", "hola", "--model", "encoder-dense"], "encoder"),
        (["next-token", "el perro", "--position", "9"], "position: 9"),
        (["embeddings", "--words", "perro,xyzzyq,gato"], "'xyzzyq' is not a single token"),
        (["noam", "no-such-recipe"], "neither a file nor a shipped recipe"),
        (["positions", "--d-model", "7"], "--d-model"),
    ],
)
def test_bad_arguments_are_clear_errors(capsys, tmp_path, argv, message) -> None:
    code, _, err = _plot(capsys, *argv, "--out", str(tmp_path / "x.png"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "x.png").exists()
