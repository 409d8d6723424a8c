"""Helpers the Hub tests share: the token, CLI results, small checkpoints, digests of a directory."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from modeling.config import DecoderConfig, EncoderConfig

TOKEN = "hf_atencionTEST0123456789abcdefSECRET"
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "el",
    "niño",
    "¿dónde",
    "está",
    "?",
    "¡hola",
    "!",
    "canción",
]


@dataclass
class Result:
    """What one CLI run left: exit code, both streams, seconds it took."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.stdout.strip().splitlines()


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every file directly in ``directory`` (links followed)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()
    }


def write_checkpoint(directory: Path, kind: str = "encoder", seed: int = 0, records: bool = True) -> Path:
    """A small checkpoint: config.json, random weights in model.safetensors, a word-level tokenizer.json.

    With ``records``, also the training.json / evaluation.json the training loop and ``evaluate --save`` write.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir(parents=True, exist_ok=True)
    shape = dict(vocab_size=len(VOCAB), d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=32)
    config = EncoderConfig(**shape) if kind == "encoder" else DecoderConfig(**shape)
    config.save(directory / "config.json")
    rng = np.random.default_rng(seed)
    tensors = {
        "embeddings.weight": rng.standard_normal((len(VOCAB), 16)).astype(np.float32),
        "blocks.0.attention.qkv.weight": rng.standard_normal((48, 16)).astype(np.float32),
        "blocks.0.feed_forward.up.weight": rng.standard_normal((32, 16)).astype(np.float32),
    }
    save_file(tensors, str(directory / "model.safetensors"))
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    if records:
        training = {
            "recipe": f"{kind}-tiny",
            "corpus": "tests/hub toy corpus",
            "split": {"train": ["a.txt", "b.txt"], "validation": ["c.txt"]},
            "tokens_seen": 12345,
            "wall_time_s": 90.0,
            "hardware": "2 CPU cores",
            "command": f"atencion train {kind}-tiny --corpus corpus --out out",
        }
        (directory / "training.json").write_text(json.dumps(training))
        metric = "top1_accuracy" if kind == "encoder" else "perplexity"
        value, baseline = (0.25, 0.125) if kind == "encoder" else (42.5, 80.0)
        evaluation = {"metrics": {metric: value}, "baseline": {metric: baseline}, "corpus": "c.txt"}
        (directory / "evaluation.json").write_text(json.dumps(evaluation))
    return directory


def publish(hub, repo_id: str, files: dict[str, bytes]) -> str:
    """Commit ``files`` straight into the test server's store (as any client could), *.safetensors via LFS."""
    hub.store.create(repo_id, private=False)
    operations = [{"key": "header", "value": {"summary": "hostile"}}]
    for path, data in files.items():
        if path.endswith(".safetensors"):
            oid = hub.store.put_object(data)
            operations.append(
                {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": len(data)}}
            )
        else:
            content = base64.b64encode(data).decode()
            operations.append(
                {"key": "file", "value": {"path": path, "content": content, "encoding": "base64"}}
            )
    return hub.store.commit(repo_id, "main", operations)
