"""Releasing a run: clean record, works from the manifest, the fixed examples, model card, SHA256SUMS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modeling.checkpoint import CheckpointError, load_checkpoint
from training.release import FILL_MASK_EXAMPLES, GENERATION_EXAMPLES, clean_command, main


def test_clean_command_names_no_machine_path_and_records_the_steps_reached() -> None:
    command = (
        "atencion train decoder-dense --corpus /data/corpus/es --out /scratch/runs/dd --resume "
        "--set training.threads=1 training.steps=1500"
    )
    assert clean_command(command, "decoder-dense", 1000, 1500) == (
        "atencion train decoder-dense --corpus CORPUS --out runs/decoder-dense --set training.threads=1 "
        "training.steps=1000"
    )
    plain = "atencion train encoder-dense --corpus ../c --out r"
    assert clean_command(plain, "e", 750, 2000) == (
        "atencion train encoder-dense --corpus CORPUS --out runs/e --set training.steps=750"
    )
    assert (
        clean_command(plain, "e", 2000, 2000) == "atencion train encoder-dense --corpus CORPUS --out runs/e"
    )
    finished = "atencion train d --corpus c --out r --resume --set training.steps=1500 training.cooldown=250"
    assert clean_command(finished, "d", 1500, 1500) == (
        "atencion train d --corpus CORPUS --out runs/d --set training.steps=1500 training.cooldown=250"
    )


@pytest.fixture
def corpus_with_manifest(tmp_path: Path, spanish_corpus: Path) -> Path:
    folder = tmp_path / "corpus"
    shutil.copytree(spanish_corpus, folder)
    rows = ["file\ttitle\tauthor\tdeath_year\tgutenberg_id"]
    rows += [f"obra_{i}.txt\tObra número {i}\tAutora {i}\t1900\t{1000 + i}" for i in range(6)]
    (folder / "MANIFEST.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_release_makes_a_verified_checkpoint_with_card_works_and_examples(
    kind: str, trained: dict[str, Path], corpus_with_manifest: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained[kind], run)
    record_path = run / "checkpoint" / "training.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record["total_steps"] = record["step"] + 60  # as if stopped at a checkpoint before the end
    record["command"] = f"atencion train x --corpus {corpus_with_manifest} --out {run}"
    record_path.write_text(json.dumps(record), encoding="utf-8")
    evaluation = {"checkpoint": str(run / "checkpoint"), "corpus": str(corpus_with_manifest), "metrics": {}}
    (run / "checkpoint" / "evaluation.json").write_text(json.dumps(evaluation), encoding="utf-8")
    out = tmp_path / "checkpoints" / f"{kind}-tiny"

    assert main([str(run), str(out), "--corpus", str(corpus_with_manifest)]) == 0

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "samples.json"} <= names
    released = json.loads((out / "training.json").read_text(encoding="utf-8"))
    assert "run_dir" not in released and released["corpus"] == "CORPUS"
    assert released["total_steps"] == released["step"] and released["complete"] is True
    assert released["command"].endswith(f"--set training.steps={released['step']}")
    rate = released["median_tokens_per_s"]
    assert rate > 0 and released["compute_time_s"] == round(released["tokens_seen"] / rate, 1)
    split = {w["file"]: w["split"] for w in released["works"]}
    assert len(split) == 6 and set(split.values()) == {"train", "validation"}
    samples = json.loads((out / "samples.json").read_text(encoding="utf-8"))
    examples = FILL_MASK_EXAMPLES if kind == "encoder" else GENERATION_EXAMPLES
    assert [s.get("input", s.get("prompt")) for s in samples] == list(examples)
    assert all(s.get("output", s.get("completion")) for s in samples)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Obra número 3" in card and "https://www.gutenberg.org/ebooks/1003" in card
    assert "--corpus CORPUS" in card and str(tmp_path) not in card
    assert "stopped at step" in card and "compute time (tokens seen / median tokens/s)" in card

    sums = (out.parent / "SHA256SUMS").read_text(encoding="utf-8")
    assert f"  {out.name}/model.safetensors" in sums
    load_checkpoint(out)  # verifies the sums
    assert main([str(run), str(out), "--corpus", str(corpus_with_manifest)]) == 0  # again, over itself
    load_checkpoint(out)
    weights = bytearray((out / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (out / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint(out)


def test_release_of_a_folder_without_a_run_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert "missing config.json" in capsys.readouterr().err


def test_a_run_stopped_before_its_cooldown_ended_is_not_recorded_as_a_shorter_run() -> None:
    from training.release import clean_record

    record = {"step": 500, "total_steps": 1000, "recipe": {"training": {"cooldown": 200, "steps": 1000}}}
    with pytest.raises(ValueError, match="with a cooldown"):
        clean_record(record, "x", {})
    record["recipe"]["training"]["cooldown"] = 0
    assert clean_record(record, "x", {})["recipe"]["training"]["steps"] == 500


def release_command(entry: str, argv: list[str]) -> int:
    """``python -m training.release`` (its ``main``) or ``atencion release``: one command, two entries."""
    if entry == "module":
        return main(argv)
    from atencion.cli import main as atencion

    with pytest.raises(SystemExit) as done:
        atencion(["release", *argv])
    return done.value.code


@pytest.mark.parametrize("entry", ["module", "atencion"])
def test_release_with_own_examples_and_bad_example_files(
    entry: str, trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained["decoder"], run)
    own = tmp_path / "prompts.json"
    own.write_text(json.dumps(["Había una vez"]), encoding="utf-8")
    assert release_command(entry, [str(run), str(tmp_path / "out" / "d"), "--examples", str(own)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "d")
    samples = json.loads((tmp_path / "out" / "d" / "samples.json").read_text(encoding="utf-8"))
    assert [s["prompt"] for s in samples] == ["Había una vez"]
    for content in ("{not json", json.dumps({"a": 1}), json.dumps([])):
        own.write_text(content, encoding="utf-8")
        assert release_command(entry, [str(run), str(tmp_path / "out" / "e"), "--examples", str(own)]) == 1
        assert "--examples:" in capsys.readouterr().err
