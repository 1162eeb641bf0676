"""Smoke tests of the test infrastructure itself: vendored files, the Celery worker fixture, the browser fixtures."""
import hashlib
import re
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import start_celery_worker, stop_celery_worker

VENDOR = Path(settings.BASE_DIR) / "static" / "vendor"


def test_vendored_files_match_versions_md():
    table = (VENDOR / "VERSIONS.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", table, flags=re.MULTILINE)
    assert {name for name, _ in rows} == {"htmx.min.js", "chart.umd.min.js"}
    for name, sha256 in rows:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == sha256, name


@pytest.mark.worker
def test_worker_runs_on_the_test_database(celery_worker_process):
    from django.db import connection

    assert celery_worker_process.alive()
    name = str(connection.settings_dict["NAME"])
    assert celery_worker_process.database_url.endswith(name if "/" in name else f"/{name}")
    assert celery_worker_process.broker_url == settings.CELERY_BROKER_URL
    log = celery_worker_process.log()
    for queue in ("default", "cpu", "llm", "gpu"):
        assert re.search(rf"\.> {queue}\s+exchange=", log), f"queue {queue} missing from the worker banner:\n{log}"


@pytest.mark.worker
@pytest.mark.parametrize("queue", ["default", "cpu", "llm", "gpu"])
def test_worker_consumes_each_queue(celery_worker_process, queue):
    from microverse_site.celery import app

    # celery.backend_cleanup is built into Celery and does nothing without a result backend: a round trip
    # through the broker with no task of our own.
    result = app.send_task("celery.backend_cleanup", queue=queue)
    celery_worker_process.wait_for_log(f"Task celery.backend_cleanup[{result.id}] succeeded", timeout=30)


@pytest.mark.worker
@pytest.mark.slow
def test_a_worker_starts_and_stops_cleanly(celery_worker_process, tmp_path):
    worker = start_celery_worker(celery_worker_process.database_url, celery_worker_process.broker_url,
                                 tmp_path / "worker.log", settings)
    assert worker.alive()
    assert stop_celery_worker(worker.process) == 0, worker.log()
    assert "Traceback" not in worker.log()


@pytest.mark.browser
def test_browser_renders_a_page(browser):
    page = browser.new_page()
    try:
        page.set_content("<form><label>User <input name='username'></label></form>")
        assert page.get_by_label("User").count() == 1
    finally:
        page.close()


@pytest.mark.browser
def test_login_page_shows_the_login_form(browser, live_server):
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(live_server.url + "/accounts/login/")
        assert response is not None and response.status == 200
        form = page.locator("form", has=page.locator("input[name=username]"))
        assert form.count() == 1
        assert form.locator("input[name=password][type=password]").count() == 1
    finally:
        context.close()


@pytest.mark.browser
def test_page_for_logs_in_through_the_form(page_for, expert):
    page = page_for(expert)
    assert settings.SESSION_COOKIE_NAME in {cookie["name"] for cookie in page.context.cookies()}
