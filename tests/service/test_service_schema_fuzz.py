"""Schema fuzzing (schemathesis) against the real server's ``/openapi.json``: no input gets a 5xx, and every
answer — success or error — matches the documented status, content type and schema.

Every documented operation is fuzzed, so a route added later joins automatically. The document names the served
models and asks for non-blank texts (with ``[MASK]`` on ``/fill-mask``), so most requests reach a model rather
than bouncing off validation. Bounded and deterministic: ``derandomize`` and a fixed number of examples per
operation (positive and negative data).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 60  # per operation: one to two minutes for the whole document on 2 shared cores


@pytest.fixture(scope="module")
def api_document(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_document")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_matches_its_document(case):
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=120,
    )
