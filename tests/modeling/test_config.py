"""Configs reject impossible combinations at construction, naming the field, and round-trip through config.json."""

import dataclasses
import json

import pytest

from modeling.config import (
    AttentionConfig,
    ConfigError,
    DecoderConfig,
    EncoderConfig,
    config_from_dict,
    load_config,
)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: EncoderConfig(d_model=100, n_heads=3), "n_heads"),
        (lambda: EncoderConfig(dropout=1.5), "dropout"),
        (lambda: EncoderConfig(norm="batch"), "norm"),
        (lambda: DecoderConfig(position="rope", d_model=30, n_heads=2), "position"),
        (lambda: DecoderConfig(position="relative"), "relative_distance"),
        (lambda: DecoderConfig(relative_distance=8), "relative_distance"),
        (lambda: EncoderConfig(vocab_size=10, mask_token_id=12), "mask_token_id"),
        (lambda: DecoderConfig(vocab_size=10, eos_token_id=10), "eos_token_id"),
        (lambda: AttentionConfig(pattern="local"), "attention.window"),
        (lambda: AttentionConfig(pattern="dense", window=4), "attention.window"),
        (lambda: AttentionConfig(pattern="bigbird", window=64, globals=1), "attention.randoms"),
        (lambda: AttentionConfig(pattern="fixed", stride=8, summary=9), "attention.summary"),
        (
            lambda: AttentionConfig(pattern="fixed", stride=8, summary=2, head_windows="growing"),
            "attention.head_windows",
        ),
        (lambda: AttentionConfig(pattern="sliding"), "attention.pattern"),
        (lambda: AttentionConfig(score="cosine"), "attention.score"),
        (lambda: AttentionConfig(dense_every=2), "attention.dense_every"),
        (
            lambda: DecoderConfig(
                position="relative", relative_distance=4, attention=AttentionConfig(score="additive")
            ),
            "attention.score",
        ),
    ],
)
def test_impossible_configs_name_the_field(build, field):
    with pytest.raises(ConfigError) as error:
        build()
    assert error.value.field == field
    assert str(error.value).startswith(field + ":")


def test_configs_are_frozen_and_replace_revalidates():
    config = EncoderConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.d_model = 128  # type: ignore[misc]
    with pytest.raises(ConfigError, match="n_heads"):
        dataclasses.replace(config, n_heads=7)


def test_config_json_round_trip(tmp_path):
    config = DecoderConfig(
        position="rope",
        norm="rms",
        feed_forward="swiglu",
        attention=AttentionConfig(pattern="local", window=32, block_size=16, dense_every=2),
    )
    config.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["kind"] == "decoder" and data["attention"]["window"] == 32
    assert load_config(tmp_path / "config.json") == config


def test_config_from_dict_rejects_unknown_fields_and_kinds():
    with pytest.raises(ConfigError, match="^kind:"):
        config_from_dict({"kind": "seq2seq"})
    with pytest.raises(ConfigError, match="^d_modell:"):
        config_from_dict({"kind": "encoder", "d_modell": 3})
    with pytest.raises(ConfigError, match="^attention.windw:"):
        config_from_dict({"kind": "decoder", "attention": {"pattern": "local", "windw": 3}})


def test_broken_config_json_is_a_clear_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: is not valid JSON"):
        load_config(path)


def test_dense_every_alternates_layers():
    attention = AttentionConfig(pattern="local", window=8, dense_every=2)
    assert [attention.pattern_of_layer(i) for i in range(4)] == ["local", "dense", "local", "dense"]
