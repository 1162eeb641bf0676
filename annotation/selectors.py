"""Reads of the review machinery. Blind review lives here: others' decisions are visible only after one's own."""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from annotation.models import ActionLog, Assignment, Decision, ReviewItem
from microverse_site.roles import ADMIN, has_role


@dataclass(frozen=True)
class QueueProgress:
    done: int
    assigned: int  # everything on the expert's queue that they have not passed

    @property
    def label(self) -> str:
        return f"{self.done} of {self.assigned}"


def queue(*, expert, workflow: str) -> QuerySet[Assignment]:
    """The expert's queue for a workflow, in order (passed items left out)."""
    return (Assignment.objects.filter(expert=expert, workflow=workflow)
            .exclude(status=Assignment.Status.PASSED).select_related("item").order_by("position", "pk"))


def queue_progress(*, expert, workflow: str) -> QueueProgress:
    counts = (Assignment.objects.filter(expert=expert, workflow=workflow).exclude(status=Assignment.Status.PASSED)
              .aggregate(assigned=Count("pk"), done=Count("pk", filter=Q(status=Assignment.Status.DONE))))
    return QueueProgress(done=counts["done"], assigned=counts["assigned"])


def next_assignment(*, expert, workflow: str, after_position: int | None = None) -> Assignment | None:
    """Where the expert left off: the first item still waiting for their decision (after a position if given)."""
    waiting = queue(expert=expert, workflow=workflow).filter(status=Assignment.Status.ASSIGNED)
    if after_position is not None:
        later = waiting.filter(position__gt=after_position).first()
        if later is not None:
            return later
    return waiting.first()


def can_see_others_decisions(*, user, item: ReviewItem) -> bool:
    """A panel member (admin or not) only once they have submitted their own decision; other admins always."""
    if Decision.objects.filter(item=item, expert=user).exists():
        return True
    on_panel = Assignment.objects.filter(item=item, expert=user).exists()
    return has_role(user, ADMIN) and not on_panel


def decisions_visible_to(*, user, item: ReviewItem) -> QuerySet[Decision]:
    """The decisions on `item` that `user` may see: their own always, others' only after submitting their own."""
    decisions = Decision.objects.filter(item=item).select_related("expert").order_by("created_at")
    if can_see_others_decisions(user=user, item=item):
        return decisions
    return decisions.filter(expert=user)


def own_decision(*, expert, item: ReviewItem) -> Decision | None:
    return Decision.objects.filter(item=item, expert=expert).first()


def action_log(*, actor=None, workflow: str = "", verb: str = "", since=None, until=None) -> QuerySet[ActionLog]:
    rows = ActionLog.objects.select_related("actor", "item")
    if actor is not None:
        rows = rows.filter(actor=actor)
    if workflow:
        rows = rows.filter(workflow=workflow)
    if verb:
        rows = rows.filter(verb=verb)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows.order_by("-created_at", "-id")
