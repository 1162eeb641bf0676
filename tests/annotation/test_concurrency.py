"""Many experts voting at the same moment: every vote is recorded once, every item is decided exactly once, and
every accepted candidate becomes exactly one BenchmarkTask with its own index.

Needs PostgreSQL (row locks and concurrent writers); SQLite serialises writers on one database lock and answers
concurrent writes with "database is locked", so the test is skipped there."""
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection

from annotation import services
from annotation.models import ActionLog, Decision, ReviewItem
from rubrics.models import BenchmarkTask, CandidateTask, Level

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("sqlite" in settings.DATABASES["default"]["ENGINE"],
                       reason="concurrency needs PostgreSQL: SQLite serialises all writers on one database lock "
                              "(set DATABASE_URL=postgres://... to run it)"),
]

ITEMS = 20
WORKERS = 12


def _votes_for(n: int) -> tuple[str, str, str]:
    """A mix of outcomes: unanimous keeps, 2-1 keeps, 2-1 rejects, unanimous rejects."""
    return [("keep", "keep", "keep"), ("keep", "reject", "keep"), ("reject", "keep", "reject"),
            ("reject", "reject", "reject"), ("keep", "keep", "reject")][n % 5]


def test_sixty_simultaneous_votes_plus_duplicates(expert, expert2, expert3, admin_user):
    BenchmarkTask.objects.create(index=459, prompt="existing task", requirement="r", level=Level.ORGAN)
    panel = [expert, expert2, expert3]
    items = []
    for n in range(ITEMS):
        candidate = CandidateTask.objects.create(status=CandidateTask.Status.VOTING, level=Level.CELLULAR,
                                                 prompt=f"Prompt {n}", source_title=f"Source {n}")
        item = services.review_item_open(workflow="task_voting", target=candidate)
        services.panel_assign(item=item, experts=panel, assigned_by=admin_user)
        items.append(item)

    jobs = [(item.pk, expert_index, _votes_for(n)[expert_index])
            for n, item in enumerate(items) for expert_index in range(3)]
    duplicates = jobs[::4]  # the same vote again: double clicks, retries, a second tab
    jobs = jobs + duplicates
    random.Random(7).shuffle(jobs)
    users = {i: u for i, u in enumerate(panel)}

    def submit(job):
        item_pk, expert_index, value = job
        try:
            result = services.decision_submit(item=ReviewItem(pk=item_pk), expert=users[expert_index], value=value)
            return ("changed" if result.changed else "repeat"), result.outcome
        except ValidationError as exc:  # pragma: no cover - would mean a lost vote
            return "refused", str(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(submit, jobs))

    kinds = Counter(kind for kind, _ in results)
    assert kinds == {"changed": 60, "repeat": len(duplicates)}, results
    assert Decision.objects.count() == 60
    assert Decision.objects.values("item", "expert").distinct().count() == 60

    expected = {item.pk: ("accepted" if list(_votes_for(n)).count("keep") >= 2 else "rejected")
                for n, item in enumerate(items)}
    statuses = dict(ReviewItem.objects.values_list("pk", "status"))
    assert statuses == expected
    accepted = sum(1 for s in expected.values() if s == "accepted")
    assert accepted == 12  # 3 of every 5 patterns keep

    decided_logs = Counter(ActionLog.objects.filter(verb__in=["item_accepted", "item_rejected"])
                           .values_list("item_id", flat=True))
    assert decided_logs == {pk: 1 for pk in expected}, decided_logs
    for verb, outcome in (("item_accepted", "accepted"), ("item_rejected", "rejected")):
        assert ActionLog.objects.filter(verb=verb).count() == sum(1 for s in expected.values() if s == outcome)
    assert ActionLog.objects.filter(verb="decide").count() == 60

    new_tasks = BenchmarkTask.objects.exclude(index=459)
    assert new_tasks.count() == accepted
    indices = sorted(new_tasks.values_list("index", flat=True))
    assert indices == list(range(460, 460 + accepted))  # next free indices, none twice, no gap
    assert ActionLog.objects.filter(verb="task_created").count() == accepted
    assert CandidateTask.objects.filter(status="accepted", task__isnull=False).count() == accepted
    assert CandidateTask.objects.filter(status="rejected", task__isnull=True).count() == ITEMS - accepted
