"""The generated model card: YAML metadata the Hub reads, and a body built only from what the checkpoint records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hub_support import write_checkpoint
from huggingface_hub import ModelCard
from safetensors.numpy import load_file

from modeling.hub import HubError
from training.model_card import build_model_card, count_parameters
from training.publish import push_checkpoint, stage_checkpoint

# The shape training/loop.py writes (recipe abridged) and `atencion evaluate --save` is specified to write.
TRAINING = {
    "recipe": {"training": {"batch_size": 8, "warmup": 40}},
    "command": "atencion train encoder-dense --corpus /home/someone/private/corpus --out runs/enc",
    "corpus": "/home/someone/private/corpus",
    "split": {
        "seed": 0,
        "validation_fraction": 0.1,
        "train": ["quijote.txt", "lazarillo.txt"],
        "validation": ["celestina.txt"],
    },
    "data": {"train_tokens": 90000, "validation_tokens": 9000},
    "step": 500,
    "total_steps": 500,
    "tokens_seen": 256000,
    "wall_time_s": 754.2,
    "hardware": "Intel Xeon (2 threads)",
    "precision": "bf16",
    "validation": {"loss": 4.5, "perplexity": 90.0, "top1": 0.31, "top5": 0.52, "masked": 1200},
}
EVALUATION = {
    "metrics": {"top1": 0.3125, "top5": 0.5, "pseudo_perplexity": 61.5, "masked": 1200},
    "baseline": {"top1": 0.125},
    "baseline_name": "Kneser-Ney trigram",
    "corpus": "celestina.txt",
}


def split_card(text: str) -> tuple[dict, str]:
    card = ModelCard(text)  # parses as the Hub parses it
    return card.data.to_dict(), card.text


def test_encoder_card_metadata_and_evaluation(tmp_path):
    ckpt = write_checkpoint(tmp_path / "enc", records=False)
    (ckpt / "training.json").write_text(json.dumps(TRAINING))
    (ckpt / "evaluation.json").write_text(json.dumps(EVALUATION))
    meta, body = split_card(build_model_card(ckpt, repo_id="org/enc"))

    assert meta["library_name"] == "atencion" and meta["pipeline_tag"] == "fill-mask"
    assert meta["language"] == "es" and meta["license"] == "apache-2.0" and "atencion" in meta["tags"]
    results = ModelCard(build_model_card(ckpt, repo_id="org/enc")).data.eval_results
    got = {(r.metric_type, r.metric_name): r.metric_value for r in results}
    assert got == {
        ("accuracy", "top-1 accuracy (masked tokens)"): 0.3125,
        ("accuracy", "top-5 accuracy (masked tokens)"): 0.5,
        ("perplexity", "pseudo-perplexity"): 61.5,
    }  # the count "masked" is not a metric
    assert {r.task_type for r in results} == {"fill-mask"} and {r.dataset_name for r in results} == {
        "celestina.txt"
    }

    assert "| top-1 accuracy (masked tokens) | 0.3125 | 0.125 |" in body  # next to the baseline
    assert "| Kneser-Ney trigram |" in body and "Evaluated on 1,200 masked tokens." in body
    assert "`celestina.txt`" in body and "2 training and 1 validation documents" in body
    assert "Corpus: corpus." in body and "/home/someone/private" not in body.replace(TRAINING["command"], "")
    assert "| tokens seen | 256,000 |" in body and "| wall time | 12.6 min |" in body
    assert "| optimizer steps | 500 of 500 |" in body and TRAINING["command"] in body
    assert "| parameters | 1,488 |" in body and "| tokenizer | WordLevel, 13 tokens |" in body
    assert "| layout |" not in body  # dense attention has no layout to describe
    assert "atencion pull org/enc" in body and 'atencion fill-mask org/enc "La niña' in body


def test_decoder_card_without_records_says_so(tmp_path):
    ckpt = write_checkpoint(tmp_path / "dec", kind="decoder", records=False)
    meta, body = split_card(build_model_card(ckpt))
    assert meta["pipeline_tag"] == "text-generation" and "model-index" not in meta
    assert "Not evaluated." in body and "Not recorded (no training.json)." in body
    assert "atencion serve --decoder DIR" in body and "atencion generate DIR" in body
    assert "atencion pull" not in body  # nothing to pull before it is pushed


def test_parameter_count_is_the_sum_of_the_stored_tensors(tmp_path):
    ckpt = write_checkpoint(tmp_path / "c")
    expected = sum(int(np.prod(t.shape)) for t in load_file(str(ckpt / "model.safetensors")).values())
    assert count_parameters(ckpt / "model.safetensors") == expected == 1488
    (ckpt / "model.safetensors").write_bytes(b"\xff" * 16)  # a header length no checkpoint has
    assert count_parameters(ckpt / "model.safetensors") is None


def test_samples_and_sparse_layout_appear(tmp_path):
    ckpt = write_checkpoint(tmp_path / "s")
    config = json.loads((ckpt / "config.json").read_text())
    config["attention"] |= {"pattern": "strided", "window": 8, "stride": 8, "block_size": 4}
    (ckpt / "config.json").write_text(json.dumps(config))
    samples = [
        {"input": "¿dónde [MASK] el niño?", "output": "está (0.61), vive (0.12)"},
        {"prompt": "Érase una vez", "completion": " un rey\nque tenía ```tres``` hijas"},
    ]
    (ckpt / "samples.json").write_text(json.dumps(samples))
    meta, body = split_card(build_model_card(ckpt))
    assert "| attention | strided (window 8, stride 8, block 4); score dot |" in body
    layout = re.search(r"\| layout \| Child et al\. 2019's strided attention.*compute (\d+)% of the", body)
    assert layout and 0 < int(layout.group(1)) < 100, body
    assert "| `¿dónde [MASK] el niño?` | está (0.61), vive (0.12) |" in body
    assert "attention-strided" in meta["tags"]
    # a continuation spans lines: one text block with the prompt, whose fence the text cannot close
    fence = "`" * 3
    assert f"{fence}text\nÉrase una vez un rey\nque tenía '''tres''' hijas\n{fence}" in body


def test_a_written_card_is_kept_and_a_broken_record_is_a_clear_error(tmp_path):
    ckpt = write_checkpoint(tmp_path / "w")
    (ckpt / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# hand written\n")
    staging = tmp_path / "staging"
    staging.mkdir()
    assert sorted(stage_checkpoint(ckpt, staging, "org/w")) == sorted(
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "training.json",
            "evaluation.json",
            "README.md",
        ]
    )
    assert (staging / "README.md").read_text() == (ckpt / "README.md").read_text()

    (ckpt / "README.md").unlink()
    (ckpt / "evaluation.json").write_text("{not json")
    with pytest.raises(HubError, match="cannot write the model card: evaluation.json is not valid JSON"):
        push_checkpoint(ckpt, "org/w", endpoint="http://127.0.0.1:9")  # fails before any request


def test_card_of_a_real_tiny_checkpoint(tiny_checkpoints: Path):
    meta, body = split_card(build_model_card(tiny_checkpoints / "decoder-sparse"))
    assert meta["pipeline_tag"] == "text-generation"
    assert "local (window 4, block 4)" in body and "BPE" in body
