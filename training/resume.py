"""The training state that ``--resume`` needs, written without pickle.

One directory per step, ``OUT/state/step-000200/``, written to a temporary name and renamed:

* ``optimizer.safetensors`` — every tensor of the optimizer state (``state.{param}.{name}``),
* ``rng.safetensors`` — each rank's CPU (and CUDA) generator state as a byte tensor (``cpu.{rank}``),
* ``state.json`` — step, data position, tokens seen, wall time, the scheduler state, the optimizer's
  param groups and any other scalar.

The model weights themselves live in the checkpoint (``modeling.checkpoint``), whose ``training.json`` names
the step; the state of that step is kept until a newer checkpoint has replaced it, so a kill at any moment
leaves a matching (checkpoint, state) pair.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.optim import Optimizer

STATE = "state"


def state_dir(out: Path, step: int) -> Path:
    return out / STATE / f"step-{step:06d}"


def save_state(
    out: Path, step: int, optimizer: Optimizer, scalars: dict[str, Any], rng: dict[str, torch.Tensor]
) -> Path:
    """Write the state of ``step`` atomically and return its directory."""
    final = state_dir(out, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        tensors, groups = _optimizer_parts(optimizer)
        save_file(tensors, str(temporary / "optimizer.safetensors"))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(temporary / "rng.safetensors"))
        data = {"step": step, "param_groups": groups, **scalars}
        (temporary / "state.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def load_state(
    out: Path, step: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(scalars, optimizer tensors, rng tensors) of ``step``; FileNotFoundError names what is missing."""
    directory = state_dir(out, step)
    for name in ("state.json", "optimizer.safetensors", "rng.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing; cannot resume step {step}")
    scalars = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    return (
        scalars,
        load_file(str(directory / "optimizer.safetensors")),
        load_file(str(directory / "rng.safetensors")),
    )


def restore_optimizer(optimizer: Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Rebuild the optimizer's state dict from its safetensors and JSON halves and load it."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def prune_states(out: Path, keep: int) -> None:
    """Delete the state directories of steps other than ``keep`` (after its checkpoint is written)."""
    for directory in (out / STATE).glob("step-*"):
        if directory.name != f"step-{keep:06d}":
            shutil.rmtree(directory, ignore_errors=True)


def _optimizer_parts(optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    full = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, values in full["state"].items():
        for name, value in values.items():
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {name!r} is not a tensor; cannot store it without pickle")
            tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
    return tensors, full["param_groups"]
