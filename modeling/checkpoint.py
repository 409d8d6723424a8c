"""Checkpoint directories: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` (+ extra JSON files).

The only module that reads or writes weight files. Nothing is unpickled: weights are safetensors, whose header
is parsed and checked here (names, shapes, dtypes, byte ranges, file size) against a freshly built model before
any tensor is loaded. Tied weights (the decoder's embeddings and output head) are stored once, under the name
of the first module that owns them, as Hugging Face does.

If the directory, or its parent, holds a ``SHA256SUMS`` file (``sha256sum`` format) listing the checkpoint's
files, their digests are verified too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn

from modeling import safetensors_header
from modeling.config import ConfigError, ModelConfig, config_from_dict
from modeling.digests import sha256

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
SUMS = "SHA256SUMS"
REQUIRED = (CONFIG, WEIGHTS, TOKENIZER)

# safetensors dtype names -> torch dtypes (the ones a model of ours can hold)
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    config: ModelConfig
    tokenizer: Tokenizer
    path: Path


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised Encoder, Decoder or Translator for ``config``."""
    if config.kind == "translator":
        from modeling.translator import Translator

        return Translator(config)
    if config.kind == "encoder":
        from modeling.encoder import Encoder

        return Encoder(config)
    from modeling.decoder import Decoder

    return Decoder(config)


# ---- saving ----------------------------------------------------------------------------------------------------
def unique_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's persistent state, each shared (tied) tensor once, under its first name."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            tensors[name] = tensor
    return tensors


def tied_aliases(model: nn.Module) -> set[str]:
    """State-dict names that are second names of a tensor saved under another name."""
    return set(model.state_dict(keep_vars=True)) - set(unique_tensors(model))


def save_checkpoint(
    model: nn.Module,
    tokenizer: Tokenizer,
    directory: str | Path,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write the checkpoint directory atomically: everything goes to a temporary sibling, then one rename.

    ``extra`` maps file names (e.g. ``training.json``) to JSON objects written beside the weights.
    An existing directory is replaced only once the new one is complete.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for name in extra or {}:
        if name in REQUIRED or Path(name).name != name or not name.endswith(".json"):
            raise CheckpointError(f"extra file {name!r}: must be a plain *.json name other than {REQUIRED}")
    temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    temporary.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be read by others
    try:
        model.config.save(temporary / CONFIG)
        save_file(
            {name: t.detach().contiguous() for name, t in unique_tensors(model).items()},
            str(temporary / WEIGHTS),
            metadata={"format": "pt"},
        )
        tokenizer.save(str(temporary / TOKENIZER))
        for name, data in (extra or {}).items():
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            (temporary / name).write_text(text, encoding="utf-8")
        for path in temporary.iterdir():  # on disk before the rename makes them visible
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(temporary, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, directory)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return directory


# ---- validation ------------------------------------------------------------------------------------------------
def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Parse and check a safetensors header (``modeling.safetensors_header``); ``CheckpointError`` if it fails."""
    try:
        return safetensors_header.read(path)
    except safetensors_header.HeaderError as error:
        raise CheckpointError(str(error)) from None


def check_tensors(header: dict[str, dict[str, Any]], expected: dict[str, torch.Tensor]) -> None:
    """Names, shapes and dtypes in the file must be exactly those of the freshly built model."""
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing:
        raise CheckpointError(f"{WEIGHTS}: missing tensor(s) {missing[:5]} that the config's model needs")
    if unexpected:
        raise CheckpointError(f"{WEIGHTS}: unexpected tensor(s) {unexpected[:5]} not in the config's model")
    for name, tensor in expected.items():
        shape, dtype = list(header[name]["shape"]), DTYPES[header[name]["dtype"]]
        if shape != list(tensor.shape):
            raise CheckpointError(
                f"{WEIGHTS}: tensor {name!r} has shape {tuple(shape)}, the config's model needs "
                f"{tuple(tensor.shape)}"
            )
        if dtype != tensor.dtype:
            raise CheckpointError(f"{WEIGHTS}: tensor {name!r} is {dtype}, the model needs {tensor.dtype}")


def verify_sums(directory: Path) -> None:
    """Check every file of ``directory`` listed in a SHA256SUMS beside it or in its parent."""
    for sums in (directory / SUMS, directory.parent / SUMS):
        if not sums.is_file():
            continue
        for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            digest, _, name = line.strip().partition(" ")
            name = name.strip().lstrip("*")
            if len(digest) != 64 or not name:
                raise CheckpointError(f"{sums}: line {number} is not '<sha256>  <file>'")
            target = sums.parent / name  # not resolved: a Hub snapshot's files are links into its blob store
            if target.parent.resolve() != directory.resolve():
                continue  # another checkpoint's file
            if not target.is_file():
                raise CheckpointError(f"{sums}: lists {name}, which is missing")
            if sha256(target) != digest.lower():
                raise CheckpointError(f"{target.name}: sha256 does not match {sums} (tampered or corrupt)")


# ---- loading ---------------------------------------------------------------------------------------------------
def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Checkpoint:
    """Validate and load a checkpoint directory; raise ``CheckpointError`` naming the problem.

    ``dtype`` casts the validated weights after loading, e.g. ``torch.bfloat16`` for the encoder's faster
    bf16 GEMMs on CPUs with avx512_bf16 (bench/models.py); ``None`` keeps them as stored."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (it does not exist)")
    for name in REQUIRED:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: missing {name}")
    verify_sums(directory)
    try:
        data = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise CheckpointError(f"{CONFIG}: must hold a JSON object")
        config = config_from_dict(data)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{CONFIG}: not valid JSON ({error})") from error
    except ConfigError as error:
        raise CheckpointError(f"{CONFIG}: field {error}") from error
    try:
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER))
    except Exception as error:  # the tokenizers library raises a bare Exception
        raise CheckpointError(f"{TOKENIZER}: cannot be read ({error})") from error
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise CheckpointError(
            f"{TOKENIZER}: {tokenizer.get_vocab_size()} tokens do not fit {CONFIG}'s vocab_size "
            f"{config.vocab_size}"
        )

    model = build_model(config)
    check_tensors(read_safetensors_header(directory / WEIGHTS), unique_tensors(model))
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except Exception as error:  # safetensors' own checks, should ours have missed something
        raise CheckpointError(f"{WEIGHTS}: cannot be read ({error})") from error
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    untied = [name for name in missing if name not in tied_aliases(model)]
    if untied or unexpected:
        raise CheckpointError(
            f"{WEIGHTS}: does not match the model (missing {untied}, unexpected {unexpected})"
        )
    model.to(device=device, dtype=dtype).eval()
    return Checkpoint(model=model, config=config, tokenizer=tokenizer, path=directory)
