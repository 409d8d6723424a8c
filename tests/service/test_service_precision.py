"""``--precision auto`` at start-up: /info says which precision each encoder serves in, and bf16 falls back to
fp32 for an encoder whose answers it would change (one built to fail the check: its best tokens are closer than
bf16 can tell apart)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from modeling.checkpoint import save_checkpoint
from modeling.config import EncoderConfig
from modeling.encoder import Encoder
from modeling.precision import bf16_supported

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]


def checkpoint(path, bias: torch.Tensor) -> str:
    """An encoder whose logits are ``bias`` exactly (zero embeddings, tied to the output head)."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(WORDS[:5])
    config = EncoderConfig(vocab_size=len(WORDS), d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=64,
                           dropout=0.0, mask_token_id=4)  # fmt: skip
    model = Encoder(config).eval()
    with torch.no_grad():
        model.embeddings.tokens.weight.zero_()
        model.head.bias.copy_(bias)
    save_checkpoint(model, tokenizer, path)
    return str(path)


def test_auto_serves_bf16_only_where_the_check_passes(start_server, tmp_path):
    fragile = 10 + 1e-3 * -(torch.arange(len(WORDS)) - 30).abs().float()  # 1e-3 apart: one bf16 value
    robust = torch.zeros(len(WORDS))
    robust[10:16] = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0, 5.0])  # a unit apart: exact in bf16
    server = start_server(
        "--encoder", checkpoint(tmp_path / "fragile", fragile), "--encoder", checkpoint(tmp_path / "robust", robust),
        env={"ATENCION_PRECISION": "auto"},
    )  # fmt: skip
    served = server.get("/info").json()["fill_mask_precision"]
    assert served["fragile"]["precision"] == "fp32" and "changed" in served["fragile"]["reason"]
    assert served["fragile"]["agreement"]["same_top1"] < served["fragile"]["agreement"]["masks"]
    has_bf16 = bf16_supported(torch.device("cpu"))
    assert served["robust"]["precision"] == ("bf16" if has_bf16 else "fp32")
    assert served["robust"]["requested"] == "auto"
    for name, best in (
        ("fragile", "w25"),
        ("robust", "w5"),
    ):  # fp32's answer from both, whatever the precision
        body = server.post("/fill-mask", {"inputs": "w1 [MASK] w2", "model": name}).json()
        assert body[0]["token_str"] == best


def test_a_bad_precision_is_refused_naming_the_flag(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    run = subprocess.run(
        [sys.executable, "-m", "atencion", "serve", "--encoder", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "ATENCION_PRECISION": "fp16"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "ATENCION_PRECISION" in run.stderr and "auto, fp32, bf16" in run.stderr
