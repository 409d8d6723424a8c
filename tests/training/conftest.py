"""Fixtures for the training tests (helpers in training_helpers.py, a name no other test directory uses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import spanish_text, write_recipe


@pytest.fixture(scope="session")
def spanish_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(6):
        (folder / f"obra_{i}.txt").write_text(spanish_text(i, 250), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, spanish_corpus: Path) -> dict[str, Path]:
    """One tiny finished run per objective: {kind: run folder}."""
    from training.loop import train
    from training.recipe import load_recipe

    runs = {}
    for kind in ("encoder", "decoder"):
        folder = tmp_path_factory.mktemp(f"run-{kind}")
        recipe = load_recipe(write_recipe(folder, kind))
        train(recipe, spanish_corpus, folder / "out", command="pytest")
        runs[kind] = folder / "out"
    return runs
