"""The checkpoints we ship: complete, verified, small enough, documented, and as good as the card says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from modeling.checkpoint import SUMS, load_checkpoint, sha256

ROOT = Path(__file__).resolve().parents[2] / "checkpoints"
NAMES = ("encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse")
CONTEXT = {"encoder-dense": 256, "encoder-sparse": 256, "decoder-dense": 512, "decoder-sparse": 1024}
FILES = {"config.json", "model.safetensors", "tokenizer.json", "training.json", "evaluation.json"}
FILES |= {"samples.json", "README.md"}
MAX_BYTES = 25 * 1000 * 1000


def record(name: str, file: str) -> dict:
    return json.loads((ROOT / name / file).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NAMES)
def test_each_checkpoint_is_complete_small_and_loads_verified(name: str) -> None:
    folder = ROOT / name
    assert {p.name for p in folder.iterdir()} == FILES
    assert sum(p.stat().st_size for p in folder.iterdir()) <= MAX_BYTES
    checkpoint = load_checkpoint(folder)
    config = checkpoint.config
    assert config.kind == name.split("-")[0]
    assert config.max_len >= CONTEXT[name]
    assert (config.attention.pattern == "dense") == name.endswith("-dense")


def test_sha256sums_cover_every_shipped_file() -> None:
    listed = {}
    for line in (ROOT / SUMS).read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {
        f"{n}/{p.name}": p for n in (*NAMES, "taller", "translator-es-oto") for p in (ROOT / n).iterdir()
    }
    assert set(listed) == set(files)
    assert all(sha256(path) == listed[name] for name, path in files.items())


@pytest.mark.parametrize("name", NAMES)
def test_cards_state_data_split_command_and_evaluation(name: str) -> None:
    card = (ROOT / name / "README.md").read_text(encoding="utf-8")
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["language"] == "es" and metadata["library_name"] == "atencion"
    assert metadata["model-index"][0]["results"]
    training = record(name, "training.json")
    works = training["works"]
    assert len(works) == 55 and all(w["gutenberg_id"] and w["title"] for w in works)
    assert {w["split"] for w in works} == {"train", "validation"}
    assert len(re.findall(r"https://www\.gutenberg\.org/ebooks/\d+", card)) == 55
    assert f"atencion train {name} --corpus CORPUS --out runs/{name}" in card
    for needed in ("## Architecture", "## Training", "## Evaluation", "## Sample outputs", "hardware"):
        assert needed in card
    assert not re.search(r"/(work|home|root|tmp)/", card + json.dumps(training))


def test_evaluations_meet_the_quality_bar() -> None:
    """Decoder perplexity <= 0.75 x the trigram's; encoder top-1 >= 35 %; sparse within 10 % of dense."""
    metric = {n: record(n, "evaluation.json") for n in NAMES}
    for kind in ("encoder", "decoder"):  # "at the same budget": the same steps and tokens
        trained = [record(f"{kind}-{p}", "training.json") for p in ("dense", "sparse")]
        budgets = {(t["step"], t["tokens_seen"]) for t in trained}
        assert len(budgets) == 1, (kind, budgets)
    for name in ("decoder-dense", "decoder-sparse"):
        ours, trigram = metric[name]["metrics"]["perplexity"], metric[name]["baseline"]["perplexity"]
        assert ours <= 0.75 * trigram, (name, ours, trigram)
    for name in ("encoder-dense", "encoder-sparse"):
        assert metric[name]["metrics"]["top1"] >= 0.35, name
    dense, sparse = (metric[f"decoder-{k}"]["metrics"]["perplexity"] for k in ("dense", "sparse"))
    assert sparse <= 1.10 * dense
    dense, sparse = (metric[f"encoder-{k}"]["metrics"]["top1"] for k in ("dense", "sparse"))
    assert sparse >= 0.90 * dense


def test_the_shipped_defaults_serve_fill_mask_and_generation(start_server) -> None:
    server = start_server()  # no --encoder/--decoder: the README's `atencion serve`
    info = server.get("/info").json()
    assert len(info["models"]) == 6, info  # the four models, the teaching model `taller` and the translator
    filled = server.post("/fill-mask", {"inputs": "La casa de mi [MASK] es muy grande."})
    assert filled.status_code == 200, filled.text
    assert len(filled.json()) == 5 and all(c["token_str"].strip() for c in filled.json())
    generated = server.post("/generate", {"inputs": "Era una noche", "parameters": {"max_new_tokens": 8}})
    assert generated.status_code == 200, generated.text
    assert generated.json()["generated_text"].strip()
