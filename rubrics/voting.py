"""Task voting: what an accepted or rejected candidate becomes, and the candidate-specific reads of the voting pages.

The outcome handler runs inside the transaction of the decision that settled the item (annotation.services
.decision_submit holds the item's row lock), so the candidate's new status, its BenchmarkTask and the log row commit
together with the decision, or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Prefetch, Q, QuerySet

from annotation.models import Assignment, Decision, ReviewItem, Workflow
from annotation.services import log_action
from rubrics.candidates import rubric_draft_queue
from rubrics.models import BenchmarkTask, CandidateTask

WORKFLOW = Workflow.TASK_VOTING.value

# Any constant that is the same in every process: the key of the PostgreSQL advisory lock that serialises the
# allocation of task indices (two panels may accept two different candidates at the same moment).
_TASK_INDEX_LOCK = 7_346_190_001


def _lock_task_index() -> None:
    """Hold, until the transaction ends, the lock that makes "the next free index" unique across transactions.

    PostgreSQL: a transaction-scoped advisory lock; once we hold it, the MAX(index) read below sees every task that
    a previous holder committed (READ COMMITTED takes a new snapshot per statement). SQLite serialises writers on
    its own database lock, so nothing is needed there.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_TASK_INDEX_LOCK])


def next_task_index() -> int:
    return (BenchmarkTask.objects.aggregate(last=Max("index"))["last"] or 0) + 1


def handle_outcome(item: ReviewItem, outcome: str) -> None:
    """Outcome handler of the task_voting workflow (registered in rubrics.apps.RubricsConfig.ready()).

    accepted: the candidate becomes a BenchmarkTask with the next free index, its prompt, level and source;
    rejected: the candidate is marked rejected (it stays, with its votes, on the admins' panels page).
    Idempotent: a candidate that already has its task is left alone.
    """
    if not transaction.get_connection().in_atomic_block:  # pragma: no cover - a programming error
        raise RuntimeError("the task-voting outcome handler must run inside the deciding transaction")
    candidate = CandidateTask.objects.select_for_update().filter(pk=item.object_id).first()
    if candidate is None:
        return
    if outcome == "accepted":
        if candidate.task_id is not None:
            return
        _lock_task_index()
        task = BenchmarkTask.objects.create(
            index=next_task_index(), prompt=candidate.prompt, requirement="", level=candidate.level,
            source_url=candidate.source_url, source_title=candidate.source_title,
            source_id="_".join(part for part in (candidate.source_title, candidate.source_url) if part),
            source_metadata={"candidate": candidate.pk, "review_item": item.pk},
        )
        candidate.status, candidate.task = CandidateTask.Status.ACCEPTED, task
        candidate.save(update_fields=["status", "task"])
        log_action(actor=None, verb="task_created", item=item, target=task,
                   after={"task_index": task.index, "candidate": candidate.pk, "level": task.level})
        if settings.OPENAI_BASE_URL:
            # The new task has no rubric yet: the LLM drafts one (Appendix G) once this transaction commits.
            rubric_draft_queue(task_id=task.pk)
    elif outcome == "rejected":
        if candidate.status == CandidateTask.Status.REJECTED:
            return
        before = candidate.status
        candidate.status = CandidateTask.Status.REJECTED
        candidate.save(update_fields=["status"])
        log_action(actor=None, verb="candidate_rejected", item=item, target=candidate,
                   before={"status": before}, after={"status": candidate.status})


# ------------------------------------------------------------------------------------------------------ reads


def candidates_for(items) -> dict[int, CandidateTask]:
    """{item pk: its candidate} for task-voting items, in one query."""
    items = [i for i in items if i is not None]
    by_object = {c.pk: c for c in CandidateTask.objects.filter(pk__in=[i.object_id for i in items])
                 .select_related("task")}
    return {i.pk: by_object[i.object_id] for i in items if i.object_id in by_object}


def candidate_for(item: ReviewItem) -> CandidateTask | None:
    return candidates_for([item]).get(item.pk)


@dataclass
class PanelRow:
    """An item on the admins' panels page: its candidate, its panel and the votes cast (admins see all)."""

    item: ReviewItem
    candidate: CandidateTask | None
    assignments: list[Assignment]
    decisions: list[Decision]
    keeps: int = 0
    rejects: int = 0
    waiting_for: list = field(default_factory=list)  # experts on the panel who have not voted yet
    passed: list = field(default_factory=list)

    @property
    def active_experts(self):
        return [a.expert for a in self.assignments if a.status != Assignment.Status.PASSED]


def _items() -> QuerySet[ReviewItem]:
    return (ReviewItem.objects.filter(workflow=WORKFLOW)
            .prefetch_related(Prefetch("assignments", queryset=Assignment.objects.select_related("expert")
                                       .order_by("position", "pk")),
                              Prefetch("decisions", queryset=Decision.objects.select_related("expert")
                                       .order_by("created_at", "pk"))))


def panel_rows(items) -> list[PanelRow]:
    """PanelRows for prefetched items (see _items), with their candidates loaded in one more query."""
    items = list(items)
    candidates = candidates_for(items)
    rows = []
    for item in items:
        decisions = list(item.decisions.all())
        assignments = list(item.assignments.all())
        voted = {d.expert_id for d in decisions}
        rows.append(PanelRow(
            item=item, candidate=candidates.get(item.pk), assignments=assignments, decisions=decisions,
            keeps=sum(d.value == "keep" for d in decisions), rejects=sum(d.value == "reject" for d in decisions),
            waiting_for=[a.expert for a in assignments
                         if a.status == Assignment.Status.ASSIGNED and a.expert_id not in voted],
            passed=[a.expert for a in assignments if a.status == Assignment.Status.PASSED],
        ))
    return rows


def open_items() -> QuerySet[ReviewItem]:
    """Open task-voting items (panels still voting), oldest first, ready for panel_rows."""
    return _items().filter(status=ReviewItem.Status.OPEN).annotate(
        panel=Count("assignments", filter=~Q(assignments__status=Assignment.Status.PASSED), distinct=True)
    ).order_by("pk")


def split_items() -> QuerySet[ReviewItem]:
    """Items whose panel disagreed: at least one keep and at least one reject (any status)."""
    return _items().annotate(
        keeps=Count("decisions", filter=Q(decisions__value="keep"), distinct=True),
        rejects=Count("decisions", filter=Q(decisions__value="reject"), distinct=True),
    ).filter(keeps__gt=0, rejects__gt=0).order_by("-decided_at", "pk")


def rejected_items() -> QuerySet[ReviewItem]:
    """Items whose candidate the panel rejected, newest decision first."""
    return _items().filter(status=ReviewItem.Status.REJECTED).order_by("-decided_at", "-pk")


def counts() -> dict[str, int]:
    rows = dict(ReviewItem.objects.filter(workflow=WORKFLOW).values_list("status").annotate(n=Count("id"))
                .order_by())
    unassigned = (ReviewItem.objects.filter(workflow=WORKFLOW, status=ReviewItem.Status.OPEN)
                  .exclude(assignments__status__in=[Assignment.Status.ASSIGNED, Assignment.Status.DONE]).count())
    return {"open": rows.get("open", 0), "accepted": rows.get("accepted", 0),
            "rejected": rows.get("rejected", 0), "unassigned": unassigned}
