"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections as they are."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

from modeling.precision import cpu_info

REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEach section is written by the script it names; rerun the command to reproduce it.\n"
)


def machine() -> str:
    """A one-line description of the machine a benchmark ran on."""
    cpu = cpu_info()[0]
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}"


def write_section(name: str, markdown: str, report: Path = REPORT) -> None:
    """Replace (or append) the section between `<!-- bench:NAME -->` markers of ``report``."""
    text = report.read_text(encoding="utf-8") if report.exists() else HEADER
    block = f"<!-- bench:{name} -->\n{markdown.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text, encoding="utf-8")
