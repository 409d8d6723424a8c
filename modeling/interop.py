"""Hugging Face transformers interop: our configs and weights ↔ ``BertForMaskedLM`` and ``LlamaForCausalLM``.

An ``EncoderConfig`` is a BERT when it is post-norm with learned positions, LayerNorm, erf-GELU, biases and an
embedding norm; a ``DecoderConfig`` is a Llama when it is pre-norm with RoPE, RMSNorm and SwiGLU. Both need
dense attention with the scaled dot-product score. Only those configs are mapped, because only those give the
same logits in transformers' own classes; anything else raises ``InteropError`` naming the field.

Weight names (ours → theirs); our fused ``qkv`` is their ``query``/``key``/``value`` (``q/k/v_proj``) stacked:

    BERT                                              Llama
    embeddings.tokens   bert.embeddings.word_…        embeddings.tokens   model.embed_tokens
    embeddings.positions  …position_embeddings        blocks.i.attention.out  model.layers.i.self_attn.o_proj
    embeddings.types    …token_type_embeddings        blocks.i.attention_norm  ….input_layernorm
    embeddings.norm     …LayerNorm                    blocks.i.feed_forward_norm  ….post_attention_layernorm
    blocks.i.attention.out  …layer.i.attention.output.dense    blocks.i.feed_forward.{gate,up,down}  ….mlp.*_proj
    blocks.i.attention_norm  …attention.output.LayerNorm        final_norm  model.norm
    blocks.i.feed_forward.up/down  …intermediate.dense / output.dense    lm_head  lm_head
    blocks.i.feed_forward_norm  …output.LayerNorm
    head.dense / head.norm / head.bias  cls.predictions.transform.dense / .LayerNorm / cls.predictions.bias

transformers is imported only when a function needs it (``pip install 'atencion[export]'``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modeling.config import AttentionConfig, DecoderConfig, EncoderConfig, ModelConfig

Weights = dict[str, Tensor]


class InteropError(ValueError):
    """A config or model that transformers cannot express exactly; the message starts with the field's name."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def require_transformers() -> Any:
    """The ``transformers`` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "transformers is not installed: pip install 'atencion[export]' (or pip install transformers)"
        ) from error
    return transformers


# ---- configs -----------------------------------------------------------------------------------------------------
# What transformers' class computes, field by field: a config of ours maps only when it matches all of them.
EXPRESSIBLE: dict[str, tuple[str, dict[str, Any]]] = {
    "encoder": (
        "BertForMaskedLM",
        {"attention.pattern": "dense", "attention.score": "dot", "position": "learned", "norm": "layer",
         "norm_placement": "post", "feed_forward": "gelu", "bias": True, "embedding_norm": True},
    ),
    "decoder": (
        "LlamaForCausalLM",
        {"attention.pattern": "dense", "attention.score": "dot", "position": "rope", "norm": "rms",
         "norm_placement": "pre", "feed_forward": "swiglu"},
    ),
}  # fmt: skip


def check_expressible(config: ModelConfig, kind: str) -> None:
    """``InteropError`` naming the first field of ``config`` that the ``kind``'s transformers class lacks."""
    target, wanted = EXPRESSIBLE[kind]
    if config.kind != kind:
        raise InteropError("kind", f"{target} needs {kind!r}, this model is {config.kind!r}")
    for field_name, value in wanted.items():
        have: Any = config
        for part in field_name.split("."):
            have = getattr(have, part)
        if have != value:
            raise InteropError(field_name, f"{target} needs {value!r}, this model has {have!r}")


def bert_config(config: EncoderConfig) -> Any:
    """Our encoder config as a ``BertConfig``; ``type_vocab_size`` 0 becomes one all-zero type embedding."""
    check_expressible(config, "encoder")
    transformers = require_transformers()
    return transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, intermediate_size=config.d_ff, hidden_act="gelu",
        hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
        max_position_embeddings=config.max_len, type_vocab_size=max(config.type_vocab_size, 1),
        layer_norm_eps=config.norm_eps, pad_token_id=config.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip


def llama_config(config: DecoderConfig) -> Any:
    """Our decoder config as a ``LlamaConfig`` (one key/value head per query head, no grouping)."""
    check_expressible(config, "decoder")
    transformers = require_transformers()
    return transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads, head_dim=config.d_head, hidden_act="silu",
        max_position_embeddings=config.max_len, rms_norm_eps=config.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        attention_bias=config.bias, mlp_bias=config.bias, attention_dropout=config.dropout,
        tie_word_embeddings=config.tie_embeddings, pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
    )  # fmt: skip


def hf_config(config: ModelConfig) -> Any:
    """``BertConfig`` for an encoder, ``LlamaConfig`` for a decoder; ``InteropError`` names what does not fit."""
    return bert_config(config) if config.kind == "encoder" else llama_config(config)


def _rope_theta(hf: Any) -> float:
    parameters = getattr(hf, "rope_parameters", None) or {}
    rope_type = parameters.get("rope_type", "default")
    if rope_type != "default":
        raise InteropError(
            "rope_parameters.rope_type", f"only 'default' RoPE maps to ours, got {rope_type!r}"
        )
    return float(parameters.get("rope_theta", getattr(hf, "rope_theta", 10000.0)))


def config_from_hf(hf: Any) -> ModelConfig:
    """A ``BertConfig`` or ``LlamaConfig`` as our config; fields ours cannot express raise ``InteropError``."""
    if hf.model_type == "bert":
        if hf.hidden_act != "gelu":
            raise InteropError("hidden_act", f"our BERT head uses erf GELU, got {hf.hidden_act!r}")
        if getattr(hf, "position_embedding_type", "absolute") != "absolute":
            raise InteropError("position_embedding_type", "only 'absolute' maps to ours")
        return EncoderConfig(
            vocab_size=hf.vocab_size, d_model=hf.hidden_size, n_layers=hf.num_hidden_layers,
            n_heads=hf.num_attention_heads, d_ff=hf.intermediate_size, max_len=hf.max_position_embeddings,
            dropout=hf.hidden_dropout_prob, position="learned", norm="layer", norm_eps=hf.layer_norm_eps,
            norm_placement="post", feed_forward="gelu", bias=True, pad_token_id=hf.pad_token_id or 0,
            type_vocab_size=hf.type_vocab_size, embedding_norm=True, attention=AttentionConfig(),
        )  # fmt: skip
    if hf.model_type == "llama":
        for name, wanted in (
            ("num_key_value_heads", hf.num_attention_heads),
            ("head_dim", hf.hidden_size // hf.num_attention_heads),
            ("hidden_act", "silu"),
            ("attention_bias", getattr(hf, "mlp_bias", False)),
        ):
            if getattr(hf, name, wanted) != wanted:
                raise InteropError(name, f"ours needs {wanted!r}, got {getattr(hf, name)!r}")
        return DecoderConfig(
            vocab_size=hf.vocab_size, d_model=hf.hidden_size, n_layers=hf.num_hidden_layers,
            n_heads=hf.num_attention_heads, d_ff=hf.intermediate_size, max_len=hf.max_position_embeddings,
            dropout=hf.attention_dropout, position="rope", rope_theta=_rope_theta(hf), norm="rms",
            norm_eps=hf.rms_norm_eps, norm_placement="pre", feed_forward="swiglu", bias=hf.attention_bias,
            tie_embeddings=hf.tie_word_embeddings, pad_token_id=hf.pad_token_id or 0,
            bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id, attention=AttentionConfig(),
        )  # fmt: skip
    raise InteropError("model_type", f"only 'bert' and 'llama' map to ours, got {hf.model_type!r}")


# ---- weights -------------------------------------------------------------------------------------------------------
def _bert_names(config: EncoderConfig) -> list[tuple[str, str]]:
    """(ours, theirs) for every BERT tensor except the fused q/k/v (and the types when ours has none)."""
    e, p = "bert.embeddings.", "cls.predictions."
    pairs = [
        ("embeddings.tokens.weight", e + "word_embeddings.weight"),
        ("embeddings.positions.weight", e + "position_embeddings.weight"),
        ("embeddings.types.weight", e + "token_type_embeddings.weight"),
        ("embeddings.norm.weight", e + "LayerNorm.weight"),
        ("embeddings.norm.bias", e + "LayerNorm.bias"),
        ("head.dense.weight", p + "transform.dense.weight"),
        ("head.dense.bias", p + "transform.dense.bias"),
        ("head.norm.weight", p + "transform.LayerNorm.weight"),
        ("head.norm.bias", p + "transform.LayerNorm.bias"),
        ("head.bias", p + "bias"),
    ]
    if not config.type_vocab_size:
        pairs.remove(("embeddings.types.weight", e + "token_type_embeddings.weight"))
    for i in range(config.n_layers):
        o, h = f"blocks.{i}.", f"bert.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            pairs += [
                (f"{o}attention.out.{kind}", f"{h}attention.output.dense.{kind}"),
                (f"{o}attention_norm.{kind}", f"{h}attention.output.LayerNorm.{kind}"),
                (f"{o}feed_forward.up.{kind}", f"{h}intermediate.dense.{kind}"),
                (f"{o}feed_forward.down.{kind}", f"{h}output.dense.{kind}"),
                (f"{o}feed_forward_norm.{kind}", f"{h}output.LayerNorm.{kind}"),
            ]
    return pairs


def _bert_qkv(n_layers: int) -> list[tuple[str, list[str]]]:
    return [
        (
            f"blocks.{i}.attention.qkv.{kind}",
            [f"bert.encoder.layer.{i}.attention.self.{n}.{kind}" for n in ("query", "key", "value")],
        )
        for i in range(n_layers)
        for kind in ("weight", "bias")
    ]


def _llama_names(config: DecoderConfig) -> list[tuple[str, str]]:
    pairs = [
        ("embeddings.tokens.weight", "model.embed_tokens.weight"),
        ("final_norm.weight", "model.norm.weight"),
    ]
    if not config.tie_embeddings:
        pairs.append(("lm_head.weight", "lm_head.weight"))
    kinds = ("weight", "bias") if config.bias else ("weight",)
    for i in range(config.n_layers):
        o, h = f"blocks.{i}.", f"model.layers.{i}."
        pairs += [
            (f"{o}attention_norm.weight", f"{h}input_layernorm.weight"),
            (f"{o}feed_forward_norm.weight", f"{h}post_attention_layernorm.weight"),
        ]
        for kind in kinds:
            pairs.append((f"{o}attention.out.{kind}", f"{h}self_attn.o_proj.{kind}"))
            pairs += [
                (f"{o}feed_forward.{n}.{kind}", f"{h}mlp.{n}_proj.{kind}") for n in ("gate", "up", "down")
            ]
    return pairs


def _llama_qkv(config: DecoderConfig) -> list[tuple[str, list[str]]]:
    kinds = ("weight", "bias") if config.bias else ("weight",)
    return [
        (f"blocks.{i}.attention.qkv.{kind}", [f"model.layers.{i}.self_attn.{n}_proj.{kind}" for n in "qkv"])
        for i in range(config.n_layers)
        for kind in kinds
    ]


def _names(config: ModelConfig) -> tuple[list[tuple[str, str]], list[tuple[str, list[str]]]]:
    if config.kind == "encoder":
        return _bert_names(config), _bert_qkv(config.n_layers)
    return _llama_names(config), _llama_qkv(config)


def weights_to_hf(model: nn.Module) -> Weights:
    """Our model's weights under transformers' names (q, k, v split out of the fused qkv)."""
    config: ModelConfig = model.config
    hf_config(config)  # raises InteropError for a config transformers cannot express
    ours = model.state_dict()
    theirs: Weights = {}
    plain, fused = _names(config)
    for mine, hf_name in plain:
        theirs[hf_name] = ours[mine]
    for mine, hf_names in fused:
        for hf_name, part in zip(hf_names, ours[mine].chunk(3), strict=True):  # (3d, …) → 3 × (d, …)
            theirs[hf_name] = part
    if config.kind == "encoder" and config.type_vocab_size == 0:  # one type, adding nothing
        theirs["bert.embeddings.token_type_embeddings.weight"] = ours["embeddings.tokens.weight"].new_zeros(
            1, config.d_model
        )
    return {name: t.detach().clone().contiguous() for name, t in theirs.items()}


def weights_from_hf(config: ModelConfig, state: Weights) -> Weights:
    """transformers' weights (a ``state_dict``) under our names, ready for ``load_state_dict(strict=True)``."""
    ours: Weights = {}
    plain, fused = _names(config)
    for mine, hf_name in plain:
        ours[mine] = state[hf_name]
    for mine, hf_names in fused:
        ours[mine] = torch.cat([state[name] for name in hf_names])  # 3 × (d, …) → (3d, …)
    if config.kind == "decoder" and config.tie_embeddings:
        ours["lm_head.weight"] = ours["embeddings.tokens.weight"]
    return ours


def to_transformers(model: nn.Module) -> nn.Module:
    """A ``BertForMaskedLM`` / ``LlamaForCausalLM`` holding our model's weights, in eval mode."""
    transformers = require_transformers()
    config = hf_config(model.config)
    if model.config.kind == "encoder":
        hf = transformers.AutoModelForMaskedLM.from_config(config)
    else:
        hf = transformers.AutoModelForCausalLM.from_config(config)
    missing, unexpected = hf.load_state_dict(weights_to_hf(model), strict=False)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "lm_head.weight"}
    missing = [name for name in missing if name not in tied]
    if missing or unexpected:
        raise InteropError(
            "weights", f"names do not match transformers': missing {missing}, unexpected {unexpected}"
        )
    hf.tie_weights()
    return hf.eval()


def from_transformers(hf: nn.Module) -> nn.Module:
    """Our Encoder / Decoder holding the weights of a ``BertForMaskedLM`` / ``LlamaForCausalLM``, in eval mode."""
    from modeling.checkpoint import build_model

    config = config_from_hf(hf.config)
    model = build_model(config)
    model.load_state_dict(weights_from_hf(config, hf.state_dict()), strict=True)
    return model.eval()


# ---- a folder transformers loads ----------------------------------------------------------------------------------
def special_tokens(config: ModelConfig, tokenizer: Any) -> dict[str, str]:
    """The tokenizer config's special tokens: our ids, named by the tokenizer's own vocabulary."""
    if config.kind == "encoder":
        ids = {"pad_token": config.pad_token_id, "mask_token": config.mask_token_id}
        for role, text in (("unk_token", "[UNK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]")):
            if tokenizer.token_to_id(text) is not None:
                ids[role] = tokenizer.token_to_id(text)
    else:
        ids = {
            "pad_token": config.pad_token_id,
            "bos_token": config.bos_token_id,
            "eos_token": config.eos_token_id,
        }
    return {role: tokenizer.id_to_token(i) for role, i in ids.items()}


def export_transformers(checkpoint: Any, out: str | Path) -> Path:
    """Write ``checkpoint`` (a ``modeling.checkpoint.Checkpoint``) as a folder that
    ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` load:
    ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json`` and, for a decoder, ``generation_config.json``."""
    transformers = require_transformers()
    config: ModelConfig = checkpoint.config
    hf_config(config)  # fail before writing anything
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hf = to_transformers(checkpoint.model)
    hf.save_pretrained(
        out, safe_serialization=True
    )  # config.json, model.safetensors (+ generation_config.json)
    if config.kind == "decoder":  # readers older than transformers 5 look for rope_theta at the top level
        written = json.loads((out / "config.json").read_text(encoding="utf-8"))
        _write_json(out / "config.json", {**written, "rope_theta": config.rope_theta})
    shutil.copyfile(Path(checkpoint.path) / "tokenizer.json", out / "tokenizer.json")
    tokens = special_tokens(config, checkpoint.tokenizer)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.max_len,
        "clean_up_tokenization_spaces": False,
        **tokens,
    }
    _write_json(out / "tokenizer_config.json", tokenizer_config)
    _write_json(out / "special_tokens_map.json", tokens)
    if config.kind == "decoder":
        generation = transformers.GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
        generation.save_pretrained(out)
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
