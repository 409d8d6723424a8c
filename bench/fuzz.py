"""Schema fuzzing of the shipped server, counted: requests sent, 5xx answers, answers that break the document.

The suite's ``tests/service/test_service_schema_fuzz.py`` stops at the first failure on the tiny test models; this
script runs the same checks (schemathesis: no 5xx; status, content type and body as documented) over the shipped
models with a larger budget, positive and negative data, and counts everything instead of stopping.

    python -m bench.fuzz                      # 100 examples per operation and mode; writes docs/reliability.md
    python -m bench.fuzz --examples 20        # a short run, printed only
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bench.load import free_port, start, stop
from bench.report import machine, write_section

REPORT = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(base: str, examples: int) -> tuple[collections.Counter, collections.Counter, list[str]]:
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    sent: collections.Counter = collections.Counter()
    broken: collections.Counter = collections.Counter()
    samples: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:  # noqa: ANN001
                label = case.operation.label
                response = case.call(timeout=120)
                sent[(label, response.status_code)] += 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except Exception as failure:  # a FailureGroup listing what broke the document
                    broken[label] += 1
                    if len(samples) < 5:
                        samples.append(f"{label} {response.status_code}: {str(failure)[:300]}")

            try:
                run()
            except Unsatisfiable:  # nothing to negate (a GET without parameters)
                pass
    return sent, broken, samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=100, help="examples per operation and mode")
    args = parser.parse_args()
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="fuzz-")) / "server.log"
    command = [sys.executable, "-m", "atencion", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = start(command, port, log)
    try:
        sent, broken, samples = fuzz(f"http://127.0.0.1:{port}", args.examples)
    finally:
        stop(server)
    operations = sorted({label for label, _ in sent})
    rows = []
    for label in operations:
        statuses = {status: n for (lab, status), n in sent.items() if lab == label}
        total = sum(statuses.values())
        five = sum(n for status, n in statuses.items() if status >= 500)
        spread = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
        rows.append(f"| `{label}` | {total} | {five} | {broken[label]} | {spread} |")
    total = sum(sent.values())
    fives = sum(n for (_, status), n in sent.items() if status >= 500)
    markdown = f"""### Schema fuzzing

`python -m bench.fuzz --examples {args.examples}` — schemathesis over the shipped server's `/openapi.json`,
{args.examples} seeded examples per operation for positive and for negative data; checks: no 5xx, status code,
content type and body as documented. Machine: {machine()}.

| operation | requests | 5xx | schema violations | statuses |
|---|---|---|---|---|
{chr(10).join(rows)}
| **all** | **{total}** | **{fives}** | **{sum(broken.values())}** | |
"""
    print(markdown)
    for sample in samples:
        print("violation:", sample)
    if args.examples >= 100:
        write_section("fuzz", markdown, REPORT)


if __name__ == "__main__":
    main()
