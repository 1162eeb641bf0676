"""Writes of the review machinery: items, panels, passes, decisions with consensus, and the action log.

Every action writes its ActionLog row in the same transaction as the change it records.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from annotation import consensus, hooks
from annotation.models import ActionLog, Assignment, Decision, ReviewItem, WorkflowConfig
from microverse_site.roles import EXPERT

ACTIVE = (Assignment.Status.ASSIGNED, Assignment.Status.DONE)


def workflow_rule(workflow: str) -> consensus.ConsensusRule:
    config = WorkflowConfig.objects.filter(workflow=workflow).first()
    if config is None:
        return consensus.ConsensusRule(panel_size=settings.REVIEW_PANEL_SIZE, quorum=settings.REVIEW_QUORUM)
    return consensus.ConsensusRule(panel_size=config.panel_size, quorum=config.quorum)


def log_action(*, actor, verb: str, workflow: str = "", item: ReviewItem | None = None, target=None,
               before=None, after=None, rationale: str = "", request_id: str = "") -> ActionLog:
    if item is not None and not workflow:
        workflow = item.workflow
    if target is None and item is not None:
        target_type, target_id = item.content_type.model, str(item.object_id)
    elif target is not None:
        target_type, target_id = target._meta.model_name, str(target.pk)
    else:
        target_type, target_id = "", ""
    return ActionLog.objects.create(
        actor=actor, verb=verb, workflow=workflow, item=item, target_type=target_type, target_id=target_id,
        before=before, after=after, rationale=rationale, request_id=request_id,
    )


def review_item_open(*, workflow: str, target) -> ReviewItem:
    """The review item for `target` in `workflow` (created open if new; idempotent)."""
    item, _ = ReviewItem.objects.get_or_create(
        workflow=workflow, content_type=ContentType.objects.get_for_model(target), object_id=target.pk
    )
    return item


def _experts():
    return get_user_model().objects.filter(is_active=True, groups__name=EXPERT)


def _next_position(expert) -> int:
    last = Assignment.objects.filter(expert=expert).order_by("-position").values_list("position", flat=True).first()
    return (last or 0) + 1


@transaction.atomic
def panel_assign(*, item: ReviewItem, experts, assigned_by, request_id: str = "") -> list[Assignment]:
    """Put `experts` on the item's panel by hand. Refuses non-experts, duplicates and overfull panels."""
    item = ReviewItem.objects.select_for_update().get(pk=item.pk)
    rule = workflow_rule(item.workflow)
    expert_ids = {e.pk for e in _experts().filter(pk__in=[e.pk for e in experts])}
    for expert in experts:
        if expert.pk not in expert_ids:
            raise ValidationError(f"{expert.username} does not have the expert role.")
    on_panel = set(item.assignments.values_list("expert_id", flat=True))
    already = [e.username for e in experts if e.pk in on_panel]
    if already:
        raise ValidationError(f"Already on this item's panel (or passed it): {', '.join(already)}.")
    active = item.assignments.filter(status__in=ACTIVE).count()
    if active + len(experts) > rule.panel_size:
        raise ValidationError(f"The panel holds {rule.panel_size} experts; {active} are already assigned.")
    created = []
    for expert in experts:
        created.append(Assignment.objects.create(item=item, expert=expert, assigned_by=assigned_by,
                                                 position=_next_position(expert)))
        log_action(actor=assigned_by, verb="assign", item=item, after={"expert": expert.username},
                   request_id=request_id)
    return created


@transaction.atomic
def panel_auto_assign(*, workflow: str, assigned_by, request_id: str = "") -> int:
    """Fill every open item's panel with the least-loaded experts not yet on it (balanced load). Returns the count."""
    rule = workflow_rule(workflow)
    experts = list(_experts().annotate(
        load=Count("assignments", filter=Q(assignments__status=Assignment.Status.ASSIGNED))
    ).order_by("load", "pk"))
    load = {e.pk: e.load for e in experts}
    positions = {e.pk: _next_position(e) for e in experts}
    items = (ReviewItem.objects.select_for_update().filter(workflow=workflow, status=ReviewItem.Status.OPEN)
             .order_by("pk"))
    made = 0
    for item in items:
        panel = dict(item.assignments.values_list("expert_id", "status"))
        missing = rule.panel_size - sum(1 for s in panel.values() if s in ACTIVE)
        candidates = sorted((e for e in experts if e.pk not in panel), key=lambda e: (load[e.pk], e.pk))
        for expert in candidates[:max(0, missing)]:
            Assignment.objects.create(item=item, expert=expert, assigned_by=assigned_by, position=positions[expert.pk])
            positions[expert.pk] += 1
            load[expert.pk] += 1
            made += 1
    if made:
        log_action(actor=assigned_by, verb="auto_assign", workflow=workflow, after={"assignments": made},
                   request_id=request_id)
    return made


@transaction.atomic
def assignment_pass(*, item: ReviewItem, expert, rationale: str = "", request_id: str = "") -> Assignment | None:
    """The expert passes ("outside my expertise"); the item goes to the least-loaded expert not yet asked."""
    item = ReviewItem.objects.select_for_update().get(pk=item.pk)
    assignment = Assignment.objects.filter(item=item, expert=expert, status=Assignment.Status.ASSIGNED).first()
    if assignment is None:
        raise PermissionDenied("This item is not waiting in your queue.")
    assignment.status, assignment.completed_at = Assignment.Status.PASSED, timezone.now()
    assignment.save(update_fields=["status", "completed_at"])
    log_action(actor=expert, verb="pass", item=item, rationale=rationale, request_id=request_id)
    asked = set(item.assignments.values_list("expert_id", flat=True))
    replacement = (_experts().exclude(pk__in=asked)
                   .annotate(load=Count("assignments", filter=Q(assignments__status=Assignment.Status.ASSIGNED)))
                   .order_by("load", "pk").first())
    if replacement is None:
        return None
    log_action(actor=None, verb="reassign", item=item, before={"expert": expert.username},
               after={"expert": replacement.username}, request_id=request_id)
    return Assignment.objects.create(item=item, expert=replacement, position=_next_position(replacement))


@dataclass(frozen=True)
class DecisionResult:
    decision: Decision
    changed: bool  # False for a repeated identical submit (double click, retry, second tab)
    outcome: str  # the item's consensus after this decision: open / accepted / rejected


def decision_submit(*, item: ReviewItem, expert, value: str, reason: str = "", comment: str = "",
                    extra: dict | None = None, request_id: str = "") -> DecisionResult:
    """Record the expert's decision once (a change while the item is open is logged), then apply consensus.

    A panel member who had not voted yet may still vote after the item was decided (their vote counts for
    agreement, not for the outcome, which stays locked); changing a vote is refused once the item is decided.

    The item row is locked for the whole transaction, so panel members submitting at the same moment are applied one
    after another and exactly one of them decides the item.
    """
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().get(pk=item.pk)
        assignment = Assignment.objects.filter(item=item, expert=expert, status__in=ACTIVE).first()
        if assignment is None:
            raise PermissionDenied("This item is not on your panel.")
        existing = Decision.objects.filter(item=item, expert=expert).first()
        new_state = {"value": value, "reason": reason, "comment": comment, "extra": extra or {}}
        if existing is not None:
            old_state = {"value": existing.value, "reason": existing.reason, "comment": existing.comment,
                         "extra": existing.extra}
            if old_state == new_state:
                return DecisionResult(existing, False, _outcome_of(item))
            if item.status != ReviewItem.Status.OPEN:
                raise ValidationError("This item is already decided; decisions can no longer change.")
            for field, field_value in new_state.items():
                setattr(existing, field, field_value)
            existing.save()
            log_action(actor=expert, verb="decision_change", item=item, before=old_state, after=new_state,
                       rationale=comment, request_id=request_id)
            decision = existing
        else:
            # A panel member's first vote is recorded even after the quorum was reached (the outcome stays locked,
            # see _apply_consensus): complete panels are what inter-rater agreement (Fleiss' kappa) is computed on.
            decision = Decision.objects.create(item=item, expert=expert, **new_state)
            log_action(actor=expert, verb="decide", item=item, after=new_state, rationale=comment,
                       request_id=request_id)
        if assignment.status != Assignment.Status.DONE:
            assignment.status, assignment.completed_at = Assignment.Status.DONE, timezone.now()
            assignment.save(update_fields=["status", "completed_at"])
        outcome = _apply_consensus(item, request_id=request_id)
        return DecisionResult(decision, True, outcome)


def _outcome_of(item: ReviewItem) -> str:
    return {ReviewItem.Status.ACCEPTED: "accepted", ReviewItem.Status.REJECTED: "rejected"}.get(item.status, "open")


def _apply_consensus(item: ReviewItem, *, request_id: str) -> str:
    if item.status != ReviewItem.Status.OPEN:
        return _outcome_of(item)  # decided once, by the vote that reached the quorum; later votes change nothing
    values = list(item.decisions.values_list("value", flat=True))
    rule = workflow_rule(item.workflow)
    outcome = consensus.decide(rule, [v for v in values if v in ("keep", "reject")])
    if outcome in ("accepted", "rejected") and item.status == ReviewItem.Status.OPEN:
        item.status = ReviewItem.Status.ACCEPTED if outcome == "accepted" else ReviewItem.Status.REJECTED
        item.decided_at = timezone.now()
        item.save(update_fields=["status", "decided_at"])
        log_action(actor=None, verb=f"item_{outcome}", item=item,
                   after={"keeps": values.count("keep"), "rejects": values.count("reject"),
                          "rule": f"{rule.quorum} of {rule.panel_size}"},
                   request_id=request_id)
        hooks.run_outcome_handler(item, outcome)
    return outcome
