"""Service settings: command-line flags over ``ATENCION_*`` environment variables over defaults.

A container sets the environment (``ATENCION_ENCODERS=org/a@v1,org/b@v2``, ``ATENCION_PORT=8000`` …); a person
at a terminal passes flags. Every value is checked here, once, and a bad one raises ``SettingsError`` naming the
flag and the variable, so the server never starts half-configured.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeling import SHIPPED

ACCELERATORS = ("auto", "cpu", "cuda")
DECODING = (
    "eager",
    "compiled",
)  # the decoders' one-token step: plain, or torch.compile'd (modeling.decode_step)
QUANTIZATIONS = ("none", "int8")  # the decoders' linear layers (modeling.quantization)
PRECISIONS = ("auto", "fp32", "bf16")  # fill-mask; auto: bf16 where a start-up check agrees with fp32
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the hosts LitServe accepts
SHIPPED_NAMES = ("encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse", "taller")
SHIPPED_TRANSLATORS = ("translator-es-oto",)


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the flag and its environment variable."""


@dataclass(frozen=True)
class Limits:
    """Bounds on the work of one request (each also an ``ATENCION_MAX_…`` variable)."""

    max_input_tokens: int = 512  # tokens in one input (fill-mask, generate prompt, attention text)
    max_new_tokens: int = 256  # the largest max_new_tokens a generate request may ask for
    max_payload_bytes: int = 1_000_000  # request body size; larger bodies get 413
    max_batch_inputs: int = 32  # strings in one fill-mask request's "inputs" list
    max_attention_cells: int = 4_000_000  # layers × heads × tokens² a single /attention answer may carry
    max_concurrent_requests: int = 256  # requests in flight per API process; more get 429 (TGI's behaviour)
    max_running: int = 32  # sequences each decoder's engine generates at once (its running batch)
    max_waiting: int = 64  # requests queued per decoder beyond the free rows; more get 429 with Retry-After
    request_timeout: int = 0  # seconds a generation may take from arrival; 0: no limit


@dataclass(frozen=True)
class Settings:
    """Everything ``atencion serve`` needs; built by ``load_settings``."""

    encoders: tuple[str, ...] = ()  # references: a checkpoint directory or ORG/NAME@REVISION
    decoders: tuple[str, ...] = ()
    translators: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    accelerator: str = "auto"  # auto | cpu | cuda
    workers_per_device: int = 1
    max_batch_size: int = 16  # fill-mask dynamic batching
    batch_timeout: float = 0.01  # seconds a worker waits to fill a batch
    api_key: str | None = None  # X-API-Key on the API routes and /info
    decoding: str = "eager"  # eager | compiled
    quantize: str = "none"  # none | int8
    precision: str = "auto"  # fill-mask: auto | fp32 | bf16 (modeling.precision)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        _check(self.host in HOSTS, "--host", "ATENCION_HOST", f"must be one of {', '.join(HOSTS)}")
        _check(1024 <= self.port <= 65535, "--port", "ATENCION_PORT", "must be between 1024 and 65535")
        _check(
            self.accelerator in ACCELERATORS,
            "--accelerator",
            "ATENCION_ACCELERATOR",
            f"must be one of {', '.join(ACCELERATORS)}",
        )
        _check(
            1 <= self.workers_per_device <= 16,
            "--workers-per-device",
            "ATENCION_WORKERS_PER_DEVICE",
            "must be between 1 and 16",
        )
        _check(
            1 <= self.max_batch_size <= 256,
            "--max-batch-size",
            "ATENCION_MAX_BATCH_SIZE",
            "must be between 1 and 256",
        )
        _check(
            0.0 <= self.batch_timeout <= 10.0,
            "--batch-timeout",
            "ATENCION_BATCH_TIMEOUT",
            "must be between 0 and 10 seconds",
        )
        _check(self.api_key is None or len(self.api_key) >= 8, "--api-key", "ATENCION_API_KEY", "too short")
        _check(
            self.decoding in DECODING,
            "--decoding",
            "ATENCION_DECODING",
            f"must be one of {', '.join(DECODING)}",
        )
        _check(
            self.quantize in QUANTIZATIONS,
            "--quantize",
            "ATENCION_QUANTIZE",
            f"must be one of {', '.join(QUANTIZATIONS)}",
        )
        _check(
            self.precision in PRECISIONS,
            "--precision",
            "ATENCION_PRECISION",
            f"must be one of {', '.join(PRECISIONS)}",
        )
        for name, low in (
            ("max_input_tokens", 2),
            ("max_new_tokens", 1),
            ("max_payload_bytes", 256),
            ("max_batch_inputs", 1),
            ("max_attention_cells", 1),
            ("max_concurrent_requests", 1),
            ("max_running", 1),
            ("max_waiting", 0),
            ("request_timeout", 0),
        ):
            value = getattr(self.limits, name)
            _check(value >= low, name, f"ATENCION_{name.upper()}", f"must be >= {low}, got {value}")


def _check(condition: bool, flag: str, variable: str, message: str) -> None:
    if not condition:
        raise SettingsError(f"{flag} ({variable}) {message}")


def _parse(raw: str, kind: type, variable: str) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{variable}={raw!r} is not a valid {kind.__name__}") from None


def _references(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def load_settings(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from command-line ``flags`` (None = not given) over environment variables over defaults."""
    flags = dict(flags or {})
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    typed = {
        "host": str,
        "port": int,
        "accelerator": str,
        "workers_per_device": int,
        "max_batch_size": int,
        "batch_timeout": float,
        "api_key": str,
        "decoding": str,
        "quantize": str,
        "precision": str,
    }
    for name, kind in typed.items():
        variable = f"ATENCION_{name.upper()}"
        if env.get(variable, "") != "":
            values[name] = _parse(env[variable], kind, variable)
        if flags.get(name) is not None:
            values[name] = flags[name]
    for name in ("encoders", "decoders", "translators"):
        variable = f"ATENCION_{name.upper()}"
        if env.get(variable, "") != "":
            values[name] = _references(env[variable])
        if flags.get(name):
            values[name] = tuple(flags[name])
    for limit in dataclasses.fields(Limits):
        variable = f"ATENCION_{limit.name.upper()}"
        if env.get(variable, "") != "":
            limits[limit.name] = _parse(env[variable], int, variable)
    return Settings(**values, limits=Limits(**limits))


def shipped_references(root: Path = SHIPPED) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The shipped checkpoints that exist on disk: (encoders, decoders)."""
    found = [root / name for name in SHIPPED_NAMES if (root / name / "config.json").is_file()]
    kinds = {
        path: json.loads((path / "config.json").read_text(encoding="utf-8")).get("kind") for path in found
    }
    return (
        tuple(str(p) for p in found if kinds[p] == "encoder"),
        tuple(str(p) for p in found if kinds[p] == "decoder"),
    )


def shipped_translators(root: Path = SHIPPED) -> tuple[str, ...]:
    """The shipped translator checkpoints that exist on disk."""
    return tuple(str(root / n) for n in SHIPPED_TRANSLATORS if (root / n / "config.json").is_file())


def prepare_multiprocess_dir() -> Path:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory (a fresh temporary one unless already set, in
    which case stale ``*.db`` files of an earlier run are removed). Call before importing prometheus_client."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="atencion-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path
