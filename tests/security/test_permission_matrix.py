"""The permission matrix: every URL pattern of the site x (anonymous, an expert on the panels, another expert on
none, an admin, a researcher, a user without a role) with the expected status.

The expectations are a table keyed by URL name (:data:`EXPECTED`). The URL patterns are enumerated from the resolver,
so a new URL without a row FAILS :func:`test_every_url_pattern_has_an_expectation`: a new view must declare its access
rule here. Each row gives, per method, one status per role in the order of :data:`tests.security.ROLES`::

    (anonymous, expert on the panel, other expert, admin, researcher, no role)

``L`` is a redirect to the login page; other numbers are the status itself. Pages send anonymous users to the login
page and answer 403 to a role that may not see them; API endpoints answer 403 to both (DRF's session
authentication sends no WWW-Authenticate challenge, so anonymous is 403 rather than 401). ``require_POST`` views
answer 405 to a GET from anyone before any role check, and every POST-only view is also POSTed (empty body) to check
the role before the body is looked at. An empty POST from an allowed role is refused as invalid (400), or redirects
back with a message (302); every request runs in a savepoint that is rolled back, so one check never changes the
world of the next.

Left out, with the reason: the Django admin (``django-admin/``, its own staff-only login and permissions; Django's
code, not this site's) and static/media files (served by WhiteNoise or the web server, and by Django only with DEBUG
in development; no access rule of the site applies).
"""
from __future__ import annotations

import re

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.security import ADMIN, ANON, EXPERT, NOROLE, OTHER, RESEARCHER, ROLES, login, shared_world

L = "L"  # a redirect to the login page

#: URL prefixes left out of the matrix (see the module docstring for why).
EXCLUDED_PREFIXES = ("django-admin/", "static/", "media/", "^static/", "^media/")

#: Which world object a ``pk`` or ``item_id`` names, per URL name (everything else: :data:`DEFAULT_KWARGS`).
PK_FOR = {
    "export-status": "export_id", "export-download": "export_id", "api-export-detail": "export_id",
    "adjudication-decide": "adjudication_id", "api-adjudication-decide": "adjudication_id",
    "revision-proposal-delete": "proposal_id", "api-revision-proposal": "proposal_id",
    "candidate-retry": "candidate_id", "api-video-detail": "video_id",
    "video-detail": "video_id", "video-stages": "video_id", "video-start": "video_id", "video-cancel": "video_id",
    "video-retry": "video_id", "video-reevaluate": "video_id",
    "snapshot-export": "snapshot_id", "classifier-activate": "classifier_id",
    "job-detail": "job_id", "job-live": "job_id", "job-cancel": "job_id", "job-resume": "job_id",
    "job-generate": "job_id", "api-job-detail": "job_id", "api-job-cancel": "job_id",
    "judging-human-submit": "human_item_id", "judging-pairwise-submit": "pair_item_id",
    "caption-history": "clip_id", "caption-regenerate": "clip_id",
}
#: URL keyword -> world id name (or a literal, for fixed values).
DEFAULT_KWARGS = {
    "user_id": "user_id", "index": "task_index", "task_index": "task_index", "item_id": "item_id",
    "workflow": "workflow", "round_id": "round_id", "model_id": "model_id", "run_id": "run_id", "token": "token",
    "clip_id": "clip_id",
}
LITERAL_KWARGS = {"fmt": "csv", "format": "json", "number": 2, "uidb64": "MQ", "token:password_reset_confirm": "x-y",
                  "workflow:captions-assign": "clip_verification"}
#: A query string some URLs need to reach their access check (the form of one operation).
QUERY_FOR = {"revision-form": "?op=supplement"}


def url_patterns(patterns=None, prefix: str = ""):
    """(route text, URLPattern) for every pattern of the site, includes walked recursively."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from url_patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def _keywords(pattern: URLPattern) -> list[str]:
    converters = getattr(pattern.pattern, "converters", {}) or {}
    return list(converters) or list(re.compile(pattern.pattern.regex.pattern).groupindex)


def matrix_key(route: str, pattern: URLPattern) -> str:
    """The table key of a pattern: its name; DRF's format-suffix twins get ``+format``."""
    return pattern.name + ("+format" if "format" in _keywords(pattern) else "")


def concrete_urls(world) -> list[tuple[str, str]]:
    """(table key, URL) for every pattern of the site outside :data:`EXCLUDED_PREFIXES`, its converters filled with
    the ids of the world's objects."""
    urls = []
    for route, pattern in url_patterns():
        if route.startswith(EXCLUDED_PREFIXES):
            continue
        assert pattern.name, f"URL pattern {route!r} has no name; name it so the matrix can hold its rule"
        kwargs = {}
        for keyword in _keywords(pattern):
            literal_key = f"{keyword}:{pattern.name}"
            if literal_key in LITERAL_KWARGS:
                kwargs[keyword] = LITERAL_KWARGS[literal_key]
            elif keyword in ("pk",) or (keyword == "item_id" and pattern.name in PK_FOR):
                kwargs[keyword] = world.ids[PK_FOR[pattern.name]]
            elif keyword in DEFAULT_KWARGS:
                kwargs[keyword] = world.ids[DEFAULT_KWARGS[keyword]]
            elif keyword in LITERAL_KWARGS:
                kwargs[keyword] = LITERAL_KWARGS[keyword]
            else:
                raise AssertionError(f"URL pattern {route!r}: no value for <{keyword}>; add one to the matrix")
        url = reverse(pattern.name, kwargs=kwargs) + QUERY_FOR.get(pattern.name, "")
        urls.append((matrix_key(route, pattern), url))
    return urls

#: A body for POSTs whose empty body would be refused (400) before the access check that matters here.
POST_DATA = {
    "review-item-decision": {"value": "keep"},
    "api-review-item-decision": {"value": "keep"},
    "api-revision-rounds": {"task": 2},
    "job-generate": {"checkpoint": "999999"},  # a checkpoint of no job: 404 once allowed, before asking the GPUs
}

# The expected status per URL name and method: one per role, in the order
#          (anonymous, expert on the panel, other expert, admin, researcher, no role)
EXPECTED = {
    # Django's auth views (accounts/): public pages; password change needs a login, whatever the role.
    "login": {"GET": (200, 200, 200, 200, 200, 200), "POST": (200, 200, 200, 200, 200, 200)},
    "logout": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, L, L, L, L, L)},
    "password_change": {"GET": (L, 200, 200, 200, 200, 200), "POST": (L, 200, 200, 200, 200, 200)},
    "password_change_done": {"GET": (L, 200, 200, 200, 200, 200)},
    "password_reset": {"GET": (200, 200, 200, 200, 200, 200), "POST": (200, 200, 200, 200, 200, 200)},
    "password_reset_done": {"GET": (200, 200, 200, 200, 200, 200)},
    "password_reset_confirm": {"GET": (200, 200, 200, 200, 200, 200), "POST": (200, 200, 200, 200, 200, 200)},
    "password_reset_complete": {"GET": (200, 200, 200, 200, 200, 200)},
    # Liveness for load balancers: public, no session, no database.
    "healthz": {"GET": (200, 200, 200, 200, 200, 200)},
    # Home (any logged-in user; one without a role is told to ask for one) and user management (admins).
    "home": {"GET": (L, 200, 200, 200, 200, 200)},
    "user-list": {"GET": (L, 403, 403, 200, 403, 403)},
    "user-set-roles": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    # Tasks and rubrics: every role reads; exports are for admins and researchers.
    "task-list": {"GET": (L, 200, 200, 200, 200, 403)},
    "task-detail": {"GET": (L, 200, 200, 200, 200, 403)},
    "benchmark-overview": {"GET": (L, 200, 200, 200, 200, 403)},
    "export-create": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 400, 400, 403)},
    "export-status": {"GET": (L, 403, 403, 200, 200, 403)},
    "export-download": {"GET": (L, 403, 403, 200, 200, 403)},
    # Review queues (experts; an expert off the panel cannot vote or pass) and panels (admins).
    "review-home": {"GET": (L, 200, 200, 403, 403, 403)},
    "review-queue": {"GET": (L, 200, 200, 403, 403, 403)},
    "review-item-decision": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 403, 403, 403, 403)},
    "review-item-pass": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 403, 403, 403, 403)},
    "review-panels": {"GET": (L, 403, 403, 200, 403, 403)},
    "review-panels-config": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    "review-panels-auto-assign": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    "review-panels-assign": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    "api-review-item": {"GET": (403, 200, 403, 200, 403, 403)},
    "api-review-item-decision": {"GET": (403, 405, 405, 403, 403, 403), "POST": (403, 201, 403, 403, 403, 403)},
    "api-review-item-pass": {"GET": (403, 405, 405, 403, 403, 403), "POST": (403, 200, 403, 403, 403, 403)},
    "api-review-queue": {"GET": (403, 200, 200, 403, 403, 403)},
    "api-review-auto-assign": {"GET": (403, 403, 403, 405, 403, 403), "POST": (403, 403, 403, 200, 403, 403)},
    # Action log and agreement: admins only.
    "action-log": {"GET": (L, 403, 403, 200, 403, 403)},
    "action-log-csv": {"GET": (L, 403, 403, 200, 403, 403)},
    "agreement": {"GET": (L, 403, 403, 200, 403, 403)},
    "api-action-log": {"GET": (403, 403, 403, 200, 403, 403)},
    "api-agreement": {"GET": (403, 403, 403, 200, 403, 403)},
    # Rubric revision: the round's panel writes; admins open rounds, see every round and adjudicate.
    "revision-list": {"GET": (L, 200, 200, 200, 403, 403)},
    "revision-open": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    "adjudication-queue": {"GET": (L, 403, 403, 200, 403, 403)},
    "adjudication-decide": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    "revision-round": {"GET": (L, 200, 403, 200, 403, 403)},
    "revision-form": {"GET": (L, 200, 403, 403, 403, 403)},
    "revision-proposal-save": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 403, 403, 403, 403)},
    "revision-proposal-delete": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 403, 403, 403, 403)},
    "revision-submit": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 403, 403, 403, 403)},
    "api-revision-rounds": {"GET": (403, 200, 200, 200, 403, 403), "POST": (403, 403, 403, 201, 403, 403)},
    "api-adjudications": {"GET": (403, 403, 403, 200, 403, 403)},
    "api-adjudication-decide": {"GET": (403, 403, 403, 405, 403, 403), "POST": (403, 403, 403, 400, 403, 403)},
    "api-revision-proposals": {"GET": (403, 200, 403, 200, 403, 403), "POST": (403, 400, 403, 403, 403, 403)},
    "api-revision-proposal": {"GET": (403, 405, 405, 405, 403, 403), "DELETE": (403, 204, 403, 403, 403, 403)},
    "api-revision-submit": {"GET": (403, 405, 405, 405, 403, 403), "POST": (403, 200, 403, 403, 403, 403)},
    # Candidate tasks and LLM rubric drafts: admins and researchers (the draft's status: every role).
    "candidate-list": {"GET": (L, 403, 403, 200, 200, 403)},
    "candidate-import": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 400, 400, 403)},
    "candidate-status": {"GET": (L, 403, 403, 200, 200, 403)},
    "candidate-retry-failed": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "candidate-retry": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "task-draft-rubric": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "task-draft-status": {"GET": (L, 200, 200, 200, 200, 403)},
    # Source video upload and the pipeline: admins and researchers (activating a classifier: admins).
    "video-upload": {"GET": (L, 403, 403, 200, 200, 403), "POST": (L, 403, 403, 400, 400, 403)},
    "video-upload-file": {"GET": (L, 403, 403, 405, 405, 403), "POST": (L, 403, 403, 400, 400, 403)},
    "api-video-list": {"GET": (403, 403, 403, 200, 200, 403), "POST": (403, 403, 403, 400, 400, 403)},
    "api-video-detail": {"GET": (403, 403, 403, 200, 200, 403)},
    "pipeline-funnel": {"GET": (L, 403, 403, 200, 200, 403)},
    "pipeline-reevaluate": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "pipeline-videos": {"GET": (L, 403, 403, 200, 200, 403)},
    "video-detail": {"GET": (L, 403, 403, 200, 200, 403)},
    "video-stages": {"GET": (L, 403, 403, 200, 200, 403)},
    "video-start": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "video-cancel": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "video-retry": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "video-reevaluate": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "snapshot-list": {"GET": (L, 403, 403, 200, 200, 403)},
    "snapshot-cut": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "snapshot-export": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "classifier-list": {"GET": (L, 403, 403, 200, 200, 403)},
    "classifier-train": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "classifier-activate": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    # Clip verification and captions: admins and researchers; any expert may ask for a rejected caption again.
    "captions-overview": {"GET": (L, 403, 403, 200, 200, 403)},
    "captions-generate": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "verification-open": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "captions-assign": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 403, 403)},
    "caption-history": {"GET": (L, 403, 403, 200, 200, 403)},
    "caption-regenerate": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 302, 302, 302, 403)},
    # Judging results: admins and researchers. Blind human evaluation: experts, each on their own items only.
    "judging-leaderboard": {"GET": (L, 403, 403, 200, 200, 403)},
    "judging-leaderboard-export": {"GET": (L, 403, 403, 200, 200, 403)},
    "judging-model": {"GET": (L, 403, 403, 200, 200, 403)},
    "judging-task": {"GET": (L, 403, 403, 200, 200, 403)},
    "judging-judgement": {"GET": (L, 403, 403, 200, 200, 403)},
    "judging-consistency": {"GET": (L, 403, 403, 200, 200, 403)},
    "judging-consistency-json": {"GET": (L, 403, 403, 200, 200, 403)},
    "judging-human-sample": {"GET": (L, 403, 403, 200, 403, 403), "POST": (L, 403, 403, 400, 403, 403)},
    "judging-human": {"GET": (L, 200, 200, 403, 403, 403)},
    "judging-human-submit": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 403, 403, 403, 403)},
    "judging-pairwise": {"GET": (L, 200, 200, 403, 403, 403)},
    "judging-pairwise-submit": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 302, 403, 403, 403, 403)},
    "judging-media": {"GET": (L, 200, 403, 403, 403, 403)},
    # Training jobs: admins and researchers (registering weights: admins).
    "job-dashboard": {"GET": (L, 403, 403, 200, 200, 403), "POST": (L, 403, 403, 400, 400, 403)},
    "job-weights": {"GET": (L, 403, 403, 200, 403, 403), "POST": (L, 403, 403, 400, 403, 403)},
    "job-detail": {"GET": (L, 403, 403, 200, 200, 403)},
    "job-live": {"GET": (L, 403, 403, 200, 200, 403)},
    "job-cancel": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "job-resume": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 302, 302, 403)},
    "job-generate": {"GET": (405, 405, 405, 405, 405, 405), "POST": (L, 403, 403, 404, 404, 403)},
    "api-job-list": {"GET": (403, 403, 403, 200, 200, 403), "POST": (403, 403, 403, 400, 400, 403)},
    "api-job-detail": {"GET": (403, 403, 403, 200, 200, 403)},
    "api-job-cancel": {"GET": (403, 403, 403, 405, 405, 403), "POST": (403, 403, 403, 200, 200, 403)},
    # The REST API's tasks, versions and exports, its root and its schema and docs (any role).
    "api-root": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-root+format": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-task-list": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-task-list+format": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-task-detail": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-task-detail+format": {"GET": (403, 200, 200, 200, 200, 403)},
    "task-versions": {"GET": (403, 200, 200, 200, 200, 403)},
    "task-version": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-export-list": {"GET": (403, 403, 403, 200, 200, 403), "POST": (403, 403, 403, 400, 400, 403)},
    "api-export-list+format": {"GET": (403, 403, 403, 200, 200, 403)},
    "api-export-detail": {"GET": (403, 403, 403, 200, 200, 403)},
    "api-export-detail+format": {"GET": (403, 403, 403, 200, 200, 403)},
    "api-schema": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-docs": {"GET": (403, 200, 200, 200, 200, 403)},
    "api-redoc": {"GET": (403, 200, 200, 200, 200, 403)},
}

#: Rows for URLs another part of the site may not have mounted yet (checked only when the URL exists).
OPTIONAL = {"healthz", "captions-overview", "captions-generate", "verification-open", "captions-assign",
            "caption-history", "caption-regenerate"}


world = pytest.fixture(scope="module")(shared_world)


def _observed(response) -> int | str:
    if response.status_code == 302 and response.url.startswith(reverse("login")):
        return L
    return response.status_code


@pytest.mark.django_db
def test_every_url_pattern_has_an_expectation(world):
    """A URL without a row here fails: a new view must declare who may use it (add a row to EXPECTED)."""
    keys = [key for key, _url in concrete_urls(world)]
    missing = sorted(set(keys) - set(EXPECTED))
    assert not missing, f"URL patterns without an access rule in EXPECTED: {missing}"
    stale = sorted(set(EXPECTED) - set(keys) - OPTIONAL)
    assert not stale, f"EXPECTED has rows for URL names the site no longer has: {stale}"
    for key, methods in EXPECTED.items():
        assert "GET" in methods, key
        assert all(len(codes) == len(ROLES) for codes in methods.values()), key


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(client, world, role):
    """Every URL and method of the table, as one role; all mismatches are listed together."""
    client.raise_request_exception = False  # a 500 is a mismatch to report, not a crash of the test
    column = ROLES.index(role)
    mismatches = []
    checked = 0
    for key, url in concrete_urls(world):
        for method, codes in EXPECTED.get(key, {}).items():
            data = POST_DATA.get(key, {}) if method == "POST" else None
            login(client, world.users.get(role))  # again each time: a row logs out, rolled back or not
            with transaction.atomic():  # every request's writes are rolled back: the world stays as built
                response = getattr(client, method.lower())(url, data) if data else getattr(client, method.lower())(url)
                transaction.set_rollback(True)
            checked += 1
            if _observed(response) != codes[column]:
                mismatches.append(f"{method} {url} ({key}): expected {codes[column]}, got {_observed(response)}")
            if response.status_code == 302 and _observed(response) != L:
                assert not response.url.startswith(("http://", "https://", "//")), f"{method} {url} -> {response.url}"
    assert checked > 100
    assert not mismatches, f"as {role}:\n" + "\n".join(mismatches)


@pytest.mark.django_db
def test_anonymous_pages_redirect_to_the_login_page_with_next(client, world):
    """The login redirect keeps where the user was going (and nothing else)."""
    response = client.get(reverse("task-detail", args=[1]))
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next=/tasks/1/"


@pytest.mark.django_db
def test_token_authentication_follows_the_same_rules(world):
    """The API with an ``Authorization: Token`` header: the token's user's role decides, not the session."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    api = APIClient()
    for role, expected in ((EXPERT, 403), (RESEARCHER, 200), (ADMIN, 200), (NOROLE, 403)):
        token = Token.objects.create(user=world.users[role])
        api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        assert api.get("/api/jobs/").status_code == expected, role
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api.get("/api/tasks/").status_code in (401, 403)  # a bad token is refused outright
    assert ANON and OTHER  # the roles a token cannot be for are covered by the matrix above
