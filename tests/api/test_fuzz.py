"""Schema-based fuzzing of the broker (schemathesis): every operation of `/api/v1/openapi.json`,
anonymous and with each role's token, answers bad input with a 4xx problem, never a 5xx, and
every answer is one the document describes: a declared status and content type, a body valid by
the declared schema (schemathesis's conformance checks).

Bounded so that the whole file takes well under a minute: a few examples of each operation,
valid by the schema (positive) and violating it (negative), each sent by every caller,
derandomized so that a run repeats the last one. `ESCROW_FUZZ_EXAMPLES` raises the number for
a longer hunt (e.g. 200 before a release).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import schemathesis
from api_deposit import deposit, depositor_token
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

EXAMPLES = int(os.environ.get("ESCROW_FUZZ_EXAMPLES", "5"))
# Every answer must be one the document describes: a declared status, a declared content type,
# a body valid by the declared schema.
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
# A person's role: (org roles, global roles). The researcher has none.
ROLES = {
    "reviewer": ((("acme-ai", "reviewer"),), ()),
    "admin": ((("acme-ai", "admin"),), ()),
    "auditor": ((), ("auditor",)),
    "operator": ((), ("operator",)),
    "researcher": ((), ()),
}


@pytest.fixture
def callers(escrow, client, make_person) -> dict[str, dict[str, str]]:
    """The headers of each caller, with a sealed deposit in place so that ids can exist."""
    token = depositor_token(escrow)
    deposit(client, escrow, token, model="acme-ai/gpt-small", version="2024-05")
    headers = {"anonymous": {}, "depositor": {"Authorization": f"Bearer {token}"}}
    for role, (org_roles, global_roles) in ROLES.items():
        made = make_person(f"{role}@uni.example", org_roles, global_roles)
        headers[role] = {"Authorization": f"Bearer {made.token}"}
    return headers


def _fuzz(
    operation, callers: dict[str, dict[str, str]], mode: GenerationMode, failures: list[str]
) -> Callable[[], None]:
    """Each example of `operation` (by `mode`), sent once by every caller."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        for name, headers in callers.items():
            response = case.call(headers={**(case.headers or {}), **headers})
            if response.status_code >= 500:
                failures.append(
                    f"as {name}: {case.method} {case.formatted_path} ({mode.value}): "
                    f"{response.status_code} {response.text[:300]}\n"
                    f"    {case.as_curl_command()[:600]}"
                )
                continue
            if response.status_code >= 400 and case.path.startswith("/api/"):
                kind = (response.headers.get("content-type") or [""])[0]
                assert kind.startswith("application/problem+json"), (
                    f"as {name}: {case.method} {case.formatted_path}: "
                    f"{response.status_code} is {kind!r}"
                )
            try:
                case.validate_response(response, checks=CONFORMANCE)
            except FailureGroup as group:  # each check that failed, explained
                for failure in group.exceptions:  # one line per operation, status and kind
                    line = (
                        f"{case.method} {case.path}: {response.status_code} not as "
                        f"documented: {failure.title}"
                    )
                    if line not in failures:
                        failures.append(line)
                        failures.append(f"    as {name}, e.g. {failure.message[:300]!r}")

    return run


def _aimed(document: dict) -> dict:
    """The published document with every JSON request body closed to undeclared members: the
    broker ignores them, so examples made of them would only ever test that (the document
    itself stays open, as the API is)."""
    for path in document["paths"].values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for media in operation.get("requestBody", {}).get("content", {}).values():
                body = media.get("schema", {})
                if body.get("type") == "object" and body.get("properties"):
                    body["additionalProperties"] = False
    return document


def test_no_5xx_for_any_caller(app, callers) -> None:
    schema = schemathesis.openapi.from_dict(
        _aimed(app.test_client().get("/api/v1/openapi.json").json)
    )
    schema.app = app  # called through WSGI, in this process
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50, "the OpenAPI document lost its operations"
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, callers, mode, failures)()
            except Unsatisfiable:  # nothing in it can violate the schema (no parameters)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "answers were 5xx or not as documented:\n" + "\n".join(failures)
