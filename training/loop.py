"""The training loop: AdamW + the Noam schedule, bf16 autocast, clipping, evaluation, atomic resumable
checkpoints, DDP.

    OUT/data/        the tokenizer and the tokenized corpus (cache, .npy)
    OUT/checkpoint/  the model checkpoint (config.json, model.safetensors, tokenizer.json, training.json)
    OUT/state/       optimizer, scheduler, data position and RNG states of the checkpoint's step (no pickle)
    OUT/metrics.jsonl, OUT/loss.png

Weight decay (Loshchilov & Hutter 2019) applies to the matrices of the projections only: norms, biases and
embeddings (token, position, and so the tied output head) are excluded — decaying embeddings pulls rare
tokens' vectors to zero for no regularisation benefit. Exact resume: the data order is a function of
(seed, epoch), the masking generator of (seed, step, rank), and the dropout RNG is restored per rank.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from modeling.checkpoint import build_model, load_checkpoint, save_checkpoint
from modeling.config import ModelConfig
from modeling.precision import cpu_info
from training import ddp
from training.data import epoch_order, mask_tokens, pack_decoder, pack_encoder, prepare_corpus, shard, shift
from training.evaluate import decoder_metrics, encoder_metrics
from training.objectives import CausalLM, MaskedLM
from training.precision import autocast_for
from training.recipe import Recipe
from training.resume import load_state, prune_states, restore_optimizer, save_state
from training.schedule import noam_scheduler
from training.tokenizer import all_special_ids, special_ids


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message says what to do."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on ≥2-D weights; none on norms, biases, or embeddings of tokens and positions."""
    embedding_like = [
        m
        for m in model.modules()
        if isinstance(m, nn.Embedding) or type(m).__name__.endswith(("Positions", "Embeddings"))
    ]
    excluded = {id(p) for m in embedding_like for p in m.parameters()}
    decay, rest = [], []
    for _, p in model.named_parameters():  # a tied parameter appears once
        (decay if p.ndim >= 2 and id(p) not in excluded else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def hardware(device: torch.device, world: int) -> str:
    cpu = cpu_info()[0]
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
    )
    return f"{world} × {where}, torch {torch.__version__}"


def train(
    recipe: Recipe,
    corpus: str | Path,
    out: str | Path,
    *,
    overrides: list[str] = (),
    resume: bool = False,
    command: str = "",
) -> Path:
    """Train ``recipe`` on the ``corpus`` folder into ``out``; returns the checkpoint directory."""
    d = ddp.setup()
    try:
        return _train(recipe, Path(corpus), Path(out), list(overrides), resume, command, d)
    finally:
        ddp.shutdown(d)


@dataclass
class Run:
    """What a run holds fixed from start to end: its inputs, its data, its model and optimizer."""

    recipe: Recipe
    corpus: Path
    out: Path
    overrides: list[str]
    command: str
    d: Any  # training.ddp's process description: rank, world, device, main
    data: Any  # training.data's prepared corpus
    config: ModelConfig
    specials: list[int]
    train_rows: torch.Tensor  # (R, L) encoder, (R, L + 1) decoder
    val_rows: torch.Tensor
    per_rank: int  # rows per step on this process
    model: nn.Module
    wrapped: nn.Module  # the objective, in DistributedDataParallel when there are several processes
    optimizer: torch.optim.Optimizer
    scheduler: Any
    autocast: Any
    precision: str

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def log(self, record: dict) -> None:
        if self.d.main:
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


@dataclass
class RunState:
    """What changes step by step; all of it is saved with a checkpoint, so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    offset: int = 0  # rows of this epoch's order already used
    tokens_seen: int = 0
    wall: float = 0.0  # training seconds (evaluation and checkpointing excluded)
    last_eval: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    loss: float  # averaged over the processes
    lr: float  # the learning rate the step used
    grad_norm: float  # before clipping
    seconds: float


def _train(
    recipe: Recipe, corpus: Path, out: Path, overrides: list[str], resume: bool, command: str, d
) -> Path:
    run, state = setup(recipe, corpus, out, overrides, resume, command, d)
    t, total = recipe.training, recipe.total_steps
    order = shard(epoch_order(run.train_rows.shape[0], t.seed, state.epoch), d.rank, d.world)
    if order.numel() < run.per_rank:
        raise TrainingError(
            f"{run.train_rows.shape[0]} training sequences are too few for a batch of {t.batch_size}"
        )
    run.model.train()
    bar = tqdm(total=total, initial=state.step, disable=not d.main, mininterval=1.0, dynamic_ncols=True)
    window = [0, 0.0]  # tokens and training seconds since the last metrics line: tokens/s over the window
    while state.step < total:
        if state.offset + run.per_rank > order.numel():
            state.epoch, state.offset = state.epoch + 1, 0
            order = shard(epoch_order(run.train_rows.shape[0], t.seed, state.epoch), d.rank, d.world)
        result = train_step(run, state, order)
        window[0] += t.batch_size * recipe.data.seq_len
        window[1] += result.seconds
        bar.update(1)
        bar.set_postfix(
            loss=f"{result.loss:.3f}",
            lr=f"{result.lr:.2e}",
            tok_s=f"{window[0] / window[1]:,.0f}",
            refresh=False,
        )
        if state.step % t.log_every == 0 or state.step == total:
            run.log(
                {
                    "step": state.step,
                    "loss": result.loss,
                    "lr": result.lr,
                    "grad_norm": result.grad_norm,
                    "tokens": state.tokens_seen,
                    "tokens_per_s": window[0] / window[1],
                    "wall_time_s": round(state.wall, 3),
                }
            )
            window[:] = [0, 0.0]
        if (t.eval_every and state.step % t.eval_every == 0) or state.step == total:
            if d.main:
                state.last_eval = evaluate(run)
                run.log({"step": state.step, "split": "validation", **state.last_eval})
                bar.write(
                    f"step {state.step}: validation "
                    + ", ".join(f"{k} {v:.4g}" for k, v in state.last_eval.items())
                )
            ddp.barrier(d)
        if (t.checkpoint_every and state.step % t.checkpoint_every == 0) or state.step == total:
            save_run(run, state)
    bar.close()
    if d.main:
        plot_losses(run.metrics_path, out / "loss.png")
    return run.checkpoint_dir


# ---- setup ----------------------------------------------------------------------------------------------------
def setup(
    recipe: Recipe, corpus: Path, out: Path, overrides: list[str], resume: bool, command: str, d
) -> tuple[Run, RunState]:
    """Check the arguments, tokenize and pack the corpus, build the model and optimizer; with ``resume``,
    restore them and the state from the last checkpoint."""
    t, kind = recipe.training, recipe.model.kind
    if t.threads:
        torch.set_num_threads(t.threads)
    ckpt_dir = out / "checkpoint"
    if resume and not (ckpt_dir / "training.json").is_file():
        raise TrainingError(f"--resume: {ckpt_dir} holds no checkpoint to resume from")
    if not resume and ckpt_dir.exists():
        raise TrainingError(
            f"{out} already holds a run: pass --resume to continue it, or choose another --out"
        )
    if t.batch_size % d.world:
        raise TrainingError(
            f"training.batch_size={t.batch_size} must be divisible by the {d.world} processes"
        )
    data = _prepare_corpus(recipe, corpus, out, d)
    tokenizer, L = data.tokenizer, recipe.data.seq_len
    config = dataclasses.replace(recipe.model, **special_ids(tokenizer))
    if kind == "encoder":
        vocab = tokenizer.get_vocab()
        train_rows = pack_encoder(data.train_stream, L, vocab["[CLS]"], vocab["[SEP]"])  # (R, L)
        val_rows = pack_encoder(data.validation_stream, L, vocab["[CLS]"], vocab["[SEP]"])
    else:
        train_rows, val_rows = (
            pack_decoder(data.train_stream, L),
            pack_decoder(data.validation_stream, L),
        )  # (R, L + 1)
    per_rank = t.batch_size // d.world
    val_rows = val_rows[: t.eval_batches * per_rank]

    torch.manual_seed(t.seed)
    model = build_model(config).to(d.device)
    objective = MaskedLM(model) if kind == "encoder" else CausalLM(model)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, t.weight_decay), lr=1.0, betas=(t.beta1, t.beta2), eps=t.eps
    )
    scheduler = noam_scheduler(
        optimizer,
        d_model=config.d_model,
        warmup=t.warmup,
        factor=t.noam_factor,
        total=recipe.total_steps,
        cooldown_steps=t.cooldown,
    )
    run = Run(
        recipe, corpus, out, overrides, command, d, data, config, all_special_ids(tokenizer), train_rows,
        val_rows, per_rank, model, objective, optimizer, scheduler, *autocast_for(t.precision, d.device),
    )  # fmt: skip
    state = RunState()
    if resume:
        state = _restore(run)
    elif d.main and run.metrics_path.exists():
        run.metrics_path.unlink()
    if d.active:
        run.wrapped = DistributedDataParallel(objective)
    return run, state


def _prepare_corpus(recipe: Recipe, corpus: Path, out: Path, d) -> Any:
    """Rank 0 tokenizes; the others wait, then read its cache (or stop with it on an error)."""
    cache = dict(kind=recipe.tokenizer.kind, vocab_size=recipe.tokenizer.vocab_size)
    cache |= dict(fraction=recipe.data.validation_fraction, seed=recipe.data.seed)
    failure: Exception | None = None
    if d.main:
        try:
            data = prepare_corpus(corpus, out / "data", build=True, **cache)
        except Exception as error:  # noqa: BLE001 - re-raised below, after telling the other ranks
            failure = error
    if float(ddp.mean(torch.tensor(float(failure is not None)), d)) > 0:
        if failure is not None:
            raise failure
        raise TrainingError("rank 0 could not prepare the corpus (see its error)")
    if not d.main:
        data = prepare_corpus(corpus, out / "data", build=False, **cache)
    return data


def _restore(run: Run) -> RunState:
    """The model, optimizer, scheduler, data position and RNG of the last checkpoint; metrics logged after it
    are dropped."""
    d, ckpt_dir = run.d, run.checkpoint_dir
    info = json.loads((ckpt_dir / "training.json").read_text(encoding="utf-8"))
    loaded = load_checkpoint(ckpt_dir)
    if loaded.config != run.config:
        raise TrainingError(
            f"--resume: {ckpt_dir}'s model config differs from this recipe's; resume with the same model"
        )
    run.model.load_state_dict(loaded.model.state_dict())
    step = info["step"]
    scalars, tensors, rng = load_state(run.out, step)
    restore_optimizer(run.optimizer, tensors, scalars["param_groups"])
    run.scheduler.load_state_dict(scalars["scheduler"])
    state = RunState(
        step, scalars["epoch"], scalars["offset"], scalars["tokens_seen"], scalars["wall_time_s"]
    )
    if scalars["world"] != d.world:
        raise TrainingError(
            f"--resume: the run used {scalars['world']} processes, not {d.world}; the data order would differ"
        )
    torch.set_rng_state(rng[f"cpu.{d.rank}"])
    if d.device.type == "cuda" and f"cuda.{d.rank}" in rng:
        torch.cuda.set_rng_state(rng[f"cuda.{d.rank}"])
    if d.main and run.metrics_path.exists():  # drop what was logged after the checkpoint
        lines = run.metrics_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        run.metrics_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return state


# ---- one step, evaluation, checkpoint ---------------------------------------------------------------------------
def train_step(run: Run, state: RunState, order: torch.Tensor) -> StepResult:
    """One optimizer step on this process's next ``per_rank`` rows of ``order``; advances ``state``."""
    t, d, config = run.recipe.training, run.d, run.config
    rows = run.train_rows[order[state.offset : state.offset + run.per_rank]].to(
        d.device
    )  # (b, L) or (b, L + 1)
    state.offset += run.per_rank
    started = time.perf_counter()
    with run.autocast():
        if config.kind == "encoder":
            generator = torch.Generator().manual_seed((t.seed * 1_000_003 + state.step) * 1024 + d.rank)
            m = mask_tokens(
                rows.cpu(),
                mask_id=config.mask_token_id,
                vocab_size=config.vocab_size,
                special_ids=run.specials,
                generator=generator,
                probability=t.mask_probability,
                replace=(t.mask_token_share, t.random_token_share),
            )
            loss = run.wrapped(m.inputs.to(d.device), m.positions.to(d.device), m.labels.to(d.device))
        else:
            loss = run.wrapped(*shift(rows))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.clip if t.clip > 0 else float("inf"))
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    state.step += 1
    state.tokens_seen += t.batch_size * run.recipe.data.seq_len
    loss_value = float(ddp.mean(loss, d))
    seconds = time.perf_counter() - started
    state.wall += seconds
    return StepResult(loss_value, lr, float(grad_norm), seconds)


def evaluate(run: Run) -> dict:
    """Held-out metrics of the model as it is now (then back in training mode)."""
    t = run.recipe.training
    if run.config.kind == "encoder":
        metrics = encoder_metrics(
            run.model, run.val_rows, batch_size=run.per_rank, specials=run.specials, seed=t.seed,
            autocast=run.autocast,
        )  # fmt: skip
    else:
        metrics = decoder_metrics(run.model, run.val_rows, batch_size=run.per_rank, autocast=run.autocast)
    run.model.train()
    return metrics


def save_run(run: Run, state: RunState) -> None:
    """The checkpoint (with ``training.json``) and the resume state of ``state.step``; every rank's RNG."""
    d, recipe, data = run.d, run.recipe, run.data
    rng = {f"cpu.{r}": s for r, s in enumerate(ddp.gather(torch.get_rng_state(), d))}
    if d.device.type == "cuda":
        rng |= {f"cuda.{r}": s for r, s in enumerate(ddp.gather(torch.cuda.get_rng_state(), d))}
    if d.main:
        scalars = dict(
            epoch=state.epoch, offset=state.offset, tokens_seen=state.tokens_seen, wall_time_s=state.wall,
            world=d.world,
        )  # fmt: skip
        save_state(
            run.out, state.step, run.optimizer, scalars | {"scheduler": run.scheduler.state_dict()}, rng
        )
        info = {
            "recipe": recipe.to_dict(),
            "overrides": run.overrides,
            "command": run.command,
            "corpus": str(run.corpus.resolve()),
            "run_dir": str(run.out.resolve()),
            "split": {
                "seed": recipe.data.seed,
                "validation_fraction": recipe.data.validation_fraction,
                "train": data.train,
                "validation": data.validation,
            },
            "data": {
                "train_tokens": int(data.train_stream.numel()),
                "validation_tokens": int(data.validation_stream.numel()),
            },
            "step": state.step,
            "total_steps": recipe.total_steps,
            "complete": state.step >= recipe.total_steps,
            "tokens_seen": state.tokens_seen,
            "wall_time_s": round(state.wall, 1),
            "hardware": hardware(d.device, d.world),
            "precision": run.precision,
            "validation": state.last_eval,
        }
        save_checkpoint(run.model, data.tokenizer, run.checkpoint_dir, extra={"training.json": info})
        prune_states(run.out, state.step)
    ddp.barrier(d)


def plot_losses(metrics_path: Path, png: Path) -> None:
    """Training and validation loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines()]
    train = [(r["step"], r["loss"]) for r in records if "split" not in r]
    valid = [(r["step"], r["loss"]) for r in records if r.get("split") == "validation"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="training", linewidth=1)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
