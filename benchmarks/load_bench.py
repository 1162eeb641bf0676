"""Load benchmark: 50 concurrent experts working their queues on a seeded PostgreSQL database, served by gunicorn
with the production settings on 127.0.0.1, beside a trivial view measured in the same run.

    .venv/bin/python benchmarks/load_bench.py                       # full scale (seed_scale defaults), 50 experts
    .venv/bin/python benchmarks/load_bench.py --scale reduced       # a tenth of the data
    .venv/bin/python benchmarks/load_bench.py --reuse               # the database seeded by an earlier run
    .venv/bin/python benchmarks/load_bench.py --scale smoke --users 10 --duration 20   # a quick smoke run

What it does (see benchmarks/README.md, "Load"):

1. creates the database (default ``microverse_load`` on ``postgres://postgres@127.0.0.1:5432``), migrates it and
   runs ``manage.py seed_scale`` at the chosen scale (``--reuse`` skips this), then computes the agreement reports
   once (what the worker keeps up to date afterwards);
2. starts a Celery worker (Redis, database ``--redis-db``; it recomputes the agreement reports as decisions arrive)
   and gunicorn (``microverse_site.production``, ``DJANGO_SECURE_SSL_REDIRECT=false``, ``ALLOWED_HOSTS=127.0.0.1``,
   ``--workers``, sync workers);
3. runs locust (as a library, headless, in this process): ``--users`` experts, spread over the seeded expert accounts
   (``scale-expert01`` ...), each working its own share of its account's waiting task-voting items: open the item
   (``GET /review/task_voting/?item=N``, the full page), submit a keep/reject vote the way the page does it (htmx
   ``POST``, answered by the next item's panel), with a think time between actions; one admin opening the agreement
   page and the pipeline funnel now and then; one client asking for ``/healthz`` (the trivial view) a few times a
   second;
4. prints p50 / p95 / p99 and errors per endpoint, the ratio of the expert pages' p95 to the trivial view's (goal:
   at most 2x, no errors), checks that every successful vote added exactly one decision, and writes the figures as
   JSON (``--out``).

The production settings mark cookies Secure; over plain HTTP on loopback the load generator keeps the cookies by
hand and sends them back (Django itself is unchanged).
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from locust import HttpUser, constant_pacing, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from bench_machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PASSWORD = "scale-password-123"
SCALES = {
    "full": dict(experts=10, candidates=8000, tasks=459, clips=100_000, decisions=500_000, log_rows=1_000_000),
    "reduced": dict(experts=10, candidates=8000, tasks=459, clips=10_000, decisions=50_000, log_rows=100_000),
    "smoke": dict(experts=10, candidates=400, tasks=20, clips=500, decisions=2_000, log_rows=5_000),
}
EXPERT_PAGES = ("expert: open item", "expert: submit vote")
TRIVIAL = "trivial: /healthz"
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')

# Filled in by main() before the users start.
CONFIG = {"accounts": [], "think": (2.0, 5.0), "admin_every": 15.0}
_slots = itertools.count()
RESULTS = {"votes_ok": 0, "votes_total": 0, "votes_sent": 0, "ready": 0}


# ------------------------------------------------------------------------------------------------------ users


class Session:
    """The user's cookies, kept by hand: the production settings mark them Secure, which a cookie jar does not send
    back over loopback HTTP (Django itself is unchanged)."""

    def __init__(self, user: HttpUser):
        self.user = user
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, **kwargs):
        kwargs.setdefault("cookies", self.cookies)
        context = kwargs.pop("catch_response", False)
        response_or_cm = self.user.client.request(method, url, catch_response=context, **kwargs)
        return response_or_cm

    def keep(self, response):
        for cookie in response.cookies:
            self.cookies[cookie.name] = cookie.value
        for past in getattr(response, "history", []):
            for cookie in past.cookies:
                self.cookies.setdefault(cookie.name, cookie.value)
        self.user.client.cookies.clear()
        return response

    def get(self, url: str, **kwargs):
        return self.keep(self.request("GET", url, **kwargs))

    def csrf_headers(self, referer: str) -> dict:
        return {"X-CSRFToken": self.cookies.get("csrftoken", ""), "Referer": f"{self.user.host}{referer}"}


def _log_in(user: HttpUser, username: str) -> Session:
    session = Session(user)
    page = session.get("/accounts/login/", name="login")
    token = CSRF_RE.search(page.text)
    with session.request("POST", "/accounts/login/", name="login", catch_response=True, allow_redirects=False,
                         data={"username": username, "password": PASSWORD,
                               "csrfmiddlewaretoken": token.group(1) if token else ""},
                         headers=session.csrf_headers("/accounts/login/")) as response:
        session.keep(response)
        if response.status_code != 302:
            response.failure(f"login as {username} answered {response.status_code}")
    return session


class Expert(HttpUser):
    """One expert session: its share of its account's waiting items, one after another."""

    weight = 50

    def wait_time(self):
        return random.uniform(*CONFIG["think"])

    def on_start(self):
        slot = next(_slots)
        accounts = CONFIG["accounts"]
        self.account = accounts[slot % len(accounts)]
        sessions_per_account = max(1, -(-CONFIG["users"] // len(accounts)))
        self.share = (slot // len(accounts), sessions_per_account)
        self.session = _log_in(self, self.account)
        waiting, url = [], "/api/review/task_voting/queue/?page_size=500"
        while url:  # the account's whole queue (its waiting items come last), page by page
            queue = self.session.get(url, name="expert: queue API").json()
            waiting += [r["item"] for r in queue.get("results", []) if r["status"] == "assigned"]
            url = queue.get("next")
        index, count = self.share
        # Shares by a hash of the item id, not by place in the list: the sessions of one account fetch the queue at
        # different moments while the others vote, so their lists differ and slices of them would overlap. (Not by
        # id modulo the count either: the seeded panels give an account ids of only a few residues.)
        self.items = [item for item in waiting if random.Random(item).randrange(count) == index]
        self.item = None
        RESULTS["ready"] += 1

    @task
    def work(self):
        if not self.items:
            self.session.get("/review/task_voting/", name="expert: queue page")
            return
        if self.item is None:
            self.item = self.items.pop(0)
            page = self.session.get(f"/review/task_voting/?item={self.item}", name="expert: open item")
            if page.history or "/accounts/login/" in page.url:
                raise RuntimeError(f"{self.account} is not logged in")
            return
        vote = random.choice(("keep", "keep", "reject"))
        RESULTS["votes_sent"] += 1
        with self.session.request("POST", f"/review/task_voting/items/{self.item}/decision/",
                                  name="expert: submit vote", data={"value": vote, "comment": ""},
                                  catch_response=True,
                                  headers={"HX-Request": "true",
                                           **self.session.csrf_headers("/review/task_voting/")}) as response:
            self.session.keep(response)
            if response.status_code == 200 and "Saved" in response.text:
                RESULTS["votes_ok"] += 1
                RESULTS["votes_total"] += 1
                response.success()
            elif response.status_code == 200:
                response.failure("the vote was not saved")
        self.item = None


class Admin(HttpUser):
    """An admin looking at the agreement page and the pipeline funnel now and then."""

    fixed_count = 1

    def wait_time(self):
        return CONFIG["admin_every"]

    def on_start(self):
        self.session = _log_in(self, "scale-admin")
        self.turn = 0
        RESULTS["ready"] += 1

    @task
    def look(self):
        self.turn += 1
        if self.turn % 2:
            self.session.get("/manage/agreement/", name="admin: agreement page")
        else:
            self.session.get("/pipeline/", name="admin: funnel page")


class Probe(HttpUser):
    """The trivial view, a few times a second, in the same run."""

    fixed_count = 1
    wait_time = constant_pacing(0.25)

    @task
    def health(self):
        self.client.get("/healthz", name=TRIVIAL)


# ------------------------------------------------------------------------------------------------ orchestration


def _run(command, env, **kwargs):
    print("+", " ".join(str(c) for c in command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=True, **kwargs)


def _database(url_base: str, name: str):
    import psycopg

    with psycopg.connect(f"{url_base}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def _wait_http(url: str, timeout: float = 60.0):
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _count_decisions(env) -> int:
    out = subprocess.run([PYTHON, "manage.py", "shell", "-c",
                          "from annotation.models import Decision; print(Decision.objects.count())"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def _stop(process: subprocess.Popen, timeout: float = 20.0):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _figures(stats) -> dict:
    rows = {}
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        if not entry.num_requests and not entry.num_failures:
            continue
        rows[entry.name] = {
            "method": entry.method, "requests": entry.num_requests, "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.50), "p95_ms": entry.get_response_time_percentile(0.95),
            "p99_ms": entry.get_response_time_percentile(0.99), "max_ms": round(entry.max_response_time or 0, 1),
            "mean_ms": round(entry.avg_response_time, 1), "rps": round(entry.total_rps, 2),
        }
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--reuse", action="store_true", help="use the database an earlier run seeded")
    parser.add_argument("--database", default="microverse_load")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument("--users", type=int, default=50, help="concurrent experts (default 50)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load after the ramp-up")
    parser.add_argument("--spawn-rate", type=float, default=10.0)
    parser.add_argument("--think", type=float, nargs=2, default=(2.0, 5.0), metavar=("MIN", "MAX"),
                        help="an expert's seconds between two actions (default 2 5)")
    parser.add_argument("--admin-every", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="gunicorn workers")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default=str(ROOT / "var" / "load_bench.json"))
    args = parser.parse_args(argv)

    database_url = f"{args.postgres}/{args.database}"
    env = dict(os.environ)
    env.update(DATABASE_URL=database_url, CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{args.redis_db}",
               DJANGO_SETTINGS_MODULE="microverse_site.settings", LOG_LEVEL="WARNING")
    env.pop("CELERY_BROKER_DIR", None)
    sizes = SCALES[args.scale]
    seed_seconds = None
    if not args.reuse:
        _database(args.postgres, args.database)
        _run([PYTHON, "manage.py", "migrate", "-v0"], env)
        started = time.perf_counter()
        _run([PYTHON, "manage.py", "seed_scale", *[f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]], env)
        seed_seconds = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    _run([PYTHON, "manage.py", "shell", "-c",
          "from annotation import agreement_cache\n"
          "for w in ('task_voting', 'clip_verification', 'caption_check'):\n"
          "    e = agreement_cache.recompute(w); print(w, e['report']['n_ratings'], 'decisions', e['seconds'], 's')"],
         env)
    precompute_seconds = round(time.perf_counter() - started, 1)

    production = dict(env)
    production.update(DJANGO_SETTINGS_MODULE="microverse_site.production",
                      DJANGO_SECRET_KEY=secrets.token_urlsafe(64), DJANGO_SECURE_SSL_REDIRECT="false",
                      DJANGO_ALLOWED_HOSTS="127.0.0.1", DJANGO_DEBUG="false")
    log_dir = ROOT / "var" / "load_bench_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "microverse_site", "worker", "-I", "annotation.agreement_cache",
         "-Q", "default", "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=production, stdout=open(log_dir / "worker.log", "wb"), stderr=subprocess.STDOUT)
    server = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "microverse_site.wsgi", "-b", f"127.0.0.1:{args.port}",
         "--workers", str(args.workers), "--access-logfile", "-", "--error-logfile", "-"],
        cwd=ROOT, env=production, stdout=open(log_dir / "gunicorn.log", "wb"), stderr=subprocess.STDOUT)
    host = f"http://127.0.0.1:{args.port}"
    try:
        _wait_http(f"{host}/healthz")
        decisions_before = _count_decisions(env)
        CONFIG.update(accounts=[f"scale-expert{n:02d}" for n in range(1, sizes["experts"] + 1)],
                      think=tuple(args.think), admin_every=args.admin_every, users=args.users)
        environment = Environment(user_classes=[Expert, Admin, Probe], host=host)
        runner = environment.create_local_runner()
        total_users = args.users + 2
        runner.start(total_users, spawn_rate=args.spawn_rate)
        started = time.monotonic()
        print(f"ramping up {total_users} users (logins, queue fetches), then measuring for {args.duration:.0f} s",
              flush=True)
        while RESULTS["ready"] < args.users + 1 and time.monotonic() - started < 600:
            gevent.sleep(0.5)
        gevent.sleep(5)  # the first actions after the logins
        print(f"ramp-up took {time.monotonic() - started:.0f} s", flush=True)
        environment.stats.reset_all()  # measure the steady state only (logins and queue fetches are in the ramp)
        RESULTS["votes_ok"] = 0
        gevent.sleep(args.duration)
        runner.quit()
        figures = _figures(environment.stats)
        error_list = [{"endpoint": e.name, "error": str(e.error)[:300], "occurrences": e.occurrences}
                      for e in environment.stats.errors.values()]
        gevent.sleep(1)
        decisions_after = _count_decisions(env)
    finally:
        _stop(server)
        _stop(worker)

    trivial = figures.get(TRIVIAL, {})
    expert_p95 = max((figures[n]["p95_ms"] for n in EXPERT_PAGES if n in figures), default=None)
    ratio = round(expert_p95 / trivial["p95_ms"], 2) if expert_p95 and trivial.get("p95_ms") else None
    errors = sum(r["failures"] for r in figures.values())
    result = {
        "scale": args.scale, "sizes": sizes, "users": args.users, "duration_s": args.duration,
        "think_s": list(args.think), "gunicorn_workers": args.workers, "seed_seconds": seed_seconds,
        "precompute_seconds": precompute_seconds, "endpoints": figures, "expert_p95_ms": expert_p95,
        "trivial_p95_ms": trivial.get("p95_ms"), "ratio_expert_p95_to_trivial": ratio, "errors": errors,
        "error_details": error_list, "votes_saved_measured": RESULTS["votes_ok"], "votes_saved_total": RESULTS["votes_total"],
        "votes_sent_total": RESULTS["votes_sent"], "decisions_added": decisions_after - decisions_before,
        "machine": describe(),
        "load_average_at_end": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"\n| endpoint | requests | errors | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|")
    for name, row in figures.items():
        print(f"| {name} | {row['requests']} | {row['failures']} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
              f"{row['p99_ms']:.0f} | {row['max_ms']:.0f} |")
    print(f"\nexpert pages p95 {expert_p95} ms / trivial p95 {trivial.get('p95_ms')} ms = {ratio}x "
          f"(goal <= 2x); errors: {errors}")
    consistent = RESULTS["votes_total"] <= result["decisions_added"] <= RESULTS["votes_sent"]
    result["decisions_consistent"] = consistent
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"votes saved: {RESULTS['votes_ok']} in the measured window, {RESULTS['votes_total']} in all, "
          f"{RESULTS['votes_sent']} sent; decisions added: {result['decisions_added']} (each saved vote is one new "
          f"decision; votes still in flight when the load stopped may be saved too): "
          f"{'consistent' if consistent else 'INCONSISTENT'}")
    for error in error_list:
        print(f"error: {error['endpoint']}: {error['error']} x{error['occurrences']}")
    print(f"figures written to {args.out}")
    return 0 if errors == 0 and consistent else 1


if __name__ == "__main__":
    sys.exit(main())
