"""Model configurations: one frozen dataclass per model, saved as ``config.json``.

Every impossible combination is rejected at construction with a ``ConfigError`` that names the field, so a
model never starts from a config it cannot honour. Change a config with ``dataclasses.replace`` — the
replacement is validated again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATTERNS = ("dense", "local", "strided", "fixed", "bigbird")
SCORES = ("dot", "general", "additive")
POSITIONS = ("learned", "sinusoidal", "rope", "relative")
NORMS = ("layer", "rms")
NORM_PLACEMENTS = ("pre", "post")
FEED_FORWARDS = ("gelu", "gelu_tanh", "swiglu")
HEAD_WINDOWS = ("same", "growing", "workshop")

# Which parameters each sparse pattern reads; a parameter set for a pattern that ignores it is an error.
PATTERN_PARAMETERS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "local": ("window",),
    "strided": ("window", "stride"),
    "fixed": ("stride", "summary"),
    "bigbird": ("window", "globals", "randoms"),
}
OPTIONAL_PARAMETERS = ("window", "stride", "summary", "globals", "randoms")


class ConfigError(ValueError):
    """A configuration that cannot be built; the message starts with the offending field's name."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def _require(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ConfigError(field_name, message)


def _one_of(value: Any, field_name: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, field_name, f"must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class AttentionConfig:
    """Which keys each query may see, and how a query scores a key.

    ``pattern`` names one layout function of ``modeling.layouts`` (Child et al. 2019 for strided/fixed,
    Zaheer et al. 2020 for BigBird); ``score`` names one score function of ``modeling.scores``.
    """

    pattern: str = "dense"  # dense | local | strided | fixed | bigbird
    score: str = "dot"  # dot (Vaswani 2017) | general (Luong 2015) | additive (Bahdanau 2014)
    block_size: int = 64  # tokens per block of the block-sparse layout
    window: int | None = (
        None  # local/strided/bigbird: how many tokens back (and forward, bidirectional) a query sees
    )
    stride: int | None = None  # strided/fixed: the period l of Child et al. 2019
    summary: int | None = None  # fixed: the c summary tokens at the end of each period
    globals: int | None = None  # bigbird: global blocks at the start of the sequence
    randoms: int | None = None  # bigbird: random key blocks per query block
    head_windows: str = "same"  # same | growing: head h looks window·(h+1) back | workshop: window·h back
    #   ("workshop": Mijangos' taller, unit 4.3 — head 0 sees only its own token, head h the h before it too)
    dense_every: int = 0  # 0: every layer uses the pattern; n > 0: every n-th layer (n-1, 2n-1, …) is dense
    seed: int = 0  # seed of the random blocks, so a layout is the same on every load

    def __post_init__(self) -> None:
        _one_of(self.pattern, "attention.pattern", PATTERNS)
        _one_of(self.score, "attention.score", SCORES)
        _one_of(self.head_windows, "attention.head_windows", HEAD_WINDOWS)
        _require(self.block_size >= 1, "attention.block_size", f"must be >= 1, got {self.block_size}")
        _require(self.dense_every >= 0, "attention.dense_every", f"must be >= 0, got {self.dense_every}")
        wanted = PATTERN_PARAMETERS[self.pattern]
        for name in OPTIONAL_PARAMETERS:
            value = getattr(self, name)
            if name in wanted:
                _require(value is not None, f"attention.{name}", f"pattern {self.pattern!r} needs it")
                low = 0 if name in ("globals", "randoms") else 1
                _require(value >= low, f"attention.{name}", f"must be >= {low}, got {value}")
            else:
                _require(
                    value is None,
                    f"attention.{name}",
                    f"is not used by pattern {self.pattern!r}; leave it unset",
                )
        if self.pattern == "fixed":
            _require(self.summary <= self.stride, "attention.summary", "must be <= attention.stride")
        if self.head_windows != "same":
            _require("window" in wanted, "attention.head_windows", f"pattern {self.pattern!r} has no window")
        if self.pattern == "dense":
            _require(self.dense_every == 0, "attention.dense_every", "only makes sense with a sparse pattern")

    def pattern_of_layer(self, layer: int) -> str:
        """The pattern layer ``layer`` uses: ``dense`` on every ``dense_every``-th layer, else ``pattern``."""
        if self.dense_every and layer % self.dense_every == self.dense_every - 1:
            return "dense"
        return self.pattern


@dataclass(frozen=True)
class TransformerConfig:
    """Fields shared by the encoder and the decoder. Not used directly: build an EncoderConfig or DecoderConfig."""

    vocab_size: int = 8000
    d_model: int = 256  # width of the residual stream
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024  # hidden width of the feed-forward
    max_len: int = 512  # longest sequence the positions support
    dropout: float = 0.1
    position: str = "learned"  # learned | sinusoidal (Vaswani 2017) | rope (Su 2021) | relative (Shaw 2018)
    rope_theta: float = 10000.0
    relative_distance: int | None = None  # relative: clip distances to ±k (Shaw 2018); None otherwise
    norm: str = "layer"  # layer | rms
    norm_eps: float = 1e-5
    norm_placement: str = "pre"  # pre: x + f(norm(x)); post: norm(x + f(x)) (Vaswani 2017)
    feed_forward: str = "gelu"  # gelu (erf) | gelu_tanh | swiglu
    bias: bool = True  # biases in the attention and feed-forward projections
    pad_token_id: int = 0
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    kind = "transformer"

    def __post_init__(self) -> None:
        if isinstance(self.attention, dict):  # from config.json
            object.__setattr__(self, "attention", AttentionConfig(**self.attention))
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            _require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _require(
            self.d_model % self.n_heads == 0,
            "n_heads",
            f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})",
        )
        _require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        _one_of(self.position, "position", POSITIONS)
        _one_of(self.norm, "norm", NORMS)
        _one_of(self.norm_placement, "norm_placement", NORM_PLACEMENTS)
        _one_of(self.feed_forward, "feed_forward", FEED_FORWARDS)
        _require(
            0 <= self.pad_token_id < self.vocab_size, "pad_token_id", "must be a token id below vocab_size"
        )
        if self.position == "rope":
            _require(self.d_head % 2 == 0, "position", f"rope needs an even head width, got {self.d_head}")
            _require(self.rope_theta > 0, "rope_theta", f"must be > 0, got {self.rope_theta}")
        if self.position == "relative":
            _require(
                self.relative_distance is not None and self.relative_distance >= 1,
                "relative_distance",
                "position 'relative' needs a clipping distance >= 1",
            )
        else:
            _require(
                self.relative_distance is None,
                "relative_distance",
                f"is only used with position 'relative', not {self.position!r}",
            )
        if self.attention.score != "dot":
            _require(
                self.position != "relative",
                "attention.score",
                "relative positions (Shaw 2018) are defined for the dot-product score only",
            )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def causal(self) -> bool:
        return self.kind == "decoder"

    # ---- config.json -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )


@dataclass(frozen=True)
class EncoderConfig(TransformerConfig):
    """A masked-LM encoder (Devlin et al. 2019's objective), bidirectional attention, tied output embeddings."""

    type_vocab_size: int = 0  # BERT's token-type (segment) embeddings; 0 = none
    embedding_norm: bool = False  # a norm right after the embeddings (BERT)
    mask_token_id: int = 4

    kind = "encoder"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.type_vocab_size >= 0, "type_vocab_size", f"must be >= 0, got {self.type_vocab_size}")
        _require(
            0 <= self.mask_token_id < self.vocab_size, "mask_token_id", "must be a token id below vocab_size"
        )


@dataclass(frozen=True)
class DecoderConfig(TransformerConfig):
    """A causal-LM decoder with a KV cache; pre-norm decoders end with a final norm."""

    tie_embeddings: bool = True  # the output projection shares the token embeddings
    bos_token_id: int = 1
    eos_token_id: int = 2

    kind = "decoder"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("bos_token_id", "eos_token_id"):
            _require(0 <= getattr(self, name) < self.vocab_size, name, "must be a token id below vocab_size")


@dataclass(frozen=True)
class TranslatorConfig(TransformerConfig):
    """An encoder–decoder (Vaswani et al. 2017): a bidirectional encoder over the source, a causal decoder with
    cross-attention over the encoder's output, target embeddings tied to the output layer.

    ``vocab_size`` is the target vocabulary; ``source_vocab_size`` 0 means one vocabulary for both sides and one
    embedding matrix shared by encoder and decoder (BART's ``shared``). The shared fields (width, heads, norm,
    positions, attention layout, …) apply to both stacks; ``encoder_layers`` 0 means as many as ``n_layers``.
    """

    source_vocab_size: int = 0  # 0: the source shares the target vocabulary and its embeddings
    encoder_layers: int = 0  # 0: as many encoder layers as decoder layers (n_layers)
    embedding_norm: bool = False  # a norm right after the embeddings of both stacks (BART)
    tie_embeddings: bool = True  # the output projection shares the target token embeddings
    bos_token_id: int = 1  # the decoder's first input
    eos_token_id: int = 2

    kind = "translator"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("source_vocab_size", "encoder_layers"):
            _require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        if self.source_vocab_size:
            _require(
                self.pad_token_id < self.source_vocab_size,
                "source_vocab_size",
                f"must hold pad_token_id {self.pad_token_id}",
            )
        for name in ("bos_token_id", "eos_token_id"):
            _require(0 <= getattr(self, name) < self.vocab_size, name, "must be a token id below vocab_size")

    @property
    def shared_vocabulary(self) -> bool:
        return self.source_vocab_size == 0

    def encoder_config(self) -> EncoderConfig:
        """The encoder stack's own view of this config (bidirectional, the source vocabulary)."""
        return EncoderConfig(
            **self._shared_fields(),
            vocab_size=self.source_vocab_size or self.vocab_size,
            n_layers=self.encoder_layers or self.n_layers,
            mask_token_id=self.pad_token_id,
            embedding_norm=self.embedding_norm,
        )

    def decoder_config(self) -> DecoderConfig:
        """The decoder stack's own view of this config (causal, the target vocabulary)."""
        return DecoderConfig(
            **self._shared_fields(),
            vocab_size=self.vocab_size,
            n_layers=self.n_layers,
            tie_embeddings=self.tie_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )

    def _shared_fields(self) -> dict[str, Any]:
        skip = {"vocab_size", "n_layers"}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(TransformerConfig) if f.name not in skip
        }


ModelConfig = EncoderConfig | DecoderConfig | TranslatorConfig
KINDS: dict[str, type[TransformerConfig]] = {
    "encoder": EncoderConfig,
    "decoder": DecoderConfig,
    "translator": TranslatorConfig,
}


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Build (and so validate) a config from its ``config.json`` form; unknown fields are errors."""
    data = dict(data)
    kind = data.pop("kind", None)
    _require(kind in KINDS, "kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    cls = KINDS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    _require(not unknown, unknown[0] if unknown else "kind", f"unknown field for a {kind} config")
    if isinstance(data.get("attention"), dict):
        attn_known = {f.name for f in dataclasses.fields(AttentionConfig)}
        bad = sorted(set(data["attention"]) - attn_known)
        _require(not bad, f"attention.{bad[0]}" if bad else "attention", "unknown field")
    try:
        return cls(**data)
    except TypeError as error:  # a wrong type that the checks above could not name
        raise ConfigError(kind, str(error)) from error


def load_config(path: str | Path) -> ModelConfig:
    """Read and validate a ``config.json``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError("config.json", f"is not valid JSON ({error})") from error
    _require(isinstance(data, dict), "config.json", "must hold a JSON object")
    return config_from_dict(data)
