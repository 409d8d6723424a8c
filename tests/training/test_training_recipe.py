"""Recipes: the shipped ones load, overrides are typed, unknown keys and wrong types are clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atencion.cli import main
from training.recipe import RECIPES, RecipeError, load_recipe

SHIPPED = ("encoder-dense", "encoder-sparse", "decoder-dense", "decoder-sparse")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_meet_the_issue_4_constraints(name: str) -> None:
    recipe = load_recipe(name)
    config = recipe.model
    assert config.kind == name.split("-")[0]
    assert (config.attention.pattern == "dense") == name.endswith("dense")
    minimum = {"encoder-dense": 256, "encoder-sparse": 256, "decoder-dense": 512, "decoder-sparse": 1024}[
        name
    ]
    assert recipe.data.seq_len >= minimum and config.max_len >= recipe.data.seq_len
    d, L, V, F = config.d_model, config.n_layers, recipe.tokenizer.vocab_size, config.d_ff
    blocks = L * (4 * d * d + (3 if config.feed_forward == "swiglu" else 2) * d * F)
    assert (V * d + config.max_len * d + blocks) * 4 < 25e6  # fp32 weights under 25 MB
    assert recipe.training.precision == "auto"


def test_overrides_are_typed_by_the_field_they_set() -> None:
    recipe = load_recipe(
        "decoder-sparse",
        [
            "training.steps=7",
            "training.cooldown=2",
            "training.clip=0.5",
            "model.attention.window=64",
            "model.bias=true",
            "training.precision=fp32",
        ],
    )
    assert recipe.training.steps == 7 and recipe.total_steps == 7 and recipe.training.cooldown == 2
    assert recipe.training.clip == 0.5 and recipe.model.attention.window == 64 and recipe.model.bias is True
    assert (
        load_recipe("encoder-dense", ["training.tokens=819200", "training.cooldown=0"]).total_steps == 100
    )  # 819200 / (32·256)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.stepz=3", "training.stepz: unknown key"),
        ("model.attention.windw=3", "model.attention.windw: unknown key"),
        ("optimizer.lr=3", "optimizer.lr: unknown key"),
        ("training.steps=many", "training.steps: expected int, got 'many'"),
        ("training.steps=1.5", "training.steps: expected int"),
        ("model.bias=maybe", "model.bias: expected bool"),
        ("model.n_heads=3", "n_heads"),  # the config's own validation, named
        ("model.vocab_size=100", "set by the trained tokenizer"),
        ("training.precision=fp16", "training.precision"),
        ("data.seq_len=4096", "data.seq_len"),
        ("training.mask_probability=0", "training.mask_probability: must be in (0, 1)"),
        ("training.cooldown=5000", "training.cooldown: must be in [0, 4500]"),
        ("training.steps=100", "training.cooldown: must be in [0, 100] (the run's steps), got 900"),
        ("training.mask_token_share=1.5", "training.mask_token_share: must be in [0, 1]"),
        ("training.random_token_share=0.5", "mask_token_share + random_token_share must be <= 1"),
        ("steps", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_are_errors_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe("encoder-dense", [override])


def test_bad_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="neither a file nor a shipped recipe"):
        load_recipe("no-such-recipe")
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nkind = "encoder"\nd_model = "wide"\n', encoding="utf-8")
    with pytest.raises(RecipeError, match="model.d_model: expected int"):
        load_recipe(bad)
    bad.write_text("[model\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
    shipped = (*SHIPPED, "translator-es-oto", "taller")  # + the translator and the teaching model
    assert sorted(p.stem for p in RECIPES.glob("*.toml")) == sorted(shipped)


def test_cli_reports_override_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for override, message in [
        ("training.nope=1", "training.nope: unknown key"),
        ("training.steps=x", "expected int"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "train",
                    "encoder-dense",
                    "--corpus",
                    str(tmp_path),
                    "--out",
                    str(tmp_path / "o"),
                    "--set",
                    override,
                ]
            )
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_reports_corpus_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "encoder-dense", "--corpus", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 1
    assert "no .txt files" in capsys.readouterr().err
