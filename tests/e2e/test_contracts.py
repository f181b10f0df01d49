"""schemathesis against both OpenAPI documents, on the services running as processes:
no server errors, and every response conforms to the document (status, content type, schema).
Bounded: MB_SCHEMATHESIS_EXAMPLES examples per operation (default 15)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from services.command.openapi import document as command_document
from services.query.openapi import document as query_document
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("MB_SCHEMATHESIS_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Logging out would revoke the token the other operations use.
command_schema = schemathesis.openapi.from_dict(command_document()).exclude(
    path="/v1/sessions/current"
)
# A stream never ends, so a single call can't be validated; tests/integration covers it.
query_schema = schemathesis.openapi.from_dict(query_document()).exclude(path="/v1/streaming/home")


@pytest.fixture(scope="module")
def token(stack: Stack) -> Iterator[str]:
    name = f"st{uuid.uuid4().hex[:12]}"
    password = "schemathesis-pass"
    url = stack.command.url
    assert requests.post(f"{url}/v1/accounts", json={"username": name, "password": password}).ok
    answer = requests.post(f"{url}/v1/sessions", json={"username": name, "password": password})
    assert answer.status_code == 200, answer.text
    yield answer.json()["token"]


@command_schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_command_api_conforms(case: schemathesis.Case, stack: Stack, token: str) -> None:
    case.call_and_validate(
        base_url=stack.command.url,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
    )


@query_schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_query_api_conforms(case: schemathesis.Case, stack: Stack, token: str) -> None:
    # Generated consistency positions mostly name offsets nobody reached: don't wait for them.
    if case.headers:
        case.headers.pop("X-Consistency-Position", None)
    case.call_and_validate(
        base_url=stack.query.url,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=10,
    )
