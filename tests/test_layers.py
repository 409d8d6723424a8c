"""The layers of docs/architecture.md hold: `.importlinter`'s contracts, checked by import-linter.

modeling imports nothing of training, the service, the CLI or the benchmarks; training and the service never
import each other, the CLI or the benchmarks; the benchmarks never import the tests (nor reach them by
putting a tests folder on ``sys.path``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept(monkeypatch, capsys) -> None:
    cli = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(REPO)
    code = cli.lint_imports(config_filename=str(REPO / ".importlinter"), no_cache=True)
    assert code == 0, capsys.readouterr().out


def test_the_contracts_cover_every_layer() -> None:
    text = (REPO / ".importlinter").read_text()
    for contract in ("modeling", "training", "service", "bench"):
        assert f"[importlinter:contract:{contract}]" in text


def test_no_benchmark_edits_sys_path() -> None:
    """import-linter sees imports, not a folder put on ``sys.path``: that is checked here."""
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and getattr(node.value, "id", "") == "sys"
            ):
                raise AssertionError(f"{path.name}:{node.lineno} touches sys.path")
