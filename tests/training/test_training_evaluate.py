"""`atencion evaluate` prints the model's number beside the n-gram baseline's, and --save writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atencion.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_decoder_perplexity_beside_the_trigram(
    trained: dict[str, Path], spanish_corpus: Path, capsys
) -> None:
    ckpt = trained["decoder"] / "checkpoint"
    code, out, _ = run_cli(["evaluate", str(ckpt), "--corpus", str(spanish_corpus)], capsys)
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("perplexity"))
    model, baseline = map(float, line.split()[1:])
    assert 1.0 < model < 300 and 1.0 < baseline < 300  # both real numbers, below uniform over the vocabulary
    assert "held-out validation" in out
    code, out, _ = run_cli(
        ["evaluate", str(ckpt), "--corpus", str(spanish_corpus), "--json", "--save"], capsys
    )
    result = json.loads(out)
    info = json.loads((ckpt / "training.json").read_text())
    assert result["documents"] == info["split"]["validation"]  # only the held-out documents
    assert result["baseline"]["tokens"] == result["metrics"]["tokens"]  # the same targets scored
    saved = json.loads((ckpt / "evaluation.json").read_text())
    assert saved["metrics"]["perplexity"] == pytest.approx(model, abs=0.006)  # the table rounds to 0.01
    assert saved["baseline"]["perplexity"] == pytest.approx(baseline, abs=0.006)


def test_encoder_accuracy_beside_the_trigram(
    trained: dict[str, Path], spanish_corpus: Path, tmp_path: Path, capsys
) -> None:
    ckpt = trained["encoder"] / "checkpoint"
    other = tmp_path / "otro"  # a different corpus: every document is scored
    other.mkdir()
    (other / "carta.txt").write_text("El niño come pan en la casa.\n" * 40, encoding="utf-8")
    code, out, _ = run_cli(["evaluate", str(ckpt), "--corpus", str(other), "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["documents"] == ["carta.txt"] and not result["held_out"]
    m, b = result["metrics"], result["baseline"]
    assert 0.0 <= m["top1"] <= m["top5"] <= 1.0 and m["pseudo_perplexity"] > 1.0
    assert 0.0 <= b["top1"] <= 1.0 and b["masked"] == m["masked"]  # the trigram fills the same positions
    code, out, _ = run_cli(["evaluate", str(ckpt), "--corpus", str(spanish_corpus)], capsys)
    top1 = next(l for l in out.splitlines() if l.startswith("masked-LM top-1"))
    assert len([w for w in top1.split() if w.endswith("%")]) == 2  # model and baseline


def test_evaluate_errors_are_clear(tmp_path: Path, spanish_corpus: Path, capsys) -> None:
    code, _, err = run_cli(["evaluate", str(tmp_path / "none"), "--corpus", str(spanish_corpus)], capsys)
    assert code == 1 and "not a checkpoint directory" in err and "Traceback" not in err
