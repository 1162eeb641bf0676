"""Fixtures shared by the whole test suite.

Users
    ``make_user(username, role, password=TEST_PASSWORD)`` (a plain function, also a fixture of the same name) and
    the ready-made ``expert``, ``expert2``, ``expert3``, ``admin_user`` and ``researcher``; each role is the Django
    group of that name, as in production (``microverse_site.roles``). ``admin_user`` replaces pytest-django's
    superuser fixture of the same name with a plain user in the "admin" group.

Celery
    ``celery_worker_process``: a real ``celery worker`` subprocess on the test database (see its docstring).

Browser
    ``browser``: one headless Chromium for the session, driven by Playwright's sync API;
    ``page_for(user)``: a fresh browser context logged in as ``user`` through the real login form on
    ``live_server``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from tests.fakes.fixtures import chat_server, llm_endpoint, worker_environment  # noqa: F401  (shared fixtures)

# Playwright's sync API runs an asyncio event loop in the test's thread; without this Django refuses ORM calls
# made while it runs (SynchronousOnlyOperation). Must be set before any test touches the database.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

TEST_PASSWORD = "pw-for-tests-123"
WORKER_QUEUES = ("default", "cpu", "llm", "gpu")
WORKER_START_TIMEOUT = float(os.environ.get("TEST_WORKER_START_TIMEOUT", "60"))
WORKER_STOP_TIMEOUT = 15.0

CHROMIUM_PATH_DEFAULT = "/usr/bin/chromium"
# --headless itself comes from Playwright's headless=True. Without the background-networking flags Chromium
# keeps trying to reach Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --------------------------------------------------------------------------------------------------- users


def make_user(username: str, role: str | None, password: str = TEST_PASSWORD, **fields):
    """Create a user with `password` in the group named `role` ("expert", "admin", "researcher"; None: no role).

    Needs database access (the `db` or `transactional_db` fixture, or a fixture that uses one)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    fields.setdefault("email", f"{username}@example.org")
    user = get_user_model().objects.create_user(username=username, password=password, **fields)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture(name="make_user")
def make_user_fixture(db):
    """The `make_user` helper, with database access switched on."""
    return make_user


@pytest.fixture
def expert(db):
    return make_user("expert1", "expert")


@pytest.fixture
def expert2(db):
    return make_user("expert2", "expert")


@pytest.fixture
def expert3(db):
    return make_user("expert3", "expert")


@pytest.fixture
def admin_user(db):
    """A user in the "admin" group (not a Django superuser; overrides pytest-django's fixture)."""
    return make_user("admin", "admin")


@pytest.fixture
def researcher(db):
    return make_user("researcher", "researcher")


# -------------------------------------------------------------------------------------------------- celery


@dataclass
class CeleryWorker:
    """A running `celery worker` subprocess, as yielded by the `celery_worker_process` fixture."""

    process: subprocess.Popen
    hostname: str
    log_path: Path
    database_url: str
    broker_url: str

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """Wait until `text` appears in the worker's log; return the log. Fails if the worker dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            if not self.alive():
                pytest.fail(f"the Celery worker exited ({self.process.returncode}) before logging {text!r}:\n"
                            f"{_tail(self.log())}")
            time.sleep(0.1)
        pytest.fail(f"the Celery worker did not log {text!r} within {timeout:.0f} s:\n{_tail(self.log())}")


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _database_url(settings_dict: dict) -> str:
    """A DATABASE_URL (django-environ syntax) for the database `settings_dict` points at now, i.e. the test
    database once pytest-django has set it up."""
    engine = settings_dict["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        name = str(settings_dict["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError(f"a Celery worker cannot share the in-memory SQLite test database {name!r}: "
                               "the settings must give DATABASES['default']['TEST']['NAME'] a file")
        return "sqlite:///" + str(Path(name).resolve())
    schemes = {"django.db.backends.postgresql": "postgres", "django.contrib.gis.db.backends.postgis": "postgis"}
    if engine not in schemes:
        raise RuntimeError(f"celery_worker_process does not know how to write a URL for {engine}")
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or ""
    host = f"[{host}]" if ":" in host else quote(host, safe="")  # IPv6 literal, or a socket directory
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, (str, int))}
    query = f"?{urlencode(options)}" if options else ""
    return f"{schemes[engine]}://{auth}{host}{port}/{quote(settings_dict['NAME'], safe='')}{query}"


def _empty_broker_queues(settings) -> None:
    """Create the filesystem broker's folders and empty them; for other brokers, purge the worker's queues.

    Messages left by an earlier session (or by tests that enqueued work with no worker running) name rows of a
    test database that no longer exists; a worker must not pick them up."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "processed_folder"):
            if options.get(key):
                folder = Path(options[key])
                folder.mkdir(parents=True, exist_ok=True)
                for entry in folder.iterdir():
                    if entry.is_file():
                        entry.unlink(missing_ok=True)
        if options.get("control_folder"):
            Path(options["control_folder"]).mkdir(parents=True, exist_ok=True)
        return
    from microverse_site.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in WORKER_QUEUES:
            try:
                channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - a queue that was never declared has nothing to purge
                pass


def stop_celery_worker(process: subprocess.Popen, timeout: float = WORKER_STOP_TIMEOUT) -> int:
    """SIGTERM (Celery's warm shutdown: finish the current task), then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def start_celery_worker(database_url: str, broker_url: str, log_path: Path, settings) -> CeleryWorker:
    """Start `celery -A microverse_site worker` (this interpreter, solo pool, all queues) and wait until it is
    ready: it answers `control.ping()` where the broker supports it, and in any case logs "ready"."""
    hostname = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:6]}@localhost"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        CELERY_BROKER_DIR=str(settings.CELERY_BROKER_DIR),
        **worker_environment(),  # the worker's LLM calls go to the tests' local chat-completions server
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "microverse_site.settings"),
        PYTHONUNBUFFERED="1",
    )
    command = [
        sys.executable, "-m", "celery", "-A", "microverse_site", "worker",
        "--pool", "solo", "-Q", ",".join(WORKER_QUEUES), "--hostname", hostname,
        "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker = CeleryWorker(process, hostname, log_path, database_url, broker_url)
    try:
        worker.wait_for_log(" ready.", timeout=WORKER_START_TIMEOUT)
        if not broker_url.startswith("filesystem://"):
            _wait_for_ping(worker)
    except BaseException:
        stop_celery_worker(process)
        raise
    return worker


def _wait_for_ping(worker: CeleryWorker) -> None:
    from microverse_site.celery import app

    node = worker.hostname
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while time.monotonic() < deadline:
        if app.control.ping(destination=[node], timeout=1.0):
            return
        if not worker.alive():
            break
    pytest.fail(f"the Celery worker {node} does not answer ping:\n{_tail(worker.log())}")


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker subprocess for the whole session, consuming the queues default, cpu, llm and gpu.

    It runs `python -m celery -A microverse_site worker --pool solo` with this interpreter (so the same
    virtualenv) and the environment of the tests, except:

    * ``DATABASE_URL`` points at the *test* database pytest-django created (the settings' ``TEST["NAME"]``:
      ``var/test_db_<pid>.sqlite3`` on the embedded default, ``test_<name>_<pid>`` on PostgreSQL), built from
      ``connection.settings_dict`` after ``django_db_setup``;
    * ``CELERY_BROKER_URL`` and ``CELERY_BROKER_DIR`` are the tests' own (the settings give each test run a
      filesystem-broker folder ``var/broker-test-<pid>``, apart from a development worker's ``var/broker``).
      Before the worker starts, the filesystem broker's folders (``settings.CELERY_BROKER_TRANSPORT_OPTIONS``)
      are created and emptied; on other brokers (Redis) the four queues are purged, so that messages left by
      earlier runs, which name rows of a dropped test database, are not consumed. A development worker on the
      same Redis database would compete for messages: stop it, or give the tests another Redis database.

    It waits until the worker logs "ready" (and, on brokers with broadcast such as Redis, answers
    ``app.control.ping``), yields a :class:`CeleryWorker` (``.process``, ``.log()``, ``.wait_for_log(text)``,
    ``.alive()``), and at the end of the session stops it with SIGTERM, then SIGKILL.

    The worker writes through its own database connection, so a test that uses it must see committed data:
    use ``transactional_db`` or ``live_server`` (not ``db``, whose transaction the worker cannot see), and
    wait for the effect (poll the database or ``wait_for_log``) rather than assuming it is immediate. Tasks
    are sent with ``.delay()`` / ``.apply_async()`` as in production (``transaction.on_commit`` hooks do run
    under ``transactional_db``). Mark such tests ``@pytest.mark.worker``.
    """
    from django.conf import settings
    from django.db import connection

    with django_db_blocker.unblock():
        database_url = _database_url(connection.settings_dict)
        _empty_broker_queues(settings)
        log_path = tmp_path_factory.mktemp("celery") / "worker.log"
        worker = start_celery_worker(database_url, settings.CELERY_BROKER_URL, log_path, settings)
    try:
        yield worker
    finally:
        stop_celery_worker(worker.process)
        # The worker closes its connections as it exits; nothing else keeps the test database open, so
        # pytest-django can drop it (PostgreSQL refuses to drop a database that has sessions).


# ------------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Playwright, sync API) for the session.

    The executable is ``$CHROMIUM_PATH`` (default /usr/bin/chromium, Debian's ``chromium`` package, which
    scripts/setup installs); Playwright never downloads a browser here. Missing Chromium fails the test under
    CI and skips it elsewhere."""
    path = os.environ.get("CHROMIUM_PATH", CHROMIUM_PATH_DEFAULT)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        message = f"Chromium not found at {path}: run scripts/setup or set CHROMIUM_PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page_for(browser, live_server):
    """``page_for(user, password=TEST_PASSWORD)``: a new browser context logged in as `user` through the real
    login form (URL name "login", fields username/password) on ``live_server``; returns its page, whose
    relative URLs resolve against ``live_server.url``. Contexts are closed after the test.

    ``live_server`` makes the test transactional, so users from the user fixtures are committed and visible
    to the server thread."""
    from django.conf import settings
    from django.urls import reverse

    contexts = []
    login_path = reverse("login")

    def log_in(user, password: str = TEST_PASSWORD):
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.goto(login_path)
        form = page.locator("form", has=page.locator("input[name=username]"))
        form.locator("input[name=username]").fill(user.get_username())
        form.locator("input[name=password]").fill(password)
        with page.expect_navigation():
            form.locator("input[name=password]").press("Enter")
        if page.url.split("?")[0].endswith(login_path) or settings.SESSION_COOKIE_NAME not in {
            c["name"] for c in context.cookies()
        }:
            raise AssertionError(f"logging in as {user.get_username()!r} failed; the page says:\n"
                                 f"{page.locator('body').inner_text()[:2000]}")
        return page

    yield log_in
    for context in contexts:
        context.close()


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's own filesystem-broker folder (settings give each test run one under var/)."""
    import shutil

    from django.conf import settings

    folder = Path(getattr(settings, "CELERY_BROKER_DIR", ""))
    if folder.name.startswith("broker-test-"):
        shutil.rmtree(folder, ignore_errors=True)
    _remove_leftovers_of_dead_runs(Path(settings.VAR_DIR))


def _remove_leftovers_of_dead_runs(var_dir: Path) -> None:
    """Broker folders and SQLite test databases of test runs that were killed before they could clean up
    (their names end in the run's process id, and that process is gone)."""
    import re
    import shutil

    for path in [*var_dir.glob("broker-test-*"), *var_dir.glob("test_db_*.sqlite3*")]:
        match = re.match(r"(?:broker-test-|test_db_)(\d+)(?:\.sqlite3.*)?$", path.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # someone else's live process
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """Tests create many users; the production PBKDF2 cost is no part of what they check."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
