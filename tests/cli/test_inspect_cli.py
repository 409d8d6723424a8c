"""`atencion inspect`: a PNG of the layers × heads grid, no server; clear errors for bad arguments."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from atencion.cli import main
from service.picture import picture_size

REPO = Path(__file__).resolve().parents[2]


def _run_in_process(capsys, *argv):
    try:
        main(list(argv))
    except SystemExit as done:
        return done.code, capsys.readouterr()
    raise AssertionError("the CLI did not exit")


def test_inspect_writes_a_png_of_the_expected_size_that_is_not_blank(tiny_checkpoints, tmp_path):
    out = tmp_path / "grid.png"
    text = "¿Dónde está la niña? El gato [MASK] en la casa."
    done = subprocess.run(
        [sys.executable, "-m", "atencion", "inspect", text, "--model", str(tiny_checkpoints / "encoder-sparse"),
         "--out", str(out), "--layers", "0,1", "--heads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 layers × 1 heads" in done.stdout
    image = np.asarray(Image.open(out).convert("RGB"))
    assert (image.shape[1], image.shape[0]) == picture_size(2, 1)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "the picture is (nearly) blank"
    grey = (image == [200, 200, 200]).all(-1).mean()
    assert grey > 0.05, "a sparse layout should leave structurally-zero (grey) cells"


def test_inspect_decoder_all_heads_absolute_scale(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "decoder.png"
    code, captured = _run_in_process(
        capsys, "inspect", "Hola, ¿qué tal?", "--model", str(tiny_checkpoints / "decoder-dense"),
        "--out", str(out), "--scale", "absolute", "--dpi", "150",
    )  # fmt: skip
    assert code == 0, captured.err
    assert Image.open(out).size == picture_size(2, 2, dpi=150)


def test_inspect_bad_arguments_name_the_problem(tiny_checkpoints, tmp_path, capsys):
    model = str(tiny_checkpoints / "encoder-dense")
    cases = [
        (["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "a.png")], "--model"),
        (["--model", model, "--out", str(tmp_path / "a.txt")], "--out"),
        (["--model", model, "--out", str(tmp_path / "no" / "a.png")], "does not exist"),
        (["--model", model, "--out", str(tmp_path / "a.png"), "--layers", "x"], "--layers"),
        (["--model", model, "--out", str(tmp_path / "a.png"), "--heads", "7"], "heads: 7"),
        (["--model", model, "--out", str(tmp_path / "a.png"), "--target", "99"], "target"),
        (["--model", model, "--out", str(tmp_path / "a.png"), "--dpi", "5"], "--dpi"),
        (["--model", str(tmp_path), "--out", str(tmp_path / "a.png")], "config.json"),
    ]
    for arguments, message in cases:
        code, captured = _run_in_process(capsys, "inspect", "El gato duerme.", *arguments)
        assert code == 2, arguments
        assert message in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "a.png").exists()


def test_inspect_finds_a_shipped_name_and_reports_an_unknown_hub_reference(
    tiny_checkpoints, tmp_path, capsys, monkeypatch
):
    import modeling.hub

    shipped = tmp_path / "checkpoints"
    shipped.mkdir()
    (shipped / "decoder-dense").symlink_to(tiny_checkpoints / "decoder-dense")
    monkeypatch.setattr(modeling.hub, "SHIPPED", shipped)
    out = tmp_path / "shipped.png"
    code, captured = _run_in_process(
        capsys, "inspect", "Hola.", "--model", "decoder-dense", "--out", str(out)
    )
    assert code == 0, captured.err
    assert out.stat().st_size > 0

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, captured = _run_in_process(
        capsys, "inspect", "Hola.", "--model", "nadie/nada@v1", "--out", str(tmp_path / "hub.png")
    )
    assert code == 2 and captured.err.startswith("atencion inspect: --model:"), captured.err
