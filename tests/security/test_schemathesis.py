"""schemathesis against the site's OpenAPI schema (``/api/schema/``), as each role: no 500 and no answer that
violates the schema it documents.

Every operation of the schema gets a few generated requests (hypothesis, ``MAX_EXAMPLES``), each sent as the expert,
the admin and the researcher and, in turn, as anonymous, the other expert or the user without a role, straight to the
site's WSGI application (same thread and database connection as the test, so the shared world of ``tests.security``
is there to be listed and serialised). Authentication is a DRF token per role (anonymous: none). Checks:
``not_a_server_error`` and ``response_schema_conformance`` (status codes the schema does not list, such as 403 for a
role without access, are the permission matrix's business). Writes a request makes are rolled back with the test.
(schemathesis' own pytest plugin does not run under pytest 9, hence the loop over the operations.)
"""
from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.security import ADMIN, ANON, EXPERT, NOROLE, OTHER, RESEARCHER, shared_world

MAX_EXAMPLES = 5
CHECKS = [not_a_server_error, response_schema_conformance]

world = pytest.fixture(scope="module")(shared_world)


@pytest.fixture(scope="module")
def raw_schema(world, django_db_blocker):
    with django_db_blocker.unblock():
        client = Client()
        client.force_login(world.users[ADMIN])
        response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def api_schema(raw_schema, db):
    """The schema, calling the WSGI application in-process. As in Django's test client, requests must not close
    the database connection when they finish (that would end the test's transaction)."""
    from django.core import signals
    from django.db import close_old_connections

    schema = schemathesis.openapi.from_dict(raw_schema)
    schema.app = get_wsgi_application()
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schema
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def tokens(world, db) -> dict[str, dict]:
    headers = {ANON: {}}
    for role in (EXPERT, OTHER, ADMIN, RESEARCHER, NOROLE):
        token, _ = Token.objects.get_or_create(user=world.users[role])
        headers[role] = {"Authorization": f"Token {token.key}"}
    return headers


def test_api(api_schema, tokens):
    """Every operation of the schema; all failures are listed together (each with schemathesis' reproduction)."""
    failures = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        seen = [0]

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def check(case):
            # the roles with access on every example; the three without, one each example in turn
            seen[0] += 1
            roles = (EXPERT, ADMIN, RESEARCHER, (ANON, OTHER, NOROLE)[seen[0] % 3])
            for role, headers in ((role, tokens[role]) for role in roles):
                try:
                    case.call_and_validate(headers=headers, checks=CHECKS)
                except (AssertionError, FailureGroup) as failure:  # other errors end the test at once
                    raise AssertionError(f"as {role}: {failure}") from None

        try:
            check()
        except AssertionError as failure:
            failures.append(f"{operation.method.upper()} {operation.path}: {failure}")
    assert operations >= 25
    assert not failures, "\n\n".join(failures)


def test_the_schema_covers_the_api(raw_schema):
    paths = raw_schema["paths"]
    for expected in ("/api/tasks/", "/api/review/items/{item_id}/decision/", "/api/revisions/", "/api/videos/",
                     "/api/jobs/", "/api/log/", "/api/agreement/{workflow}/", "/api/exports/"):
        assert expected in paths, expected
