"""Shared fixtures: tiny checkpoints and the real ``atencion serve`` as a subprocess.

Stable names (other test directories rely on them):

- ``tiny_checkpoints`` (session): a ``pathlib.Path`` holding five tiny random-init checkpoints,
  ``encoder-dense``, ``encoder-sparse`` (local window layout), ``decoder-dense``, ``decoder-sparse`` (local
  window), ``translator`` (an encoder–decoder sharing the decoders' BPE), each a directory with ``config.json``, ``model.safetensors`` and ``tokenizer.json``. The encoders
  use a WordPiece tokenizer (``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``, ``[CLS] $A [SEP]``), the decoders a
  byte-level BPE (``<pad>=0 <s>=1 </s>=2``, ``<s> $A``), both trained here on ``SENTENCES``.
- ``bert_shaped_config`` (session): an ``EncoderConfig`` in BERT's form (post-norm, learned positions, GELU,
  biases, embedding norm) over the tiny encoders' tokenizer, the one shape ``BertForMaskedLM`` computes.
- ``start_server`` (function): a factory ``start_server(*args, env=None) -> Server``; it runs
  ``python -m atencion serve *args`` on a free 127.0.0.1 port in its own process group, waits for
  ``/health`` to answer 200, and at teardown sends SIGTERM, kills the group if needed and asserts that no
  process of the group is left. ``env`` entries are added to (or, with value None, removed from) the
  environment. Stop one early with ``server.stop()`` (returns the pids that had to be killed).
- ``server`` (session): one ``Server`` serving all five tiny checkpoints (fill-mask in fp32), names ``encoder-dense`` (the default
  encoder), ``encoder-sparse``, ``decoder-dense`` (the default decoder), ``decoder-sparse``, ``translator``.
- ``Server``: ``url``, ``process``, ``log`` (path of its combined stdout/stderr), ``get(path, **kw)``,
  ``post(path, json=None, **kw)`` (``requests`` calls with a timeout), ``stop()``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent

SENTENCES = [
    "El gato duerme en la casa.",
    "La niña lee un libro en el jardín.",
    "¿Dónde está el perro? Está en la calle.",
    "Mañana vamos a la playa con mis amigos.",
    "El señor compra pan y leche en la tienda.",
    "¡Qué bonito es el mar por la mañana!",
    "Los niños juegan en el parque después de la escuela.",
    "Mi madre cocina una sopa muy rica.",
    "El tren sale de la estación a las ocho.",
    "Ella escribe una carta a su hermano.",
    "El sol brilla y el cielo está azul.",
    "Nosotros vivimos en una ciudad pequeña.",
]


def _tokenizers():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.NFC()
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(
        SENTENCES * 3,
        trainers.WordPieceTrainer(
            vocab_size=200,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            min_frequency=1,
            show_progress=False,
        ),
    )
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    wordpiece.decoder = decoders.WordPiece(prefix="##")

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        SENTENCES * 3,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<pad>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    bpe.decoder = decoders.ByteLevel()
    return wordpiece, bpe


@pytest.fixture(autouse=True)
def _torch_global_state_is_left_alone() -> Iterator[None]:
    """A test (or the code it runs in-process) must not leave autograd switched off or the default dtype
    changed: the tests that follow would fail for reasons far from the cause."""
    import torch

    yield
    assert torch.is_grad_enabled(), "this test left autograd disabled (torch.set_grad_enabled(False) leaked)"
    assert not torch.is_inference_mode_enabled(), "this test left inference mode on"
    assert torch.get_default_dtype() == torch.float32, "this test changed torch's default dtype"


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tiny random-init checkpoints (see the module docstring)."""
    import torch

    from modeling.checkpoint import build_model, save_checkpoint
    from modeling.config import AttentionConfig, DecoderConfig, EncoderConfig, TranslatorConfig

    root = tmp_path_factory.mktemp("checkpoints")
    wordpiece, bpe = _tokenizers()
    shape = dict(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=64, dropout=0.0)
    local = AttentionConfig(pattern="local", window=4, block_size=4)
    configs = {
        "encoder-dense": EncoderConfig(vocab_size=wordpiece.get_vocab_size(), mask_token_id=4, **shape),
        "encoder-sparse": EncoderConfig(
            vocab_size=wordpiece.get_vocab_size(), mask_token_id=4, attention=local, **shape
        ),
        "decoder-dense": DecoderConfig(
            vocab_size=bpe.get_vocab_size(), bos_token_id=1, eos_token_id=2, **shape
        ),
        "decoder-sparse": DecoderConfig(
            vocab_size=bpe.get_vocab_size(), bos_token_id=1, eos_token_id=2, attention=local, **shape
        ),
        "translator": TranslatorConfig(
            vocab_size=bpe.get_vocab_size(), bos_token_id=1, eos_token_id=2, encoder_layers=1, **shape
        ),
    }
    for seed, (name, config) in enumerate(configs.items()):
        torch.manual_seed(seed)
        tokenizer = wordpiece if config.kind == "encoder" else bpe
        model = build_model(config)
        embeddings = model.target_embeddings if config.kind == "translator" else model.embeddings
        with (
            torch.no_grad()
        ):  # peaked, not near-uniform, predictions: greedy choices don't flip on float noise
            embeddings.tokens.weight.mul_(10.0)
        save_checkpoint(model, tokenizer, root / name)
    return root


@pytest.fixture(scope="session")
def bert_shaped_config(tiny_checkpoints: Path):
    """A tiny encoder config that transformers' BertForMaskedLM computes exactly (see the module docstring)."""
    from modeling.checkpoint import load_checkpoint
    from modeling.config import EncoderConfig

    vocab_size = load_checkpoint(tiny_checkpoints / "encoder-dense").config.vocab_size
    return EncoderConfig(
        vocab_size=vocab_size, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=40, dropout=0.0,
        position="learned", norm="layer", norm_eps=1e-12, norm_placement="post", feed_forward="gelu",
        embedding_norm=True, mask_token_id=4,
    )  # fmt: skip


# ---- the real server as a subprocess ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    stopped: bool = field(default=False)

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 60), **kwargs)

    def post(self, path: str, json=None, **kwargs) -> requests.Response:
        return requests.post(self.url + path, json=json, timeout=kwargs.pop("timeout", 60), **kwargs)

    def stop(self, grace: float = 30.0) -> list[int]:
        """SIGTERM the main process, wait, then kill whatever of the group is left; returns those pids."""
        if self.stopped:
            return []
        self.stopped = True
        pgid = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = group_members(pgid)
        if left:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        return left


def launch(
    args: tuple[str, ...], env: dict[str, str | None] | None, log: Path, timeout: float = 120
) -> Server:
    """Start ``atencion serve`` and wait for ``/health``; raise with the server's log if it never gets there."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("ATENCION_", "PROMETHEUS_"))}
    environment.update({"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    command = [sys.executable, "-m", "atencion", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    handle = log.open("wb")
    process = subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            headers = {"X-API-Key": env["ATENCION_API_KEY"]} if env and env.get("ATENCION_API_KEY") else {}
            if requests.get(server.url + "/health", timeout=2, headers=headers).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"server did not become healthy; log:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Factory: ``start_server(*args, env=None) -> Server``; everything started is stopped and checked."""
    started: list[Server] = []

    def start(*args: str, env: dict[str, str | None] | None = None) -> Server:
        server = launch(tuple(args), env, tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server

    yield start
    leftovers = {s.url: s.stop() for s in started}
    assert not any(leftovers.values()), f"processes left after SIGTERM: {leftovers}"


@pytest.fixture(scope="session")
def server(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with the four tiny checkpoints, shared by the whole session."""
    args = []
    for name in ("encoder-dense", "encoder-sparse"):
        args += ["--encoder", str(tiny_checkpoints / name)]
    for name in ("decoder-dense", "decoder-sparse"):
        args += ["--decoder", str(tiny_checkpoints / name)]
    args += ["--translator", str(tiny_checkpoints / "translator")]
    log = tmp_path_factory.mktemp("server") / "server.log"
    # fp32: tests compare the served answers with the checkpoint's own (--precision auto is tested on its own)
    env = {"ATENCION_MAX_BATCH_SIZE": "8", "ATENCION_BATCH_TIMEOUT": "0.05", "ATENCION_PRECISION": "fp32"}
    running = launch(tuple(args), env, log)
    yield running
    left = running.stop()
    assert not left, f"processes left after SIGTERM: {left}"
