"""The loop trains (loss falls for both objectives), writes what it promises, resumes exactly after a real
SIGKILL, and runs as two DDP processes on CPU (gloo on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import write_recipe

from modeling.checkpoint import load_checkpoint
from training.loop import parameter_groups, train
from training.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]


def losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "split" not in r}


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_a_tiny_run_lowers_the_loss_and_writes_its_files(trained: dict[str, Path], kind: str) -> None:
    out = trained[kind]
    curve = losses(out)
    assert sorted(curve) == list(range(1, 41))
    first, last = sum(curve[s] for s in (1, 2, 3)) / 3, sum(curve[s] for s in (38, 39, 40)) / 3
    # 40 tiny steps end near 0.74x the first loss; bf16 rounding moves that by about ±0.01 from run to run.
    assert last < 0.8 * first, (first, last)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if r.get("split") == "validation"]
    assert [r["step"] for r in validation] == [20, 40]
    assert validation[1]["loss"] < validation[0]["loss"] or validation[1]["loss"] < first
    if kind == "encoder":
        assert 0.0 <= validation[1]["top1"] <= validation[1]["top5"] <= 1.0
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(out / "checkpoint")
    info = json.loads((out / "checkpoint" / "training.json").read_text())
    assert info["step"] == 40 and info["complete"] and info["tokens_seen"] == 40 * 8 * 32
    assert info["split"]["validation"] and not set(info["split"]["train"]) & set(info["split"]["validation"])
    assert info["command"] == "pytest" and info["recipe"]["training"]["steps"] == 40
    assert ckpt.config.vocab_size == ckpt.tokenizer.get_vocab_size()
    if kind == "decoder":
        assert (ckpt.config.pad_token_id, ckpt.config.bos_token_id, ckpt.config.eos_token_id) == (0, 1, 2)
    else:
        assert (ckpt.config.pad_token_id, ckpt.config.mask_token_id) == (0, 4)
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))  # nothing pickled


def test_weight_decay_skips_norms_biases_and_embeddings(trained: dict[str, Path]) -> None:
    model = load_checkpoint(trained["encoder"] / "checkpoint").model
    decay, rest = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(p.ndim == 2 for p in decay["params"])
    assert not any("embeddings" in n or "norm" in n or n.endswith("bias") for n in decayed)
    assert rest["weight_decay"] == 0.0
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))


def test_an_existing_run_needs_resume(trained: dict[str, Path], spanish_corpus: Path) -> None:
    from training.loop import TrainingError

    recipe = load_recipe(trained["decoder"].parent / "tiny-decoder.toml")
    with pytest.raises(TrainingError, match="--resume"):
        train(recipe, spanish_corpus, trained["decoder"])


def test_kill_and_resume_gives_the_same_losses(tmp_path: Path, spanish_corpus: Path) -> None:
    """A real SIGKILL of `atencion train` right after its first checkpoint, then `--resume`."""
    recipe_path = write_recipe(tmp_path, "encoder", steps=60, eval_every=20, checkpoint_every=4)
    train(load_recipe(recipe_path), spanish_corpus, tmp_path / "whole")  # the uninterrupted reference
    out = tmp_path / "killed"
    # The tokenizers library breaks ties between equally frequent merges differently from one process to the
    # next, so the two runs share the tokenized corpus (OUT/data, reused when its key matches) — the claim
    # under test is that the training state resumes exactly.
    shutil.copytree(tmp_path / "whole" / "data", out / "data")
    command = [sys.executable, "-m", "atencion", "train", str(recipe_path), "--corpus", str(spanish_corpus)]
    process = subprocess.Popen([*command, "--out", str(out)], cwd=ROOT, stderr=subprocess.DEVNULL)
    marker = out / "checkpoint" / "training.json"
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = json.loads(marker.read_text())["step"]
    assert 4 <= killed_at < 60
    resumed = subprocess.run(
        [*command, "--out", str(out), "--resume"], cwd=ROOT, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(out) == losses(tmp_path / "whole")  # every step, bit for bit
    info = json.loads(marker.read_text())
    assert info["step"] == 60 and info["tokens_seen"] == 60 * 8 * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_run_on_cpu(tmp_path: Path, spanish_corpus: Path) -> None:
    recipe_path = write_recipe(tmp_path, "decoder", steps=6, eval_every=6, checkpoint_every=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "-m",
            "atencion",
            "train",
            str(recipe_path),
            "--corpus",
            str(spanish_corpus),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads((tmp_path / "out" / "checkpoint" / "training.json").read_text())
    assert info["step"] == 6 and info["hardware"].startswith("2 ×")
    assert info["command"].startswith("torchrun --nproc_per_node 2")
    assert sorted(losses(tmp_path / "out")) == list(range(1, 7))  # one line per step: only rank 0 writes
    state = tmp_path / "out" / "state" / "step-000006"
    from safetensors.torch import load_file

    assert set(load_file(str(state / "rng.safetensors"))) == {"cpu.0", "cpu.1"}  # each rank's RNG state
    load_checkpoint(tmp_path / "out" / "checkpoint")
