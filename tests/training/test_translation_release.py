"""A translator run released into a shipped folder: files, records, fixed samples, a card whose numbers are the
records', and sums."""

from __future__ import annotations

import dataclasses
import json

import pytest
from translation_helpers import TINY, synthetic_rows

import training.seq2seq as seq2seq
from atencion.cli import main
from modeling.checkpoint import load_checkpoint
from training.seq2seq import load_translation_recipe, train_translator
from training.translation_release import EXAMPLES, release

pytest.importorskip("sacrebleu")


def test_release_writes_a_complete_documented_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(seq2seq, "load_tsunkua", synthetic_rows)
    train_translator(load_translation_recipe("translator-es-oto", TINY), tmp_path / "run")
    out = tmp_path / "checkpoints" / "translator-es-oto"
    with pytest.raises(SystemExit) as done:  # `atencion release` knows a translator's run from its config
        main(["release", str(tmp_path / "run"), str(out)])
    assert done.value.code == 0 and capsys.readouterr().out.strip().endswith(str(out))
    with pytest.raises(SystemExit) as done:
        main(["release", str(tmp_path / "run"), str(out), "--corpus", str(tmp_path)])
    assert done.value.code == 2 and "--corpus" in capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert names == {
        "config.json", "model.safetensors", "tokenizer.json", "training.json", "evaluation.json", "samples.json",
        "README.md",
    }  # fmt: skip
    load_checkpoint(out)  # verified against the SHA256SUMS written beside it
    sums = (out.parent / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(names) and all(
        line.split("  ")[1].startswith("translator-es-oto/") for line in sums
    )
    samples = json.loads((out / "samples.json").read_text())
    assert [s["source"] for s in samples[: len(EXAMPLES)]] == list(EXAMPLES)
    assert all("reference" in s for s in samples[len(EXAMPLES) :]) and len(samples) == len(EXAMPLES) + 3
    card = (out / "README.md").read_text()
    evaluation = json.loads((out / "evaluation.json").read_text())
    overall = evaluation["model"]["overall"]
    assert f"chrF {overall['chrf']:.1f}" in card and "MPL-2.0" in card and "Toluca" in card
    assert "atencion train translator-es-oto --out runs/translator-es-oto" in card
    assert not any(p in card for p in ("/tmp/", str(tmp_path)))


def test_a_continued_run_is_released_with_both_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(seq2seq, "load_tsunkua", synthetic_rows)
    first = train_translator(load_translation_recipe("translator-es-oto", TINY), tmp_path / "first")
    second = [*TINY, f"training.init_from={first}", "data.lexicon=true", "training.steps=30"]
    recipe = load_translation_recipe("translator-es-oto", second)
    train_translator(
        recipe,
        tmp_path / "second",
        command="atencion train translator-es-oto --out x --set " + " ".join(second),
    )
    record = json.loads((tmp_path / "second" / "checkpoint" / "training.json").read_text())
    assert record["lexicon_pairs"] > 0  # the synthetic corpus is word for word: its dictionary is not empty
    out = release(tmp_path / "second", tmp_path / "checkpoints" / "translator-es-oto")
    card = (out / "README.md").read_text()
    released = json.loads((out / "training.json").read_text())
    stage1, stage2 = released["commands"]
    assert stage1.startswith("atencion train translator-es-oto --out runs/translator-es-oto-stage1 --set")
    assert stage1.endswith(f"training.steps={released['stages'][0]['step']}")
    assert (
        "training.init_from=runs/translator-es-oto-stage1/checkpoint" in stage2
        and "data.lexicon=true" in stage2
    )
    assert stage1 in card and stage2 in card and "Two stages" in card
    assert str(tmp_path) not in card + json.dumps(released)


def test_a_run_stopped_by_hand_is_released_with_the_command_that_runs_that_far(tmp_path, monkeypatch):
    monkeypatch.setattr(seq2seq, "load_tsunkua", synthetic_rows)
    sets = [*TINY, "training.steps=200", "training.cooldown=50", "training.average_last=3"]
    recipe = load_translation_recipe("translator-es-oto", sets)
    stopped = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, steps=60))
    command = "atencion train translator-es-oto --out x --set " + " ".join(sets)
    train_translator(stopped, tmp_path / "run", command=command)  # the first 60 steps of the 200-step run
    record_path = tmp_path / "run" / "checkpoint" / "training.json"
    record = json.loads(record_path.read_text())
    record["steps"] = record["recipe"]["training"]["steps"] = 200  # what the stopped run had been asked for
    record_path.write_text(json.dumps(record))
    out = release(tmp_path / "run", tmp_path / "checkpoints" / "translator-es-oto")
    released = json.loads((out / "training.json").read_text())
    assert released["stopped_at"] == 60 and released["recipe"]["training"]["cooldown"] == 0
    assert released["command"].endswith("training.steps=60 training.cooldown=0 training.average_last=0")
    assert "stopped by hand at step 60" in (out / "README.md").read_text()
    record["steps"] = record["recipe"]["training"]["steps"] = 100  # step 60 falls inside a 50-step cooldown
    record_path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="inside its cooldown"):
        release(tmp_path / "run", tmp_path / "checkpoints" / "again")
