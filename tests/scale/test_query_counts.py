"""Every page and API list endpoint runs the same number of SQL queries whatever the data size.

Each URL is requested at two sizes of the same realistic data (``manage.py seed_scale``: candidates, review items
with panels and decisions in three workflows, benchmark tasks with rubrics, videos with stage runs, clips, captions,
the action log), about ten times more rows the second time, by the first role that may see it (admin, researcher,
expert); the query counts must be equal. A warm-up request first fills the per-process caches (content types,
sessions) and the cached reports (the agreement report is recomputed once when the decisions change), so that only
the data size differs between the two counts.

Pages whose data seed_scale does not make (judging, training jobs, revision rounds, snapshots) are still requested:
their count must not change with the data above either.
"""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotation.models import Assignment, ReviewItem
from datasets.models import Caption, Clip, SourceVideo
from rubrics.models import BenchmarkTask

pytestmark = pytest.mark.django_db

PASSWORD = "scale-password-123"
SMALL = dict(experts=3, candidates=3, tasks=3, clips=3, videos=1, decisions=12, log_rows=20)
LARGE = dict(experts=3, candidates=30, tasks=30, clips=60, videos=10, decisions=150, log_rows=300)
ROLES = ("scale-admin", "scale-researcher", "scale-expert01")


def seed(sizes: dict, *, force: bool = False, seed_value: int = 0):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()] + [f"--seed={seed_value}", "--batch=500"]
    call_command("seed_scale", *args, *(["--force"] if force else []), stdout=open("/dev/null", "w"))


def first_video_pk():
    return SourceVideo.objects.filter(admission=SourceVideo.Admission.ADMITTED).order_by("pk").values_list(
        "pk", flat=True).first()


def first_task_index():
    return BenchmarkTask.objects.order_by("index").values_list("index", flat=True).first()


def first_clip_pk():
    return Caption.objects.order_by("pk").values_list("clip_id", flat=True).first() or Clip.objects.order_by(
        "pk").values_list("pk", flat=True).first()


def expert_item_pk():
    return Assignment.objects.filter(expert__username="scale-expert01",
                                     item__workflow="task_voting").order_by("pk").values_list("item_id",
                                                                                             flat=True).first()


# (url, a function giving the url's argument at request time or None). The object asked for (a video, a task, an
# item) is the first one, which exists at both sizes: its own size does not change, the rest of the data does.
URLS = [
    ("/", None),
    ("/review/", None),
    ("/review/task_voting/", None),
    ("/review/clip_verification/", None),
    ("/review/caption_check/", None),
    ("/review/task_voting/panels/", None),
    ("/manage/users/", None),
    ("/manage/log/", None),
    ("/manage/log/?workflow=task_voting&verb=decide", None),
    ("/manage/log.csv?verb=item_accepted", None),
    ("/manage/agreement/", None),
    ("/tasks/", None),
    ("/tasks/?level=Cellular-level&q=microscopy", None),
    ("/tasks/{}/", first_task_index),
    ("/benchmark/", None),
    ("/candidates/", None),
    ("/revisions/", None),
    ("/revisions/adjudication/", None),
    ("/videos/upload/", None),
    ("/pipeline/", None),
    ("/pipeline/videos/", None),
    ("/pipeline/videos/{}/", first_video_pk),
    ("/pipeline/videos/{}/stages/", first_video_pk),
    ("/pipeline/snapshots/", None),
    ("/pipeline/classifiers/", None),
    ("/captions/", None),
    ("/captions/clips/{}/", first_clip_pk),
    ("/judging/", None),
    ("/judging/consistency/", None),
    ("/judging/human/", None),
    ("/judging/pairwise/", None),
    ("/jobs/", None),
    # API lists
    ("/api/tasks/", None),
    ("/api/tasks/{}/versions/", first_task_index),
    ("/api/exports/", None),
    ("/api/review/task_voting/queue/", None),
    ("/api/review/clip_verification/queue/", None),
    ("/api/review/items/{}/", expert_item_pk),
    ("/api/log/", None),
    ("/api/revisions/", None),
    ("/api/revisions/adjudications/", None),
    ("/api/videos/", None),
    ("/api/jobs/", None),
]


def _url(template: str, argument) -> str:
    return template.format(argument()) if argument else template


def _get(client, url: str):
    response = client.get(url)
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)  # a streamed body runs its queries while it is read
    return response


def _count(client, url: str) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = _get(client, url)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    return len(captured), [q["sql"] for q in captured.captured_queries]


def _client_for(client, url: str):
    """Log in as the first seeded role that may see `url`."""
    from django.contrib.auth import get_user_model

    for username in ROLES:
        client.force_login(get_user_model().objects.get(username=username))
        if _get(client, url).status_code == 200:
            return username
    pytest.fail(f"no seeded role may see {url}")


@pytest.fixture(autouse=True)
def _fresh_caches():
    from django.core.cache import cache

    from annotation import agreement_cache

    cache.clear()
    yield
    cache.clear()
    agreement_cache.clear()


@pytest.mark.parametrize("template,argument", URLS, ids=[u for u, _ in URLS])
def test_query_count_does_not_grow_with_the_data(client, template, argument):
    seed(SMALL)
    url = _url(template, argument)
    _client_for(client, url)
    _get(client, url)  # warm-up: per-process caches, and cached reports (the agreement) for this data
    small, small_sql = _count(client, url)
    seed(LARGE, force=True, seed_value=1)
    assert ReviewItem.objects.count() > 5 * 6 and SourceVideo.objects.count() >= 10
    _get(client, url)  # warm-up again: a cached report is recomputed once for the new data, then read
    large, large_sql = _count(client, url)
    assert large == small, (f"{url}: {small} queries with the small data, {large} with ten times more; "
                            f"the extra ones:\n" + "\n".join(q for q in large_sql if q not in small_sql)[:4000])
