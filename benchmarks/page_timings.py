"""Single-request page timings on a seeded database: where each expert and admin page spends its time, with no
load beside it, next to the trivial view measured in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/microverse_load .venv/bin/python benchmarks/page_timings.py

The database must have been seeded by ``manage.py seed_scale`` (``benchmarks/load_bench.py`` leaves one behind as
``microverse_load``). Pages are fetched through Django's test client in this process with the development settings
(DEBUG off), so the figures are the view's own time and SQL, without gunicorn or the network. Each page is fetched
``--repeat`` times; the table gives the first fetch (cold: nothing cached in the shared store yet for the pipeline
page, which this script empties first), the median of the others, and the SQL queries of one fetch.
Read-only: each fetch runs in a transaction that is rolled back (the vote too), so nothing is written.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "microverse_site.settings")

from bench_machine import describe  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from annotation.models import Assignment, Decision
    from datasets import overview_cache
    from microverse_site.shared_cache import db_key, shared_store

    settings.ALLOWED_HOSTS = ["*"]
    users = get_user_model().objects
    expert = users.get(username="scale-expert01")
    admin = users.get(username="scale-admin")
    waiting = (Assignment.objects.filter(expert=expert, workflow="task_voting", status="assigned")
               .order_by("position").values_list("item_id", flat=True).first())
    done = (Assignment.objects.filter(expert=expert, workflow="task_voting", status="done")
            .order_by("-position").values_list("item_id", flat=True).first())
    print(f"database {connection.settings_dict['NAME']} ({connection.vendor}): "
          f"{Decision.objects.count():,} decisions, {Assignment.objects.filter(expert=expert).count():,} "
          f"assignments of {expert.username}")
    print(describe())

    expert_client, admin_client = Client(), Client()
    expert_client.force_login(expert)
    admin_client.force_login(admin)
    pages = [
        ("trivial: /healthz", Client(), "/healthz", {}),
        ("expert: open a waiting item (full page)", expert_client, f"/review/task_voting/?item={waiting}", {}),
        ("expert: a decided item (htmx panel)", expert_client, f"/review/task_voting/?item={done}",
         {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "panel"}),
        ("expert: where I left off", expert_client, "/review/task_voting/", {}),
        ("expert: queue API, first page", expert_client, "/api/review/task_voting/queue/", {}),
        ("expert: submit a vote (htmx; rolled back)", expert_client,
         f"POST /review/task_voting/items/{waiting}/decision/", {"HTTP_HX_REQUEST": "true"}),
        ("admin: agreement page", admin_client, "/manage/agreement/", {}),
        ("admin: pipeline funnel", admin_client, "/pipeline/", {}),
        ("admin: action log", admin_client, "/manage/log/", {}),
    ]
    Client().get("/healthz")  # warm up: the first request of a process imports the URL configuration
    # The pipeline page's first fetch counts (nothing stored under the current fingerprint yet).
    shared_store().delete(db_key("pipeline-overview:v1", "data", overview_cache.fingerprint()))

    print(f"\n| page | first ms | median ms (of {args.repeat - 1}) | queries |")
    print("|---|---|---|---|")
    for label, client, url, headers in pages:
        times, queries = [], 0
        for attempt in range(args.repeat):
            with transaction.atomic(), CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                if url.startswith("POST "):
                    response = client.post(url[5:], {"value": "keep", "comment": ""}, **headers)
                else:
                    response = client.get(url, **headers)
                times.append((time.perf_counter() - started) * 1000)
                transaction.set_rollback(True)  # read-only: the vote (and anything else) is undone
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code}")
            queries = len(captured)
        print(f"| {label} | {times[0]:,.0f} | {statistics.median(times[1:]):,.0f} | {queries} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
