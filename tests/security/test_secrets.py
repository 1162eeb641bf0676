"""The OpenAI key and API tokens never appear in pages, API answers, exports, error pages or logs.

Both are set to recognisable canaries: ``settings.OPENAI_API_KEY`` (the local chat server of ``tests.fakes``, which
can echo the key back in an error body as some real endpoints do) and a DRF token whose key is chosen here. The tests
drive the LLM through a real failing call, then read every page of the site, the browsable and JSON API with the
token, every export, the 404 and 500 pages (DEBUG off and on), the database rows the call wrote, and every log record
captured at DEBUG, and grep them for both."""
from __future__ import annotations

import json
import logging

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import include, path, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.fakes.chat_server import Status
from tests.security import ADMIN, EXPERT, RESEARCHER, login, shared_world
from tests.security.test_permission_matrix import EXPECTED, concrete_urls

pytestmark = pytest.mark.django_db

OPENAI_KEY = "sk-canary-" + "c0ffee15" * 6
TOKEN_KEY = "t0kencanary" + "9" * 29  # DRF token keys are 40 characters
CANARIES = (OPENAI_KEY, TOKEN_KEY)

world = pytest.fixture(scope="module")(shared_world)


def boom(request):
    raise RuntimeError("a view failed while the key was configured")


# The site's URLs plus a view that raises (tests marked with pytest.mark.urls(__name__) use them).
urlpatterns = [path("__boom__/", boom), path("", include("microverse_site.urls"))]


@pytest.fixture
def canaries(llm_endpoint, settings, world):
    settings.OPENAI_API_KEY = OPENAI_KEY
    token = Token.objects.create(user=world.users[RESEARCHER], key=TOKEN_KEY)
    return token


def assert_clean(text: str | bytes, where: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for canary in CANARIES:
        assert canary not in text, f"a secret appears in {where}"
        assert canary[-20:] not in text, f"part of a secret appears in {where}"


def content_of(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def failing_llm_call(chat_server, world):
    """A candidate whose prompt writing fails at an endpoint that echoes the key in its 401 error body."""
    from rubrics.candidates import candidate_generate
    from rubrics.models import CandidateTask

    echo = {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}. You can find your API key at "
                                 "https://platform.example/account/api-keys.", "type": "invalid_request_error",
                      "code": "invalid_api_key"}}
    chat_server.when(lambda request: True, Status(401, echo))
    candidate = CandidateTask.objects.create(source_title="Kinesin walking on a microtubule",
                                             source_description="In vitro motility assay.",
                                             source_url="https://example.org/kinesin")
    status = candidate_generate(candidate_id=candidate.pk)
    candidate.refresh_from_db()
    assert status == CandidateTask.Status.FAILED, status
    assert "401" in candidate.generation_error and "[redacted]" in candidate.generation_error
    assert all(r.authorization == f"Bearer {OPENAI_KEY}" for r in chat_server.chat_requests())
    return candidate


def test_a_failing_llm_call_leaks_the_key_nowhere(canaries, chat_server, world, caplog, client):
    from annotation.models import ActionLog
    from microverse_site.models import LLMCall
    from rubrics.models import CandidateTask

    caplog.set_level(logging.DEBUG)
    candidate = failing_llm_call(chat_server, world)
    # rows written by the call and by the failure
    for model in (LLMCall, CandidateTask, ActionLog):
        for row in model.objects.values():
            assert_clean(json.dumps(row, default=str), f"a {model.__name__} row")
    # the pages that show failures and their reasons
    login(client, world.users[ADMIN])
    for url in (reverse("candidate-list"), reverse("candidate-list") + "?status=failed", reverse("candidate-status"),
                reverse("action-log"), reverse("action-log-csv"), "/api/log/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_clean(content_of(response), url)
    assert candidate.source_title in client.get(reverse("candidate-list")).content.decode()
    # every log record, message and arguments, at DEBUG (the SDK's and httpx's own loggers included)
    assert caplog.records
    assert_clean(caplog.text, "the logs")
    for record in caplog.records:
        assert_clean(record.getMessage() + repr(record.args) + repr(getattr(record, "exc_text", "")), "a log record")


def test_pages_and_api_answers_never_show_the_key_or_the_token(canaries, world):
    """Every GET of the permission matrix, as each role, plus the API with the token (JSON and browsable HTML)."""
    clients = {role: Client() for role in (EXPERT, ADMIN, RESEARCHER)}
    for role, client in clients.items():
        client.force_login(world.users[role])
        client.raise_request_exception = False
    checked = 0
    for key, url in concrete_urls(world):
        if "GET" not in EXPECTED.get(key, {}) or key == "logout":
            continue
        for role, client in clients.items():
            response = client.get(url)
            assert response.status_code < 500, (role, url)
            assert_clean(content_of(response), f"GET {url} as {role}")
            checked += 1
    assert checked > 200
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {TOKEN_KEY}")
    for url in ("/api/", "/api/tasks/", "/api/tasks/1/", "/api/exports/", "/api/videos/", "/api/jobs/",
                "/api/schema/", "/api/tasks/1/versions/"):
        for accept in ("application/json", "text/html"):
            response = api.get(url, HTTP_ACCEPT=accept)
            assert response.status_code in ((200, 406) if url == "/api/schema/" else (200,)), (url, accept)
            assert_clean(content_of(response), f"GET {url} ({accept}) with the token")
    # a wrong token is refused without being echoed
    api.credentials(HTTP_AUTHORIZATION=f"Token {TOKEN_KEY[:-1]}x")
    refused = api.get("/api/tasks/")
    assert refused.status_code in (401, 403)
    assert TOKEN_KEY[:-1] not in refused.content.decode()


def test_exports_never_hold_the_key_or_the_token(canaries, chat_server, world, tmp_path, settings):
    from datasets import snapshots
    from datasets.models import DatasetSnapshot
    from rubrics import services
    from rubrics.models import BenchmarkExport

    failing_llm_call(chat_server, world)  # so that the log and the LLM rows have something to leak
    client = Client()
    client.force_login(world.users[ADMIN])
    for url in (reverse("action-log-csv"), "/judging/leaderboard.csv", "/judging/leaderboard.md",
                "/judging/leaderboard.json", reverse("judging-consistency-json"),
                reverse("export-download", args=[world.ids["export_id"]])):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_clean(content_of(response), url)
    # the benchmark export, written as the worker writes it, and the command's file
    export = BenchmarkExport.objects.create(style="released", requested_by=world.users[RESEARCHER])
    services.benchmark_export_write(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == BenchmarkExport.Status.DONE, export.error
    with export.file.open("rb") as handle:
        assert_clean(handle.read(), "the benchmark export")
    out = tmp_path / "released.json"
    call_command("export_benchmark", "--version", "released", "--out", str(out))
    assert_clean(out.read_bytes(), "export_benchmark's file")
    # a dataset snapshot's export: manifest and info files
    snapshot = DatasetSnapshot.objects.get(pk=world.ids["snapshot_id"])
    try:
        snapshots.snapshot_export(snapshot=snapshot, out_dir=tmp_path / "snapshot", user=world.users[RESEARCHER])
    except snapshots.SnapshotError:
        pass  # the world's snapshot is not a real one; the manifest bytes are checked below either way
    for written in (tmp_path / "snapshot").rglob("*") if (tmp_path / "snapshot").exists() else []:
        if written.is_file():
            assert_clean(written.read_bytes(), f"snapshot export {written.name}")
    assert_clean(snapshots.manifest_bytes(snapshot) + snapshots.info_bytes(snapshot), "the snapshot manifest")


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("debug", [False, True])
def test_error_pages_and_error_logs_hold_no_secret(canaries, world, settings, caplog, debug):
    settings.DEBUG = debug
    caplog.set_level(logging.DEBUG)
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Token {TOKEN_KEY}")
    client.force_login(world.users[ADMIN])
    crashed = client.get("/__boom__/", {"api_key": OPENAI_KEY[:12]})
    assert crashed.status_code == 500
    if debug:  # the technical page lists settings and request headers; Django's filter must hide both secrets
        assert b"OPENAI_API_KEY" in crashed.content
    assert_clean(crashed.content, f"the 500 page (DEBUG={debug})")
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    assert_clean(missing.content, f"the 404 page (DEBUG={debug})")
    api_missing = client.get("/api/tasks/999999/")
    assert api_missing.status_code == 404
    assert_clean(api_missing.content, "the API's 404")
    assert any(r.levelno >= logging.ERROR and "__boom__" in r.getMessage() for r in caplog.records)
    assert_clean(caplog.text, "the error logs")
    for record in caplog.records:
        request = getattr(record, "request", None)
        assert_clean(record.getMessage() + repr(request), "an error record")


def test_settings_repr_and_diffsettings_hide_the_key(canaries, capsys):
    from microverse_site import llm

    assert_clean(repr(llm.LLMSettings.from_settings()), "LLMSettings' repr")
    from django.views.debug import SafeExceptionReporterFilter

    safe = SafeExceptionReporterFilter().get_safe_settings()
    assert_clean(repr(safe), "the settings an error report shows")
