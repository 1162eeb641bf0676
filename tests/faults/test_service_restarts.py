"""PostgreSQL and Redis go away and come back while a live server takes requests.

While a service is down, requests that need it fail cleanly (a 5xx error page with no traceback, or a refusal), and
requests that do not need it still succeed (an expert's vote needs PostgreSQL, not Redis: the agreement recompute it
schedules is skipped and logged). Once the service is back, requests succeed again with no manual step: Django's
connection health checks open a new database connection, kombu reconnects to the broker. No decision is half
written: every Decision has its "decide" log row and its panel assignment done, and nothing else was recorded.

Only on PostgreSQL + Redis, and only where this process may restart them (root, the Debian cluster tools): the
cluster is the one serving the test database's port (``pg_lsclusters``), Redis the one on the broker URL's port,
started again with the machine's command. A finalizer starts both again whatever happens, because the rest of the
run needs them. They are shared services: on a developer machine the test runs only with
``MICROVERSE_FAULT_RESTARTS=1`` (CI sets ``CI``), so that it never cuts off another test run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from django.conf import settings
from django.db import connection

from annotation import services
from annotation.models import ActionLog, Assignment, Decision, ReviewItem
from rubrics.models import BenchmarkExport, CandidateTask

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "{port}", "--save", "",
               "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \".*\.py\", line \d+")


def _skip_reason() -> str | None:
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
        return "needs PostgreSQL + Redis"
    if not (os.environ.get("CI") or os.environ.get("MICROVERSE_FAULT_RESTARTS") == "1"):
        return "restarts shared services: set MICROVERSE_FAULT_RESTARTS=1 (CI sets CI)"
    if os.geteuid() != 0 or not all(shutil.which(c) for c in ("pg_ctlcluster", "pg_lsclusters", "redis-server",
                                                              "redis-cli", "pg_isready")):
        return "needs root and the PostgreSQL cluster tools and Redis binaries"
    return None


# ------------------------------------------------------------------------------------------------------ services


class Services:
    def __init__(self):
        port = int(connection.settings_dict.get("PORT") or 5432)
        self.pg_host = connection.settings_dict.get("HOST") or "127.0.0.1"
        self.pg_port = port
        clusters = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout
        found = [line.split()[:2] for line in clusters.splitlines() if len(line.split()) > 2
                 and line.split()[2] == str(port)]
        if not found:
            pytest.skip(f"no local PostgreSQL cluster on port {port}")
        self.pg_version, self.pg_cluster = found[0]
        broker = urlparse(settings.CELERY_BROKER_URL)
        self.redis_host, self.redis_port = broker.hostname or "127.0.0.1", broker.port or 6379

    def _pg(self, action: str, *extra: str):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", self.pg_version, self.pg_cluster, action,
                        *extra], check=False, capture_output=True, timeout=120)

    def pg_up(self) -> bool:
        return subprocess.run(["pg_isready", "-h", self.pg_host, "-p", str(self.pg_port), "-q"]).returncode == 0

    def redis_up(self) -> bool:
        return subprocess.run(["redis-cli", "-h", self.redis_host, "-p", str(self.redis_port), "ping"],
                              capture_output=True, text=True).stdout.strip() == "PONG"

    def stop_postgres(self):
        self._pg("stop", "-m", "fast")
        assert _wait(lambda: not self.pg_up(), 30), "PostgreSQL did not stop"

    def start_postgres(self):
        if not self.pg_up():
            self._pg("start")
        assert _wait(self.pg_up, 60), "PostgreSQL did not start again"

    def stop_redis(self):
        subprocess.run(["redis-cli", "-h", self.redis_host, "-p", str(self.redis_port), "shutdown", "nosave"],
                       capture_output=True, timeout=30)
        assert _wait(lambda: not self.redis_up(), 30), "Redis did not stop"

    def start_redis(self):
        if not self.redis_up():
            Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
            Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
            subprocess.run([part.format(port=self.redis_port) for part in REDIS_START], check=False,
                           capture_output=True, timeout=30)
        assert _wait(self.redis_up, 30), "Redis did not start again"


def _wait(condition, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture
def restartable():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    services_ = Services()
    try:
        yield services_
    finally:
        # Whatever happened, the rest of the run needs both services, and this thread a working connection.
        services_.start_redis()
        services_.start_postgres()
        connection.close()


# --------------------------------------------------------------------------------------------------------- client


@pytest.fixture
def expert_session(live_server, expert, expert2, expert3, admin_user):
    """A requests session logged in as `expert` on the live server, and 8 task-voting items on their panel."""
    items = []
    for n in range(8):
        item = services.review_item_open(workflow="task_voting",
                                         target=CandidateTask.objects.create(source_title=f"restart {n}",
                                                                             prompt=f"prompt {n}", level="Organ-level"))
        services.panel_assign(item=item, experts=[expert, expert2, expert3], assigned_by=admin_user)
        items.append(item.pk)
    from django.test import Client

    def session_for(user):
        client = Client()
        client.force_login(user)
        http = requests.Session()
        http.cookies.set(settings.SESSION_COOKIE_NAME, client.cookies[settings.SESSION_COOKIE_NAME].value)
        page = http.get(f"{live_server.url}/healthz", timeout=10)
        assert page.status_code == 200
        http.get(f"{live_server.url}/review/", timeout=10)  # sets the CSRF cookie
        return http

    return session_for(expert), session_for(admin_user), items


def _vote(http, live_server, item_id: int, value: str = "keep"):
    return http.post(f"{live_server.url}/review/task_voting/items/{item_id}/decision/",
                     data={"value": value}, timeout=30,
                     headers={"HX-Request": "true", "X-CSRFToken": http.cookies.get("csrftoken", ""),
                              "Referer": f"{live_server.url}/review/task_voting/"})


def _export(http, live_server):
    return http.post(f"{live_server.url}/benchmark/exports/", data={"style": "released"}, timeout=60,
                     allow_redirects=False,
                     headers={"X-CSRFToken": http.cookies.get("csrftoken", ""),
                              "Referer": f"{live_server.url}/benchmark/"})


def _assert_clean_failure(response):
    assert response.status_code >= 500 or response.status_code in (409, 503), response.status_code
    assert not TRACEBACK.search(response.text), response.text[:2000]


def _assert_consistent(expected_decisions: int):
    decisions = list(Decision.objects.values_list("item_id", "expert_id"))
    assert len(decisions) == expected_decisions
    logged = set(ActionLog.objects.filter(verb="decide").values_list("item_id", "actor_id"))
    assert set(decisions) == logged, "a decision without its log row, or a log row without its decision"
    done = set(Assignment.objects.filter(status=Assignment.Status.DONE).values_list("item_id", "expert_id"))
    assert set(decisions) == done, "a decision whose assignment is not done, or the other way round"
    assert ReviewItem.objects.count() == 8


# ---------------------------------------------------------------------------------------------------------- tests


def test_requests_fail_cleanly_while_services_are_down_and_succeed_after(restartable, live_server, expert_session,
                                                                          settings):
    settings.DEBUG = False
    http, admin_http, items = expert_session
    assert _vote(http, live_server, items[0]).status_code == 200

    # ---- Redis down: votes still work (the broker is not needed to record them); the export needs it
    restartable.stop_redis()
    try:
        started = time.monotonic()
        vote = _vote(http, live_server, items[1])
        assert vote.status_code == 200 and "Saved" in vote.text
        assert time.monotonic() - started < 20, "a vote waited on the broker"
        assert http.get(f"{live_server.url}/healthz", timeout=10).status_code == 200
        export = _export(admin_http, live_server)
        assert export.status_code in (302, 200) or export.status_code >= 500
        if export.status_code >= 500:
            _assert_clean_failure(export)
    finally:
        restartable.start_redis()
    # ---- Redis back: the same requests succeed, no manual step
    assert _wait(lambda: _export(admin_http, live_server).status_code == 302, 30), "exports do not work again"
    assert _vote(http, live_server, items[2]).status_code == 200

    # ---- PostgreSQL down: requests that need it fail cleanly; the trivial view still answers
    restartable.stop_postgres()
    try:
        for item in items[3:5]:
            _assert_clean_failure(_vote(http, live_server, item))
        _assert_clean_failure(http.get(f"{live_server.url}/review/task_voting/", timeout=30))
        assert http.get(f"{live_server.url}/healthz", timeout=10).status_code == 200
    finally:
        restartable.start_postgres()
    connection.close()  # this thread's connection died with the server; the next query opens a new one

    # ---- PostgreSQL back: the live server's next requests open new connections (health checks)
    assert _wait(lambda: _vote(http, live_server, items[5]).status_code == 200, 30), "votes do not work again"
    page = http.get(f"{live_server.url}/review/task_voting/", timeout=30)
    assert page.status_code == 200
    assert _vote(http, live_server, items[6]).status_code == 200

    # ---- nothing half written: the votes that were answered 200 exist, with their log rows; the failed ones don't
    voted = {items[0], items[1], items[2], items[5], items[6]}
    _assert_consistent(len(voted))
    assert set(Decision.objects.values_list("item_id", flat=True)) == voted
    assert not BenchmarkExport.objects.filter(status=BenchmarkExport.Status.RUNNING).exists()
