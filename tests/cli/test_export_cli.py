"""`atencion export CKPT --to transformers OUT`: transformers loads the folder and gives our logits.

Tolerance 1e-4 in float32, as the parity tests: both sides run the same operations, only the order of rounding
may differ (the fused qkv is one matmul on our side, three on theirs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from atencion.cli import main
from modeling.checkpoint import build_model, load_checkpoint, save_checkpoint
from modeling.config import DecoderConfig

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
SHIPPED_DECODER = REPO / "checkpoints" / "decoder-dense"


def export(capsys, *argv: str) -> tuple[int, str]:
    try:
        main(["export", *argv])
    except SystemExit as done:
        return done.code, capsys.readouterr().err
    raise AssertionError("the CLI did not exit")


@pytest.fixture(scope="module")
def bert_checkpoint(tiny_checkpoints, bert_shaped_config, tmp_path_factory) -> Path:
    """A tiny encoder in BERT's form (post-norm, learned positions, embedding norm), random weights."""
    tokenizer = load_checkpoint(tiny_checkpoints / "encoder-dense").tokenizer
    torch.manual_seed(3)
    model = build_model(bert_shaped_config)
    with torch.no_grad():  # non-trivial norms and biases, so that a wrong mapping cannot pass
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("bert") / "checkpoint"
    save_checkpoint(model, tokenizer, folder)
    return folder


def test_a_bert_shaped_encoder_exports_to_bert_for_masked_lm(bert_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "hf"
    code, err = export(capsys, str(bert_checkpoint), "--to", "transformers", str(out))
    assert code == 0, err
    ours = load_checkpoint(bert_checkpoint)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "BertForMaskedLM"
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    texts = ["El gato duerme en la [MASK].", "¿Dónde está el [MASK]?"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch.input_ids[0].tolist() == ours.tokenizer.encode(texts[0]).ids
    assert tokenizer.mask_token == "[MASK]" and tokenizer.mask_token_id == ours.config.mask_token_id
    pad = batch.attention_mask.bool()
    with torch.no_grad():
        expected = hf(**batch).logits
        got = ours.model(batch.input_ids, pad_mask=pad).logits
    real = pad[..., None].expand_as(got)  # padded rows are free to differ
    assert (got[real] - expected[real]).abs().max() <= 1e-4


def test_the_shipped_dense_decoder_exports_to_llama(tmp_path, capsys) -> None:
    out = tmp_path / "hf"
    code, err = export(capsys, "decoder-dense", "--to", "transformers", str(out))
    assert code == 0, err
    ours = load_checkpoint(SHIPPED_DECODER)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "Había una vez un caballero que"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == ours.tokenizer.encode(text).ids
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours.model(ids).logits
    assert (got - expected).abs().max() <= 1e-4
    with torch.no_grad():  # the same greedy continuation through their generate and cache
        theirs = hf.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :].tolist()
    mine, cache, step = [], ours.model.new_cache(), ids
    with torch.inference_mode():
        for _ in range(8):
            step = ours.model.next_logits(step, cache).argmax(-1, keepdim=True)  # (1, 1)
            mine.append(int(step))
    assert mine == theirs


@pytest.mark.parametrize(
    ("name", "field"),
    [("encoder-sparse", "attention.pattern"), ("decoder-sparse", "attention.pattern")],
)
def test_a_sparse_model_is_a_clear_error_naming_the_field(tiny_checkpoints, tmp_path, capsys, name, field):
    out = tmp_path / "hf"
    code, err = export(capsys, str(tiny_checkpoints / name), "--to", "transformers", str(out))
    assert code == 2
    assert f"{field}: " in err and "transformers cannot express" in err, err
    assert not out.exists(), "nothing is written for a model that cannot be exported"


def test_the_shipped_encoder_is_pre_norm_with_rope_which_bert_is_not(tmp_path, capsys) -> None:
    code, err = export(capsys, "encoder-dense", "--to", "transformers", str(tmp_path / "hf"))
    assert code == 2
    assert "position: BertForMaskedLM needs 'learned', this model has 'rope'" in err, err


def test_a_post_norm_decoder_names_norm_placement(tiny_checkpoints, tmp_path, capsys) -> None:
    tokenizer = load_checkpoint(tiny_checkpoints / "decoder-dense").tokenizer
    config = DecoderConfig(
        vocab_size=tokenizer.get_vocab_size(), d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=32,
        position="rope", norm="rms", norm_placement="post", feed_forward="swiglu", bias=False,
    )  # fmt: skip
    save_checkpoint(build_model(config), tokenizer, tmp_path / "post")
    code, err = export(capsys, str(tmp_path / "post"), "--to", "transformers", str(tmp_path / "hf"))
    assert code == 2
    assert "norm_placement: LlamaForCausalLM needs 'pre', this model has 'post'" in err, err


def test_an_existing_folder_with_files_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    code, err = export(capsys, "decoder-dense", "--to", "transformers", str(tmp_path))
    assert code == 2 and "out: " in err and "not an empty folder" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_without_transformers_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    code, err = export(capsys, "decoder-dense", "--to", "transformers", str(tmp_path / "hf"))
    assert code == 1
    assert "pip install 'atencion[export]'" in err, err
