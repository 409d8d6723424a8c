"""The shipped translator ``checkpoints/translator-es-oto``: complete, verified and small; its card says the
numbers of its own records; it beats both baselines on chrF overall; and the default server translates with it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from modeling.beam_search import translate
from modeling.checkpoint import load_checkpoint

FOLDER = Path(__file__).resolve().parents[2] / "checkpoints" / "translator-es-oto"
FILES = {"config.json", "model.safetensors", "tokenizer.json", "training.json", "evaluation.json"}
FILES |= {"samples.json", "README.md"}


def record(file: str) -> dict:
    return json.loads((FOLDER / file).read_text(encoding="utf-8"))


def test_complete_small_and_loads_verified() -> None:
    assert {p.name for p in FOLDER.iterdir()} == FILES
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 25 * 1000 * 1000
    assert load_checkpoint(FOLDER).config.kind == "translator"  # checks SHA256SUMS


def test_the_card_says_the_records_numbers_and_beats_both_baselines() -> None:
    evaluation = record("evaluation.json")
    card = (FOLDER / "README.md").read_text(encoding="utf-8")
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == "atencion"
    chrf = {"model": evaluation["model"]["overall"]["chrf"]}
    chrf |= {name: evaluation["baselines"][name]["overall"]["chrf"] for name in ("copy", "dictionary")}
    for value in chrf.values():
        assert f"{value:.1f}" in card
    assert chrf["model"] > chrf["copy"] and chrf["model"] > chrf["dictionary"], chrf
    assert "MPL-2.0" in card and "Toluca" in card
    assert "atencion train translator-es-oto --out runs/translator-es-oto" in card
    samples = record("samples.json")
    assert samples and all(s["translation"].strip() for s in samples)


def test_served_by_default_and_translates_as_the_model_does(start_server) -> None:
    server = start_server()  # no model flags: the shipped checkpoints
    texts = ["El perro come en la casa.", "Los españoles llegaron a la ciudad."]
    answer = server.post(
        "/translate", {"inputs": texts, "parameters": {"num_beams": 1, "max_new_tokens": 32}}
    )
    assert answer.status_code == 200, answer.text
    checkpoint = load_checkpoint(FOLDER)
    with torch.inference_mode():
        expected = translate(checkpoint.model.eval(), checkpoint.tokenizer, texts, max_new_tokens=32)
    assert [item["translation_text"] for item in answer.json()] == expected
