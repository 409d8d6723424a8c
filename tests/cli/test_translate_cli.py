"""`atencion translate` and `atencion inspect` on a translator: texts out, a cross-attention PNG, clear errors."""

import json

import numpy as np
import torch
from PIL import Image

from atencion.cli import main
from modeling.beam_search import translate
from modeling.checkpoint import load_checkpoint
from service.picture import picture_size


def _run(capsys, *argv):
    try:
        main(list(argv))
    except SystemExit as done:
        return done.code, capsys.readouterr()
    raise AssertionError("the CLI did not exit")


def test_translate_prints_one_line_per_text_as_the_model_does(tiny_checkpoints, capsys):
    path = str(tiny_checkpoints / "translator")
    texts = ["El perro come.", "Hoy llueve en el jardín."]
    code, out = _run(capsys, "translate", path, *texts, "--num-beams", "2", "--max-new-tokens", "10")
    assert code == 0, out.err
    checkpoint = load_checkpoint(path)
    with torch.inference_mode():
        expected = translate(
            checkpoint.model.eval(), checkpoint.tokenizer, texts, num_beams=2, max_new_tokens=10
        )
    assert out.out == "".join(t + "\n" for t in expected)
    code, out = _run(
        capsys, "translate", path, texts[0], "--json", "--num-beams", "1", "--max-new-tokens", "10"
    )
    assert code == 0 and json.loads(out.out)[0].keys() == {"translation_text"}


def test_translate_errors(tiny_checkpoints, capsys):
    code, out = _run(capsys, "translate", str(tiny_checkpoints / "decoder-dense"), "hola")
    assert code == 2 and "needs a translator" in out.err
    code, out = _run(capsys, "translate", str(tiny_checkpoints / "translator"), "hola", "--num-beams", "0")
    assert code == 2 and "--num-beams" in out.err
    code, out = _run(capsys, "translate", str(tiny_checkpoints / "translator"), " ")
    assert code == 2 and "empty" in out.err


def test_inspect_draws_the_cross_attention(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "cross.png"
    code, printed = _run(
        capsys, "inspect", "La niña lee un libro.", "--model", str(tiny_checkpoints / "translator"),
        "--out", str(out), "--heads", "0",
    )  # fmt: skip
    assert code == 0, printed.err
    image = np.asarray(Image.open(out).convert("RGB"))
    assert (image.shape[1], image.shape[0]) == picture_size(2, 1)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50, "the picture is (nearly) blank"
    code, printed = _run(
        capsys, "inspect", "hola", "--model", str(tiny_checkpoints / "decoder-dense"), "--out", str(out),
        "--translation", "x",
    )  # fmt: skip
    assert code == 2 and "translator" in printed.err
