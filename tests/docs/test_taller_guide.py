"""The workshop guide (docs/taller/) cannot rot: every Python snippet runs, prints what the page says it prints
(numbers within a tolerance that absorbs float rounding across CPUs), is at most 15 lines, and every
``file.py:name`` the pages cite exists."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "taller"
PAGES = sorted(p for p in GUIDE.glob("*.md") if p.name != "README.md")
UNITS = ("1.1", "2.1", "2.2", "3.1", "3.2", "4.1", "4.2", "4.3", "9.1", "9.2", "9.3")
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)
NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?(e[-+]?\d+)?$")
SECTIONS = ("## La idea", "## Dónde vive", "## Pruébalo", "## En el servicio", "## En /ui")


def snippets(page: Path) -> list[tuple[str, str | None]]:
    """(code, the text block right after it or None) for each ```python block of the page."""
    blocks = FENCE.findall(page.read_text(encoding="utf-8"))
    return [
        (code, blocks[i + 1][1] if i + 1 < len(blocks) and blocks[i + 1][0] == "text" else None)
        for i, (language, code) in enumerate(blocks)
        if language == "python"
    ]


def same_output(printed: str, written: str) -> bool:
    """Word by word equal; numbers within 2e-3 (absolute) or 1e-3 (relative)."""
    a, b = printed.split(), written.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        x, y = x.strip("[](),:;"), y.strip("[](),:;")
        if NUMBER.match(x) and NUMBER.match(y):
            if abs(float(x) - float(y)) > max(2e-3, 1e-3 * abs(float(y))):
                return False
        elif x != y:
            return False
    return True


def test_one_page_per_unit_and_an_index_that_links_them() -> None:
    assert [p.name.split("-")[0] for p in PAGES] == list(UNITS)
    index = (GUIDE / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert f"({page.name})" in index, page.name
        text = page.read_text(encoding="utf-8")
        for section in SECTIONS:
            assert section in text, (page.name, section)
        assert "victormijangosdelacruz.github.io/MecanismosAtencion/html/" in text, page.name


@pytest.mark.parametrize("page", [p for p in [*PAGES, GUIDE / "README.md"]], ids=lambda p: p.stem)
def test_cited_code_exists(page: Path) -> None:
    for path, name in re.findall(r"`([\w/]+\.(?:py|js)):(\w+)`", page.read_text(encoding="utf-8")):
        source = (REPO / path).read_text(encoding="utf-8")
        assert re.search(rf"(def|class|function) {name}\b|^{name} = ", source, re.M), (page.name, path, name)


CASES = [(page, i) for page in PAGES for i in range(len(snippets(page)))]


@pytest.mark.parametrize(("page", "index"), CASES, ids=[f"{p.stem.split('-')[0]}-{i}" for p, i in CASES])
def test_snippet_runs_and_prints_what_the_page_says(page: Path, index: int, monkeypatch) -> None:
    code, written = snippets(page)[index]
    assert len(code.strip().splitlines()) <= 15, "a snippet is at most 15 lines"
    assert written is not None, "each snippet is followed by the ```text it prints"
    monkeypatch.chdir(REPO)  # the pages say: run from the repository's root
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{page.name}[{index}]", "exec"), {"__name__": "__guide__"})
    assert same_output(printed.getvalue(), written), (
        f"printed:\n{printed.getvalue()}\nthe page says:\n{written}"
    )


def test_the_comparison_catches_a_wrong_number() -> None:
    assert same_output("pico 0.02795 True", "pico 0.02795 True")
    assert not same_output("pico 0.02795 True", "pico 0.03795 True")
    assert not same_output("pico 0.02795 True", "pico 0.02795 False")
