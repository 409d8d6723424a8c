"""The served models: references resolved once at start-up, loaded in each inference worker.

A reference is a local checkpoint directory or a Hub reference ``ORG/NAME@REVISION`` (resolved by
``modeling.hub.resolve_model`` into the local cache, then served offline). Each model is known by a name — the
directory name or ``ORG/NAME`` — and a request picks one with its optional ``"model"`` field; the default is
the first of its kind.

Two halves: ``ServedModel`` (plain data, travels to the spawned workers) and ``Catalog`` (the API process's
view: names, tokenizers and limits for validating requests before they reach a worker).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from modeling.config import ConfigError, config_from_dict
from service.errors import InputError
from service.settings import Limits, Settings


class ServeError(RuntimeError):
    """The service cannot start with these models; the message says what to change."""


@dataclass(frozen=True)
class ServedModel:
    """One model as the service knows it (no tensors: cheap to send to every worker)."""

    name: str
    kind: str  # encoder | decoder | translator
    reference: str  # as given by the user
    path: str  # the local checkpoint directory
    repo_id: str | None
    revision: str | None
    commit: str | None
    config: dict[str, Any]
    decoding: str = "eager"  # decoders: eager | compiled (settings.decoding)
    quantize: str = "none"  # decoders: none | int8 (settings.quantize)

    @property
    def max_len(self) -> int:
        return int(self.config["max_len"])

    def describe(self) -> dict[str, Any]:
        attention = self.config.get("attention", {})
        return {
            "name": self.name,
            "kind": self.kind,
            "reference": self.reference if self.repo_id else self.name,  # no local paths in a public answer
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "pattern": attention.get("pattern", "dense"),
            "config": self.config,
            **(self._decoding() if self.kind == "decoder" else {}),
        }

    def _decoding(self) -> dict[str, Any]:
        """How generation runs: the step (compiled, or eager and why) and the weights' quantization."""
        from modeling import matvec
        from modeling.decode_step import compiler_missing

        step = self.decoding
        if step == "compiled" and compiler_missing() is not None:
            step = f"eager ({compiler_missing()})"
        if matvec.probe() is not None:  # one-row products: PyTorch's, not the mat-vec kernels
            step = f"{step}; {matvec.probe()}"
        return {"decoding": step, "quantize": self.quantize}


def _read_config(path: Path, reference: str) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
        config_from_dict(data)  # validates
    except FileNotFoundError:
        raise ServeError(f"{reference}: {path} has no config.json; is it a checkpoint directory?") from None
    except (json.JSONDecodeError, ConfigError) as error:
        raise ServeError(f"{reference}: config.json is invalid ({error})") from None
    return data


def resolve(reference: str, kind: str) -> ServedModel:
    """A local directory, a shipped name or ``ORG/NAME@REVISION`` (``modeling.hub.resolve_model``; a Hub model
    is then served from the cache)."""
    from modeling.hub import HubError, resolve_model

    try:
        resolved = resolve_model(reference)
    except HubError as error:
        raise ServeError(f"--{kind} {reference}: {error}") from None
    except Exception as error:  # the Hub client's many error types: report them, don't crash
        raise ServeError(f"--{kind} {reference}: cannot resolve it ({error})") from None
    path, repo_id, revision, commit = (
        Path(resolved.path),
        resolved.repo_id,
        resolved.revision,
        resolved.commit,
    )
    name = repo_id or path.name
    config = _read_config(path, reference)
    if config.get("kind") != kind:
        raise ServeError(
            f"--{kind} {reference}: holds an {config.get('kind')}, pass it with --{config.get('kind')}"
        )
    return ServedModel(name, kind, reference, str(path), repo_id, revision, commit, config)


def resolve_all(settings: Settings) -> list[ServedModel]:
    """Every model of ``settings``; names must be unique, and at least one model must be served."""
    from service.settings import shipped_references, shipped_translators

    encoders, decoders, translators = settings.encoders, settings.decoders, settings.translators
    if not encoders and not decoders and not translators:
        (encoders, decoders), translators = shipped_references(), shipped_translators()
    if not encoders and not decoders and not translators:
        raise ServeError(
            "no models to serve: the shipped checkpoints (checkpoints/encoder-dense, …) are not there. "
            "Pass --encoder DIR_OR_ORG/NAME@REV and/or --decoder DIR_OR_ORG/NAME@REV "
            "(or set ATENCION_ENCODERS / ATENCION_DECODERS, comma-separated)."
        )
    options = {"decoding": settings.decoding, "quantize": settings.quantize}
    models = [resolve(r, "encoder") for r in encoders] + [
        dataclasses.replace(resolve(r, "decoder"), **options) for r in decoders
    ]
    models += [resolve(r, "translator") for r in translators]
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ServeError(
            f"two models share the name {duplicates[0]!r}: serve them from differently named directories"
        )
    return models


def check_startup(settings: Settings, models: list[ServedModel]) -> None:
    """Fail before any worker starts: a requested CUDA that is not there, a checkpoint that will not load.

    (A worker that fails in setup leaves LitServe waiting, with /health at 503, instead of exiting.)
    """
    import torch

    from modeling.checkpoint import CheckpointError, load_checkpoint

    if settings.accelerator == "cuda" and not torch.cuda.is_available():
        raise ServeError(
            "--accelerator cuda: torch sees no CUDA device here; use --accelerator cpu (or auto)"
        )
    for model in models:
        try:
            load_checkpoint(model.path, device="cpu")
        except CheckpointError as error:
            raise ServeError(f"{model.reference}: {error}") from None


@dataclass
class Catalog:
    """The API process's view of the served models, used to validate requests before they are queued."""

    models: list[ServedModel]
    limits: Limits
    tokenizers: dict[str, Tokenizer]

    @classmethod
    def build(cls, models: list[ServedModel], limits: Limits) -> Catalog:
        tokenizers = {m.name: Tokenizer.from_file(str(Path(m.path) / "tokenizer.json")) for m in models}
        return cls(models, limits, tokenizers)

    def names(self, kind: str | None = None) -> list[str]:
        return [m.name for m in self.models if kind is None or m.kind == kind]

    def find(self, name: str | None, kind: str | None) -> ServedModel:
        """The model called ``name`` (default: the first of ``kind``); InputError naming the known ones."""
        served = {m.name: m for m in self.models if kind is None or m.kind == kind}
        return served[model_name(served, name, kind)]


def model_name(served: Mapping[str, Any], name: str | None, kind: str | None) -> str:
    """The served model a request names (None: the first of ``served``), checked in the API process and again
    in the worker; a 404 ``unknown_model`` naming the served ones."""
    if not served:
        raise InputError(f"this server serves no {kind} model (start it with --{kind})", 404, "unknown_model")
    if name is None:
        return next(iter(served))
    if name not in served:
        known = ", ".join(served)
        raise InputError(
            f"model: unknown model {name!r}; this endpoint serves: {known}", 404, "unknown_model"
        )
    return name


_CATALOG: Catalog | None = None


def install_catalog(catalog: Catalog | None) -> None:
    """Make ``catalog`` the one request validation consults (in the API processes, forked after this)."""
    global _CATALOG
    _CATALOG = catalog


def active_catalog() -> Catalog | None:
    return _CATALOG


def load_for_worker(models: list[ServedModel], kind: str | None, device: str, threads: int) -> dict[str, Any]:
    """Load the checkpoints of ``kind`` (None: all) onto ``device``: name -> modeling.checkpoint.Checkpoint.

    ``threads``: torch's intra-op threads in this worker. Several workers each using every core spin against
    each other: on 2 busy cores, 16 greedy tokens took ~2 s with 2 threads and ~0.2 s with 1.
    """
    import torch

    from modeling.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    loaded = {
        m.name: load_checkpoint(m.path, device=device) for m in models if kind is None or m.kind == kind
    }
    if kind == "decoder":  # generation; /attention (kind None) keeps the plain model, it reads probabilities
        loaded = {m.name: prepare_decoder(m, loaded[m.name]) for m in models if m.name in loaded}
    return loaded


def prepare_decoder(model: ServedModel, checkpoint):
    """The checkpoint with its decoder as the settings ask: int8 weights, a compiled step built now (so that
    the worker reports healthy only once no request has to wait for a compiler)."""
    from modeling import matvec
    from modeling.decode_step import CompiledDecoder
    from modeling.quantization import quantize

    matvec.available()  # the mat-vec kernels, built now if need be (eager decoding uses them too)
    decoder = checkpoint.model
    if model.quantize != "none":
        decoder = quantize(decoder, model.quantize)
    if model.decoding == "compiled":
        decoder = CompiledDecoder(decoder)
        decoder.warm_up()
    return dataclasses.replace(checkpoint, model=decoder)
