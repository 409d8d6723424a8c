"""The sequence-to-sequence objective and loop: teacher forcing, label smoothing, a tiny run that lowers the
loss and keeps its best checkpoint, the translator recipe and its errors."""

from __future__ import annotations

import json
import random

import pytest
import torch
from translation_helpers import TINY, synthetic_rows

import training.seq2seq as seq2seq
from modeling.checkpoint import load_checkpoint
from modeling.config import TranslatorConfig
from modeling.translator import Translator
from training.recipe import RecipeError
from training.seq2seq import (
    average_weights,
    batches,
    init_embeddings,
    load_translation_recipe,
    make_batch,
    seq2seq_loss,
    train_translator,
)

pytest.importorskip("sacrebleu")


def test_teacher_forcing_batch() -> None:
    config = TranslatorConfig(vocab_size=20, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=16)
    batch = make_batch([[5, 6], [7]], [[8, 9, 10], [11]], config)
    assert batch["source"].tolist() == [[5, 6, 2], [7, 2, 0]]
    assert batch["source_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["target"].tolist() == [[1, 8, 9, 10], [1, 11, 0, 0]]
    assert batch["labels"].tolist() == [[8, 9, 10, 2], [11, 2, -100, -100]]


def test_label_smoothing_raises_the_loss_of_a_confident_model() -> None:
    torch.manual_seed(0)
    config = TranslatorConfig(
        vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16, dropout=0.0
    )
    model = Translator(config).eval()
    batch = make_batch([[5, 6, 7]], [[8, 9]], config)
    with torch.no_grad():
        plain, smoothed = seq2seq_loss(model, batch, 0.0), seq2seq_loss(model, batch, 0.1)
    assert plain.item() > 0 and smoothed.item() != plain.item()


def test_a_tiny_run_lowers_the_loss_and_keeps_the_best_checkpoint(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(seq2seq, "load_tsunkua", synthetic_rows)
    recipe = load_translation_recipe("translator-es-oto", TINY)
    path = train_translator(recipe, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert losses[-1] < 0.6 * losses[0]
    evaluations = [line for line in lines if "validation" in line]
    assert [e["step"] for e in evaluations] == [30, 60]
    loaded = load_checkpoint(path)
    record = json.loads((path / "training.json").read_text())
    assert isinstance(loaded.model, Translator) and record["validation"]["chrf"] == max(
        e["validation"]["chrf"] for e in evaluations
    )
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert set(split["documents"]["test"]) == {"doc0", "doc1", "doc2"}
    assert not list((tmp_path / "run").rglob("*.pt"))


def test_token_batches_cover_every_row_once_within_the_token_budget() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(2, 60) for _ in range(500)]
    out = batches(len(lengths), 64, lengths, random.Random(1), max_tokens=400)
    assert sorted(i for batch in out for i in batch) == list(range(500))
    assert all(len(b) <= 64 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 400) for b in out)
    sizes = {len(b) for b in out}
    assert max(sizes) > 3 * min(sizes)  # short pairs travel in bigger batches than long ones
    fixed = batches(len(lengths), 64, lengths, random.Random(1))
    assert sorted(len(b) for b in fixed)[1:] == [64] * 7  # without a budget: batch_size rows (one remainder)


def test_checkpoint_averaging_is_the_mean_of_the_weights() -> None:
    config = TranslatorConfig(vocab_size=20, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=16)
    torch.manual_seed(0)
    a = Translator(config).state_dict()
    torch.manual_seed(1)
    b = Translator(config).state_dict()
    mean = average_weights([a, b])
    assert set(mean) == set(a)
    for name in a:
        torch.testing.assert_close(mean[name], (a[name] + b[name]) / 2)


def test_a_run_with_token_batches_cooldown_and_averaging(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(seq2seq, "load_tsunkua", synthetic_rows)
    extra = ["training.batch_tokens=120", "training.cooldown=20", "training.average_last=2"]
    path = train_translator(load_translation_recipe("translator-es-oto", TINY + extra), tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["lr"] for line in lines if "lr" in line][-1] < 0.1 * max(
        line["lr"] for line in lines if "lr" in line
    )
    averaged = [line for line in lines if "average_of_steps" in line]
    assert len(averaged) == 1 and averaged[0]["average_of_steps"] == [30, 60]
    record = json.loads((path / "training.json").read_text())
    best = max(line["validation"]["chrf"] for line in lines if "validation" in line)
    assert record["validation"]["chrf"] == best
    assert ("average_of_steps" in record) == (
        averaged[0]["validation"]["chrf"]
        == best
        > max(
            line["validation"]["chrf"]
            for line in lines
            if "validation" in line and "average_of_steps" not in line
        )
    )


def test_embeddings_drawn_at_the_asked_scale_stay_shared_and_tied() -> None:
    config = TranslatorConfig(vocab_size=400, d_model=64, n_layers=1, n_heads=2, d_ff=64, max_len=16)
    model = Translator(config)
    assert model.source_embeddings.tokens.weight.std().item() == pytest.approx(0.02, rel=0.1)
    init_embeddings(model, 64**-0.5)
    weight = model.source_embeddings.tokens.weight
    assert weight.std().item() == pytest.approx(64**-0.5, rel=0.1)
    assert model.target_embeddings.tokens.weight is weight and model.lm_head.weight is weight


def test_recipe_errors() -> None:
    recipe = load_translation_recipe("translator-es-oto")
    assert recipe.model.kind == "translator" and not recipe.data.include_toluca
    for override, message in [
        ("training.steps=0", "training.steps: must be >= 1"),
        ("training.nope=1", "training.nope: unknown key"),
        ("model.vocab_size=10", "model.vocab_size: set by the trained tokenizer"),
        ("model.n_heads=3", "model.n_heads"),
        ("data.include_toluca=maybe", "data.include_toluca: expected bool"),
        ("training.batch_tokens=-1", "training.batch_tokens: must be >= 0"),
        ("training.cooldown=99999", "training.cooldown: must be <= training.steps"),
    ]:
        with pytest.raises(RecipeError, match=message):
            load_translation_recipe("translator-es-oto", [override])


def test_evaluation_scores_the_held_out_block_beside_both_baselines(tmp_path, monkeypatch) -> None:
    from training.translation_eval import evaluate_translator, table

    monkeypatch.setattr(seq2seq, "load_tsunkua", synthetic_rows)
    path = train_translator(load_translation_recipe("translator-es-oto", TINY), tmp_path / "run")
    result = evaluate_translator(path, num_beams=2)
    documents = {"doc0", "doc1", "doc2", "overall"}
    assert set(result["model"]) == documents
    assert set(result["baselines"]) == {"copy", "dictionary"}
    assert all(set(scores) == documents for scores in result["baselines"].values())
    assert result["model"]["overall"]["count"] == 12  # 10 % of each 40-row document
    # word-for-word data: the dictionary is near perfect, copying the Spanish is not
    assert (
        result["baselines"]["dictionary"]["overall"]["chrf"]
        > 90
        > result["baselines"]["copy"]["overall"]["chrf"]
    )
    assert table(result).count("\n") == 2 + len(documents) - 1
    with pytest.raises(ValueError, match="split"):
        evaluate_translator(path, split="train")
