"""A recipe: everything a training run needs, read from TOML (``training/recipes/*.toml``).

    [model]            kind = "encoder" | "decoder", then EncoderConfig / DecoderConfig fields
    [model.attention]  AttentionConfig fields
    [tokenizer]        kind = "wordpiece" | "bpe", vocab_size
    [data]             seq_len, validation_fraction, seed
    [training]         batch_size, steps (or tokens), warmup, noam_factor, clip, weight_decay, …

The vocabulary size and the special-token ids of the model come from the trained tokenizer, never from
``[model]``. Overrides are dotted keys (``training.steps=100``, ``model.attention.window=64``) typed by the
field they set; an unknown key or a value of the wrong type is a ``RecipeError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeling.config import AttentionConfig, ConfigError, ModelConfig, config_from_dict

RECIPES = Path(__file__).resolve().parent / "recipes"
FROM_TOKENIZER = ("vocab_size", "pad_token_id", "mask_token_id", "bos_token_id", "eos_token_id")
PRECISIONS = ("auto", "bf16", "fp32")


class RecipeError(ValueError):
    """A recipe or override that cannot be used; the message starts with the offending key."""


@dataclass(frozen=True)
class TokenizerRecipe:
    kind: str = "wordpiece"  # wordpiece (encoder) | bpe (decoder)
    vocab_size: int = 8000


@dataclass(frozen=True)
class DataRecipe:
    seq_len: int = 256  # tokens per training sequence
    validation_fraction: float = 0.05  # share of the documents held out (at least one)
    seed: int = 0  # seed of the document split


@dataclass(frozen=True)
class TrainingRecipe:
    batch_size: int = 32  # sequences per optimizer step, over all ranks
    steps: int = 1000  # optimizer steps (ignored when tokens > 0)
    tokens: int = 0  # token budget; > 0 sets steps = ceil(tokens / (batch_size · seq_len))
    warmup: int = 400  # Noam warm-up steps
    noam_factor: float = 1.0  # Noam scale factor
    cooldown: int = 0  # last steps over which the rate falls linearly to 0 (0 = none; Zhai et al. 2022)
    beta1: float = 0.9
    beta2: float = 0.98  # Vaswani 2017
    eps: float = 1e-9
    clip: float = 1.0  # max global gradient norm; 0 = no clipping
    weight_decay: float = 0.01  # AdamW, on matrices only (not norms, biases, embeddings)
    eval_every: int = 200  # steps between evaluations (0 = only at the end)
    eval_batches: int = 10  # validation batches per evaluation
    checkpoint_every: int = 200  # steps between resumable checkpoints (0 = only at the end)
    log_every: int = 10  # steps between metrics.jsonl lines
    precision: str = "auto"  # auto (bf16 autocast where the CPU/GPU supports it) | bf16 | fp32
    seed: int = 0  # weights, dropout, data order, masking
    threads: int = 0  # torch threads (0 = torch's default)
    mask_probability: float = 0.15  # masked LM: share of the tokens chosen for prediction (Devlin 2019)
    mask_token_share: float = 0.8  # of the chosen tokens, the share replaced by [MASK] ...
    random_token_share: float = 0.1  # ... and by a random token (the rest stay unchanged)


@dataclass(frozen=True)
class Recipe:
    model: ModelConfig
    tokenizer: TokenizerRecipe = field(default_factory=TokenizerRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    training: TrainingRecipe = field(default_factory=TrainingRecipe)

    @property
    def total_steps(self) -> int:
        if self.training.tokens > 0:
            return math.ceil(self.training.tokens / (self.training.batch_size * self.data.seq_len))
        return self.training.steps

    def to_dict(self) -> dict[str, Any]:
        model = self.model.to_dict()
        for name in FROM_TOKENIZER:
            model.pop(name, None)
        return {
            "model": model,
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "data": dataclasses.asdict(self.data),
            "training": dataclasses.asdict(self.training),
        }


SECTIONS = {"tokenizer": TokenizerRecipe, "data": DataRecipe, "training": TrainingRecipe}


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file, or the shipped recipe of that name (``encoder-dense`` → recipes/encoder-dense.toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
    raise RecipeError(f"recipe: {name_or_path!r} is neither a file nor a shipped recipe ({names})")


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a TOML recipe, apply ``key=value`` overrides, validate everything."""
    path = recipe_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RecipeError(f"recipe: {path} is not valid TOML ({error})") from error
    for item in overrides:
        apply_override(data, item)
    return recipe_from_dict(data)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from its dictionary form (as in TOML or training.json)."""
    unknown = sorted(set(data) - {"model", *SECTIONS})
    if unknown:
        raise RecipeError(f"{unknown[0]}: unknown recipe section (expected model, {', '.join(SECTIONS)})")
    model = dict(data.get("model") or {})
    for name in FROM_TOKENIZER:
        if name in model:
            raise RecipeError(f"model.{name}: set by the trained tokenizer; use tokenizer.vocab_size instead")
    parts = {}
    for section, cls in SECTIONS.items():
        values = dict(data.get(section) or {})
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if key not in hints:
                raise RecipeError(f"{section}.{key}: unknown key")
            values[key] = _coerce(value, hints[key], f"{section}.{key}")
        parts[section] = cls(**values)
    kind = model.get("kind")
    if kind not in ("encoder", "decoder"):
        raise RecipeError(f"model.kind: must be 'encoder' or 'decoder', got {kind!r}")
    cls = _config_class(kind)
    hints = typing.get_type_hints(cls)
    for key, value in list(model.items()):
        if key == "kind":
            continue
        if key == "attention":
            model[key] = _attention(value)
        elif key not in hints:
            raise RecipeError(f"model.{key}: unknown key for a {kind} config")
        else:
            model[key] = _coerce(value, hints[key], f"model.{key}")
    model["vocab_size"] = parts["tokenizer"].vocab_size
    if kind == "encoder":
        model["mask_token_id"] = 4
    try:
        config = config_from_dict(model)
    except ConfigError as error:
        raise RecipeError(f"model.{error}") from error
    recipe = Recipe(model=config, **parts)
    _validate(recipe)
    return recipe


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in the nested recipe dictionary (typed later, when the recipe is built)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"override {item!r}: expected KEY=VALUE, e.g. training.steps=100")
    parts = key.split(".")
    if parts[0] not in ("model", *SECTIONS) or len(parts) < 2:
        raise RecipeError(f"{key}: unknown key (start with model., tokenizer., data. or training.)")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"{key}: {part} is not a section")
    node[parts[-1]] = _OverrideValue(value.strip())


class _OverrideValue(str):
    """A value typed on the command line: parsed by the type of the field it sets."""


def _attention(values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise RecipeError("model.attention: must be a table")
    hints = typing.get_type_hints(AttentionConfig)
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise RecipeError(f"model.attention.{key}: unknown key")
        out[key] = _coerce(value, hints[key], f"model.attention.{key}")
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` (int, float, bool, str or X | None); strings come from the CLI."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if type(None) in options and (
        value is None or (isinstance(value, _OverrideValue) and value.lower() in ("none", "null"))
    ):
        return None
    target = next(t for t in options if t is not type(None))
    wanted = getattr(target, "__name__", str(target))
    if isinstance(value, _OverrideValue):
        try:
            if target is bool:
                if value.lower() not in ("true", "false"):
                    raise ValueError
                return value.lower() == "true"
            return target(value) if target is not int else int(value, 10)
        except ValueError:
            raise RecipeError(f"{key}: expected {wanted}, got {str(value)!r}") from None
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, target) or (target is int and isinstance(value, bool)):
        raise RecipeError(f"{key}: expected {wanted}, got {value!r}")
    return value


def _config_class(kind: str) -> type:
    from modeling.config import KINDS

    return KINDS[kind]


def _validate(recipe: Recipe) -> None:
    t, d = recipe.training, recipe.data
    expected = "wordpiece" if recipe.model.kind == "encoder" else "bpe"
    if recipe.tokenizer.kind != expected:
        raise RecipeError(
            f"tokenizer.kind: a {recipe.model.kind} needs {expected!r}, got {recipe.tokenizer.kind!r}"
        )
    if recipe.tokenizer.vocab_size < 300:
        raise RecipeError(f"tokenizer.vocab_size: must be >= 300, got {recipe.tokenizer.vocab_size}")
    if d.seq_len < 4 or d.seq_len > recipe.model.max_len:
        raise RecipeError(
            f"data.seq_len: must be in [4, model.max_len={recipe.model.max_len}], got {d.seq_len}"
        )
    if not 0.0 < d.validation_fraction < 1.0:
        raise RecipeError(f"data.validation_fraction: must be in (0, 1), got {d.validation_fraction}")
    for name in ("batch_size", "warmup", "eval_batches", "log_every"):
        if getattr(t, name) < 1:
            raise RecipeError(f"training.{name}: must be >= 1, got {getattr(t, name)}")
    for name in ("steps", "tokens", "eval_every", "checkpoint_every", "threads"):
        if getattr(t, name) < 0:
            raise RecipeError(f"training.{name}: must be >= 0, got {getattr(t, name)}")
    if recipe.total_steps < 1:
        raise RecipeError("training.steps: must be >= 1 (or set training.tokens)")
    if not 0 <= t.cooldown <= recipe.total_steps:
        raise RecipeError(
            f"training.cooldown: must be in [0, {recipe.total_steps}] (the run's steps), got {t.cooldown}; "
            "a shorter run needs a shorter cooldown too, e.g. training.cooldown=0"
        )
    for name in ("noam_factor", "eps"):
        if getattr(t, name) <= 0:
            raise RecipeError(f"training.{name}: must be > 0, got {getattr(t, name)}")
    for name in ("clip", "weight_decay"):
        if getattr(t, name) < 0:
            raise RecipeError(f"training.{name}: must be >= 0, got {getattr(t, name)}")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(t, name) < 1.0:
            raise RecipeError(f"training.{name}: must be in [0, 1), got {getattr(t, name)}")
    if not 0.0 < t.mask_probability < 1.0:
        raise RecipeError(f"training.mask_probability: must be in (0, 1), got {t.mask_probability}")
    for name in ("mask_token_share", "random_token_share"):
        if not 0.0 <= getattr(t, name) <= 1.0:
            raise RecipeError(f"training.{name}: must be in [0, 1], got {getattr(t, name)}")
    if t.mask_token_share + t.random_token_share > 1.0:
        raise RecipeError(
            "training.random_token_share: mask_token_share + random_token_share must be <= 1, got "
            f"{t.mask_token_share} + {t.random_token_share}"
        )
    if t.precision not in PRECISIONS:
        raise RecipeError(f"training.precision: must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
