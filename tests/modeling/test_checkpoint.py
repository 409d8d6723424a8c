"""Checkpoints: save → load gives identical logits; every kind of corruption gives a clear CheckpointError."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

from modeling.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from modeling.config import AttentionConfig, DecoderConfig, EncoderConfig
from modeling.decoder import Decoder
from modeling.encoder import Encoder

WORDS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[MASK]"] + [f"w{i:02d}" for i in range(35)]
ENCODER = EncoderConfig(
    vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=32, dropout=0.0, type_vocab_size=2,
    embedding_norm=True, norm_placement="post",
)  # fmt: skip
DECODER = DecoderConfig(
    vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=32, dropout=0.0, position="rope",
    norm="rms", feed_forward="swiglu", bias=False, attention=AttentionConfig(pattern="local", block_size=4, window=3),
)  # fmt: skip


def tiny_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(WORDS[:5])
    return tokenizer


def saved(tmp_path: Path, model: torch.nn.Module, name: str = "ckpt") -> Path:
    return save_checkpoint(model, tiny_tokenizer(), tmp_path / name, extra={"training.json": {"steps": 3}})


@pytest.fixture
def decoder_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return saved(tmp_path, Decoder(DECODER))


IDS = torch.tensor([[1, 7, 9, 30, 12, 5]])


@pytest.mark.parametrize(
    "model_fn",
    [
        lambda: Encoder(ENCODER),
        lambda: Decoder(DECODER),
        lambda: Decoder(
            DecoderConfig(vocab_size=40, d_model=16, n_layers=1, n_heads=2, d_ff=32, tie_embeddings=False)
        ),
    ],
)
def test_save_then_load_gives_identical_logits(tmp_path, model_fn) -> None:
    torch.manual_seed(1)
    model = model_fn().eval()
    directory = saved(tmp_path, model)
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left behind
    checkpoint = load_checkpoint(directory)
    assert checkpoint.config == model.config and checkpoint.path == directory
    assert not checkpoint.model.training
    assert checkpoint.tokenizer.encode("w01 w02").ids == [6, 7]
    with torch.no_grad():
        assert torch.equal(checkpoint.model(IDS).logits, model(IDS).logits)
    assert json.loads((directory / "training.json").read_text()) == {"steps": 3}


def test_tied_weights_are_stored_once(tmp_path) -> None:
    model = Decoder(DECODER)
    directory = saved(tmp_path, model)
    header_len = struct.unpack("<Q", (directory / "model.safetensors").read_bytes()[:8])[0]
    header = json.loads((directory / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert "embeddings.tokens.weight" in header and "lm_head.weight" not in header
    loaded = load_checkpoint(directory).model
    assert loaded.lm_head.weight is loaded.embeddings.tokens.weight


def test_saving_over_an_existing_checkpoint_replaces_it(tmp_path) -> None:
    torch.manual_seed(2)
    first, second = Decoder(DECODER), Decoder(DECODER)
    saved(tmp_path, first)
    directory = saved(tmp_path, second)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with torch.no_grad():
        assert torch.equal(load_checkpoint(directory).model(IDS).logits, second.eval()(IDS).logits)


def test_bad_extra_file_name_is_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="extra file"):
        save_checkpoint(Decoder(DECODER), tiny_tokenizer(), tmp_path / "x", extra={"../escape.json": {}})


# ---- corruption -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_file(decoder_dir, name) -> None:
    (decoder_dir / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing {name}"):
        load_checkpoint(decoder_dir)


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_truncated_weights(decoder_dir) -> None:
    weights = decoder_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated"):
        load_checkpoint(decoder_dir)


def test_weights_shorter_than_a_header(decoder_dir) -> None:
    (decoder_dir / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(decoder_dir)


@pytest.mark.parametrize(("offset", "message"), [(7, "header length"), (12, "not valid JSON")])
def test_flipped_header_byte(decoder_dir, offset, message) -> None:
    weights = decoder_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[offset] ^= 0xFF  # 7: the header length's top byte; 12: a byte of the JSON header
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(decoder_dir)


def test_wrong_tensor_shape(decoder_dir) -> None:
    tensors = {name: t.clone() for name, t in _read(decoder_dir).items()}
    tensors["blocks.0.feed_forward.up.weight"] = torch.zeros(31, 16)
    save_file(tensors, str(decoder_dir / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"'blocks.0.feed_forward.up.weight' has shape \(31, 16\).*\(32, 16\)"
    ):
        load_checkpoint(decoder_dir)


def test_wrong_dtype(decoder_dir) -> None:
    tensors = {name: t.to(torch.float16) for name, t in _read(decoder_dir).items()}
    save_file(tensors, str(decoder_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="is torch.float16, the model needs torch.float32"):
        load_checkpoint(decoder_dir)


def test_missing_and_unexpected_tensors(decoder_dir) -> None:
    tensors = dict(_read(decoder_dir))
    tensors["surprise"] = tensors.pop("final_norm.weight")
    save_file(tensors, str(decoder_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['final_norm.weight'\]"):
        load_checkpoint(decoder_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 15}, "config.json: field n_heads: d_model"),
        ({"norm": "batch"}, "config.json: field norm: must be one of"),
        ({"colour": "red"}, "config.json: field colour: unknown field"),
        ({"kind": "vision"}, "config.json: field kind"),
        ({"n_layers": 3}, r"missing tensor\(s\) \['blocks.2"),
        ({"d_ff": 48}, "has shape"),
        ({"vocab_size": 10}, "tokenizer.json: 40 tokens do not fit"),
    ],
)
def test_tampered_config(decoder_dir, change, message) -> None:
    config = json.loads((decoder_dir / "config.json").read_text())
    config.update(change)
    (decoder_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(decoder_dir)


def test_config_that_is_not_json(decoder_dir) -> None:
    (decoder_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_checkpoint(decoder_dir)


def test_tokenizer_that_cannot_be_read(decoder_dir) -> None:
    (decoder_dir / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="tokenizer.json: cannot be read"):
        load_checkpoint(decoder_dir)


# ---- SHA256SUMS -----------------------------------------------------------------------------------------------
def _sums(directory: Path, prefix: str = "") -> str:
    lines = []
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {prefix}{name}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["inside", "parent"])
def test_sha256sums_are_verified(decoder_dir, where) -> None:
    target = decoder_dir / "SHA256SUMS" if where == "inside" else decoder_dir.parent / "SHA256SUMS"
    target.write_text(_sums(decoder_dir, "" if where == "inside" else "ckpt/"))
    load_checkpoint(decoder_dir)  # intact: loads
    weights = decoder_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # a flipped bit inside a tensor: the header check cannot see it, the digest can
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: sha256 does not match"):
        load_checkpoint(decoder_dir)


def test_sha256sums_listing_a_missing_file(decoder_dir) -> None:
    (decoder_dir / "SHA256SUMS").write_text(_sums(decoder_dir) + f"{'0' * 64}  README.md\n")
    with pytest.raises(CheckpointError, match="lists README.md, which is missing"):
        load_checkpoint(decoder_dir)


def _read(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


# ---- the CLI on a saved checkpoint ----------------------------------------------------------------------------
def test_cli_generate_streams_text(decoder_dir, capsys) -> None:
    from atencion.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(decoder_dir), "w01 w02", "--max-new-tokens", "4", "--json"])
    assert exit_info.value.code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) <= 4 and lines[-1]["finish_reason"] in ("length", "eos_token")
    assert {"id", "text", "logprob", "special", "finish_reason", "top_logprobs"} == set(lines[0])


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--max-new-tokens", "0"], 2, "max_new_tokens: must be"),
        (["--sample", "--top-p", "2"], 2, "top_p: must be"),
    ],
)
def test_cli_generate_rejects_bad_values(decoder_dir, capsys, argv, code, message) -> None:
    from atencion.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(decoder_dir), "w01", *argv])
    assert exit_info.value.code == code
    assert message in capsys.readouterr().err


def test_cli_reports_a_broken_or_wrong_checkpoint(tmp_path, decoder_dir, capsys) -> None:
    from atencion.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fill-mask", str(decoder_dir), "w01 [MASK]"])
    assert (
        exit_info.value.code == 2
        and "is a decoder model, this command needs an encoder" in capsys.readouterr().err
    )
    (decoder_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(decoder_dir), "w01"])
    assert exit_info.value.code == 1
    assert "error: model.safetensors: truncated" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(tmp_path / "nothing-here"), "w01"])
    assert exit_info.value.code == 2  # a usage error: no such directory, name or ORG/NAME reference
    assert "nothing-here' is neither a checkpoint directory" in capsys.readouterr().err


def test_cli_fill_mask(tmp_path, capsys) -> None:
    from atencion.cli import main

    torch.manual_seed(3)
    directory = saved(tmp_path, Encoder(ENCODER))
    with pytest.raises(SystemExit) as exit_info:
        main(["fill-mask", str(directory), "w01 [MASK] w03", "--top-k", "3", "--json"])
    assert exit_info.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    assert rows[0]["sequence"].startswith("w01 ") and rows[0]["sequence"].endswith(" w03")
    with pytest.raises(SystemExit) as exit_info:
        main(["fill-mask", str(directory), "w01 w02"])
    assert exit_info.value.code == 2 and "no [MASK] token" in capsys.readouterr().err


def test_sha256sums_follow_linked_files(tmp_path, decoder_dir) -> None:
    """A Hub snapshot holds links into a blob store; the listed names are checked through the links."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    sums = _sums(decoder_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (decoder_dir / name).rename(blobs / name)
        (decoder_dir / name).symlink_to(blobs / name)
    (decoder_dir / "SHA256SUMS").write_text(sums)
    load_checkpoint(decoder_dir)
    (blobs / "config.json").write_text(
        (blobs / "config.json").read_text().replace('"n_layers": 2', '"n_layers":  2')
    )
    with pytest.raises(CheckpointError, match="config.json: sha256 does not match"):
        load_checkpoint(decoder_dir)


def test_checkpoint_directory_is_readable_by_others(decoder_dir) -> None:
    assert decoder_dir.stat().st_mode & 0o055 == 0o055


def test_load_can_cast_to_bfloat16(tmp_path) -> None:
    torch.manual_seed(4)
    model = Encoder(ENCODER).eval()
    checkpoint = load_checkpoint(saved(tmp_path, model), dtype=torch.bfloat16)
    assert {p.dtype for p in checkpoint.model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        diff = (checkpoint.model(IDS).logits.float() - model(IDS).logits).abs().max()
    assert 0 < diff < 0.1  # bf16 rounding (8 bits of mantissa), not a different model
