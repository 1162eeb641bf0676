"""Rubric revision: rounds, expert proposals, majority aggregation into a new version, and adjudication.

Writes (services) and the reads that enforce blind review (selectors) of the revision workflow. A round is one
panel's independent revision of one rubric version (its base version). Each panel member saves draft proposals
(Delete, Modify, Adjust weight, Supplement; each with a rationale), then submits them all at once; the submission
is the expert's Decision on the round's ReviewItem (workflow "rubric_revision"), so the usual queue progress shows.
When the last panel member submits, :func:`round_aggregate` applies the majority rule of
:mod:`rubrics.aggregation` and writes a new immutable :class:`RubricVersion`; what the rule could not settle
becomes :class:`RevisionAdjudication` items, which an admin accepts (each acceptance is one more new version) or
rejects.

Blind review: until a round is aggregated, an expert sees only their own proposals (:func:`proposals_visible_to`).
"""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Exists, Max, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from annotation import services as review
from annotation.models import Assignment, Decision, ReviewItem, Workflow
from microverse_site.roles import ADMIN, has_role
from rubrics import aggregation
from rubrics.models import (
    BenchmarkTask,
    Criterion,
    Dimension,
    RevisionAdjudication,
    RevisionProposal,
    RevisionRound,
    RubricChange,
    RubricVersion,
)

WORKFLOW = Workflow.RUBRIC_REVISION
Op = RevisionProposal.Op
WEIGHT_TIERS = (1.0, 0.5, 0.2)
LOG_VERBS = {Op.DELETE: "proposal_delete", Op.MODIFY: "proposal_modify", Op.WEIGHT: "proposal_weight",
             Op.SUPPLEMENT: "proposal_supplement"}
ACTIVE = (Assignment.Status.ASSIGNED, Assignment.Status.DONE)


class StaleVersion(ValidationError):
    """The rubric changed since the proposal's base version was read; the client must reload (HTTP 409)."""


# ------------------------------------------------------------------------------------------------ reads


def round_item(round: RevisionRound) -> ReviewItem:
    """The ReviewItem of a round (created by round_open)."""
    return ReviewItem.objects.get(workflow=WORKFLOW, content_type=ContentType.objects.get_for_model(RevisionRound),
                                  object_id=round.pk)


def panel_members(round: RevisionRound, item: ReviewItem | None = None) -> list:
    """The experts on the round's panel (assigned or done; passed ones left out), in order of assignment."""
    item = item or round_item(round)
    return [a.expert for a in item.assignments.filter(status__in=ACTIVE).select_related("expert").order_by("pk")]


def is_panel_member(round: RevisionRound, user, item: ReviewItem | None = None) -> bool:
    item = item or round_item(round)
    return item.assignments.filter(status__in=ACTIVE, expert_id=user.pk).exists()


def has_submitted(round: RevisionRound, expert, item: ReviewItem | None = None) -> bool:
    item = item or round_item(round)
    return Decision.objects.filter(item=item, expert_id=expert.pk).exists()


@dataclass(frozen=True)
class RoundProgress:
    submitted: int
    panel: int

    @property
    def label(self) -> str:
        return f"{self.submitted} of {self.panel} submitted"


def round_progress(round: RevisionRound, item: ReviewItem | None = None) -> RoundProgress:
    item = item or round_item(round)
    panel = item.assignments.filter(status__in=ACTIVE).count()
    return RoundProgress(submitted=item.decisions.count(), panel=panel)


def can_view_round(*, user, round: RevisionRound) -> bool:
    """Admins see every round; an expert only the rounds whose panel they are on."""
    return has_role(user, ADMIN) or is_panel_member(round, user)


def proposals_visible_to(*, user, round: RevisionRound) -> QuerySet[RevisionProposal]:
    """Blind review: while a round is open, a panel member sees only their own proposals; admins (not on the panel)
    see all; after aggregation everyone who may view the round sees all."""
    proposals = round.proposals.select_related("expert", "criterion").order_by("expert__username", "id")
    if round.status == RevisionRound.Status.OPEN:
        if is_panel_member(round, user):
            return proposals.filter(expert_id=user.pk)
        if has_role(user, ADMIN):
            return proposals
        return proposals.none()
    if can_view_round(user=user, round=round):
        return proposals
    return proposals.none()


def rounds_for(*, user) -> QuerySet[RevisionRound]:
    """The rounds a user can open: all for admins, those on the expert's panel otherwise (newest first)."""
    rounds = RevisionRound.objects.select_related("task", "base_version", "result_version").order_by("-created_at",
                                                                                                   "-id")
    if has_role(user, ADMIN):
        return rounds
    ids = ReviewItem.objects.filter(workflow=WORKFLOW, assignments__expert_id=user.pk,
                                    assignments__status__in=ACTIVE).values_list("object_id", flat=True)
    return rounds.filter(pk__in=list(ids))


@dataclass(frozen=True)
class RoundRow:
    round: RevisionRound
    progress: RoundProgress
    on_panel: bool
    submitted: bool


def round_rows(*, user, rounds) -> list[RoundRow]:
    """Rounds with their panel progress and the user's part in them, in a constant number of queries."""
    rounds = list(rounds)
    items = (ReviewItem.objects.filter(workflow=WORKFLOW, content_type=ContentType.objects.get_for_model(RevisionRound),
                                       object_id__in=[r.pk for r in rounds])
             .annotate(panel=Count("assignments", filter=Q(assignments__status__in=ACTIVE), distinct=True),
                       submitted=Count("decisions", distinct=True),
                       on_panel=Exists(Assignment.objects.filter(item=OuterRef("pk"), expert_id=user.pk,
                                                                 status__in=ACTIVE)),
                       mine=Exists(Decision.objects.filter(item=OuterRef("pk"), expert_id=user.pk))))
    by_round = {i.object_id: i for i in items}
    rows = []
    for r in rounds:
        i = by_round.get(r.pk)
        rows.append(RoundRow(r, RoundProgress(i.submitted if i else 0, i.panel if i else 0),
                             bool(i and i.on_panel), bool(i and i.mine)))
    return rows


def pending_adjudications() -> QuerySet[RevisionAdjudication]:
    return (RevisionAdjudication.objects.filter(status=RevisionAdjudication.Status.PENDING)
            .select_related("round__task", "round__base_version", "criterion")
            .prefetch_related(Prefetch("proposals", queryset=RevisionProposal.objects.select_related("expert")
                                       .order_by("expert__username", "id")))
            .order_by("round__created_at", "id"))


def version_changes(version: RubricVersion) -> list[RubricChange]:
    """The changes a version made to its parent, each with its proposals (and their experts and rationales) and its
    adjudication; two queries whatever the number of changes."""
    return list(
        RubricChange.objects.filter(version=version)
        .select_related("adjudication", "adjudication__decided_by")
        .prefetch_related(Prefetch("proposals", queryset=RevisionProposal.objects.select_related("expert")
                                   .order_by("expert__username", "id")))
        .order_by("id")
    )


def criterion_state(criterion: Criterion) -> dict:
    return {"dimension": criterion.dimension, "key_number": criterion.key_number,
            "description": criterion.description, "polarity": criterion.polarity, "weight": criterion.weight}


def proposal_after(proposal: RevisionProposal) -> dict | None:
    """The criterion as the proposal would leave it (None for a delete)."""
    if proposal.op == Op.DELETE:
        return None
    if proposal.op == Op.SUPPLEMENT:
        return {"dimension": proposal.dimension, "description": proposal.description, "polarity": proposal.polarity,
                "weight": proposal.weight}
    after = criterion_state(proposal.criterion)
    if proposal.op == Op.WEIGHT:
        after["weight"] = proposal.weight
    else:
        if proposal.description:
            after["description"] = proposal.description
        if proposal.polarity is not None:
            after["polarity"] = proposal.polarity
    return after


# ------------------------------------------------------------------------------------------------ writes


def _check_current(round: RevisionRound, task: BenchmarkTask, base_version_id=None) -> None:
    if task.current_rubric_id != round.base_version_id:
        raise StaleVersion(
            f"The rubric of task {task.index} has changed since this round opened (it revises v"
            f"{round.base_version.number}; the current version is another one). Reload the page; this round can "
            "no longer take proposals."
        )
    if base_version_id is not None and str(base_version_id) != str(round.base_version_id):
        raise StaleVersion(
            "Your page shows an older version of this rubric than the one this round revises. Reload the page "
            "and propose your change again."
        )


@transaction.atomic
def round_open(*, task: BenchmarkTask, by, experts=None, request_id: str = "") -> RevisionRound:
    """Open a revision round on the task's current rubric version, with a panel: `experts` by hand, or (None) the
    least-loaded experts by the balanced auto-assignment of the review machinery."""
    if not has_role(by, ADMIN):
        raise PermissionDenied("Only admins open revision rounds.")
    task = BenchmarkTask.objects.select_for_update().get(pk=task.pk)
    if task.current_rubric_id is None:
        raise ValidationError(f"Task {task.index} has no rubric to revise.")
    busy = task.revision_rounds.exclude(status=RevisionRound.Status.DONE).first()
    if busy is not None:
        raise ValidationError(f"Task {task.index} already has a revision round in progress (round {busy.pk}).")
    round = RevisionRound.objects.create(task=task, base_version_id=task.current_rubric_id)
    item = review.review_item_open(workflow=WORKFLOW, target=round)
    review.log_action(actor=by, verb="round_open", item=item,
                      after={"task": task.index, "base_version": task.current_rubric_id}, request_id=request_id)
    if experts:
        review.panel_assign(item=item, experts=list(experts), assigned_by=by, request_id=request_id)
    else:
        review.panel_auto_assign(workflow=WORKFLOW, assigned_by=by, request_id=request_id)
    if not item.assignments.filter(status__in=ACTIVE).exists():
        raise ValidationError("No experts are available for the panel.")
    return round


def _to_float(value, name: str):
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number, got {value!r}.") from None


def _to_polarity(value):
    if value is None or value == "":
        return None
    try:
        polarity = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"Polarity must be +1 or -1, got {value!r}.") from None
    if polarity not in (1, -1):
        raise ValidationError(f"Polarity must be +1 or -1, got {value!r}.")
    return polarity


def _base_states(round: RevisionRound) -> dict[str, aggregation.CriterionState]:
    return {str(c.pk): aggregation.CriterionState(c.dimension, c.description, c.polarity, c.weight)
            for c in round.base_version.criteria.all()}


def _as_aggregation_proposal(p: RevisionProposal) -> aggregation.Proposal:
    return aggregation.Proposal(
        expert=str(p.expert_id), op=p.op, criterion=str(p.criterion_id) if p.criterion_id else None,
        description=p.description if p.op in (Op.MODIFY, Op.SUPPLEMENT) and p.description else None,
        weight=p.weight if p.op in (Op.WEIGHT, Op.SUPPLEMENT) else None,
        polarity=p.polarity if p.op in (Op.MODIFY, Op.SUPPLEMENT) else None,
        dimension=p.dimension if p.op == Op.SUPPLEMENT else None,
        rationale=p.rationale, proposal_id=p.pk,
    )


def _writable_round(round: RevisionRound, expert, base_version_id) -> tuple[RevisionRound, ReviewItem]:
    round = RevisionRound.objects.select_for_update().select_related("task", "base_version").get(pk=round.pk)
    item = round_item(round)
    if not is_panel_member(round, expert, item):
        raise PermissionDenied("You are not on this revision round's panel.")
    if round.status != RevisionRound.Status.OPEN:
        raise ValidationError("This round has been aggregated; it takes no more proposals.")
    _check_current(round, round.task, base_version_id)
    if has_submitted(round, expert, item):
        raise ValidationError("You have already submitted your proposals for this round.")
    return round, item


@transaction.atomic
def proposal_save(*, round: RevisionRound, expert, op: str, criterion_id=None, description=None, weight=None,
                  polarity=None, dimension=None, rationale: str, base_version_id) -> RevisionProposal:
    """Save one draft proposal of `expert` on the round's base version. A second proposal of the same operation on
    the same criterion replaces the expert's earlier draft (the aggregation would count only the last one anyway).

    Raises PermissionDenied (not on the panel), StaleVersion (the rubric moved on, or the client's
    base_version_id is not the round's) and ValidationError (blank rationale, malformed proposal)."""
    round, _item = _writable_round(round, expert, base_version_id)
    if not isinstance(rationale, str) or not rationale.strip():
        raise ValidationError("A rationale is required: say why this change is needed.")
    if op not in Op.values:
        raise ValidationError(f"Unknown operation {op!r}; expected one of {', '.join(Op.values)}.")
    criterion = None
    if op != Op.SUPPLEMENT:
        if criterion_id in (None, ""):
            raise ValidationError("Choose the criterion this proposal is about.")
        criterion = round.base_version.criteria.filter(pk=criterion_id).first()
        if criterion is None:
            raise ValidationError("That criterion is not part of the rubric version under revision.")
    description = description.strip() if isinstance(description, str) else description
    weight = _to_float(weight, "Weight")
    polarity = _to_polarity(polarity)
    fields = {"criterion": criterion, "dimension": "", "description": "", "polarity": None, "weight": None}
    if op == Op.MODIFY:
        fields.update(description=description or "", polarity=polarity)
    elif op == Op.WEIGHT:
        fields.update(weight=weight)
    elif op == Op.SUPPLEMENT:
        if dimension not in Dimension.values:
            raise ValidationError(f"Choose a dimension: {', '.join(Dimension.values)}.")
        if weight is None:
            raise ValidationError(f"Choose a weight (the tiers are {', '.join(map(str, WEIGHT_TIERS))}).")
        fields.update(dimension=dimension, description=description or "", polarity=polarity, weight=weight)
    draft = RevisionProposal(round=round, expert=expert, op=op, rationale=rationale.strip(), **fields)
    try:
        aggregation.validate_proposal(_as_aggregation_proposal(draft), _base_states(round))
    except ValueError as exc:
        raise ValidationError(_friendly(str(exc))) from None
    if op != Op.SUPPLEMENT:
        existing = RevisionProposal.objects.filter(round=round, expert=expert, op=op, criterion=criterion,
                                                   status=RevisionProposal.Status.DRAFT).first()
        if existing is not None:
            for name, value in {**fields, "rationale": draft.rationale}.items():
                setattr(existing, name, value)
            existing.save()
            return existing
    draft.save()
    return draft


def _friendly(message: str) -> str:
    """The aggregation module's message without its internal keys (expert ids, criterion pks)."""
    for marker in ("has a blank", "needs", "must not", "proposes the current weight", "leaves the criterion",
                   "names an unknown", "a supplement adds"):
        at = message.find(marker)
        if at >= 0:
            return "This proposal " + message[at:].rstrip(".") + "."
    return message


@transaction.atomic
def proposal_delete_draft(*, proposal: RevisionProposal, expert) -> None:
    """Remove one of the expert's own drafts (submitted proposals are kept)."""
    proposal = RevisionProposal.objects.select_for_update().get(pk=proposal.pk)
    if proposal.expert_id != expert.pk:
        raise PermissionDenied("You can only delete your own drafts.")
    if proposal.status != RevisionProposal.Status.DRAFT:
        raise ValidationError("Submitted proposals cannot be deleted.")
    if proposal.round.status != RevisionRound.Status.OPEN:
        raise ValidationError("This round has been aggregated.")
    proposal.delete()


@dataclass(frozen=True)
class SubmitResult:
    submitted: int  # proposals this expert submitted
    aggregated: bool  # this submission completed the panel and the round was aggregated
    round: RevisionRound


def proposals_submit(*, round: RevisionRound, expert, base_version_id=None, request_id: str = "") -> SubmitResult:
    """Submit all of the expert's drafts: they become final, each is logged (proposal_delete / _modify / _weight /
    _supplement, with its rationale and before/after), and the expert's Decision on the round's item records that
    they are done. The last panel member's submission aggregates the round."""
    with transaction.atomic():
        round, item = _writable_round(round, expert, base_version_id)
        drafts = list(RevisionProposal.objects.filter(round=round, expert=expert, status=RevisionProposal.Status.DRAFT)
                      .select_related("criterion").order_by("id"))
        for p in drafts:
            p.status = RevisionProposal.Status.SUBMITTED
            p.save(update_fields=["status", "updated_at"])
            review.log_action(
                actor=expert, verb=LOG_VERBS[p.op], item=item, target=p,
                before=criterion_state(p.criterion) if p.criterion_id else None, after=proposal_after(p),
                rationale=p.rationale, request_id=request_id,
            )
        review.decision_submit(item=item, expert=expert, value="submitted",
                               extra={"proposals": len(drafts), "ops": sorted({p.op for p in drafts})},
                               request_id=request_id)
        progress = round_progress(round, item)
        aggregated = False
        if progress.submitted >= progress.panel:
            round_aggregate(round=round, request_id=request_id)
            aggregated = True
        round.refresh_from_db()
        return SubmitResult(submitted=len(drafts), aggregated=aggregated, round=round)


def _next_number(task: BenchmarkTask) -> int:
    return (task.rubric_versions.aggregate(n=Max("number"))["n"] or 0) + 1


@dataclass
class _Row:
    """A criterion of a version being built."""

    dimension: str
    key_number: int
    description: str
    polarity: int
    weight: float
    position: int


def _rows_of(version: RubricVersion) -> list[_Row]:
    return [_Row(c.dimension, c.key_number, c.description, c.polarity, c.weight, c.position)
            for c in version.criteria.order_by("dimension", "position")]


def _next_key(rows: list[_Row], dimension: str) -> int:
    return max((r.key_number for r in rows if r.dimension == dimension), default=0) + 1


def _write_version(*, task: BenchmarkTask, parent: RubricVersion, rows: list[_Row], note: str, by) -> RubricVersion:
    number = _next_number(task)
    version = RubricVersion.objects.create(task=task, number=number, label=f"rev-{number}", parent=parent,
                                           note=note, created_by=by)
    criteria = []
    for dimension in Dimension.values:
        mine = sorted((r for r in rows if r.dimension == dimension), key=lambda r: r.position)
        for position, r in enumerate(mine, start=1):
            criteria.append(Criterion(version=version, dimension=dimension, position=position,
                                      key_number=r.key_number, description=r.description, polarity=r.polarity,
                                      weight=r.weight))
    Criterion.objects.bulk_create(criteria)
    task.current_rubric = version
    task.save(update_fields=["current_rubric"])
    return version


def _state(row: _Row) -> dict:
    return {"dimension": row.dimension, "key_number": row.key_number, "description": row.description,
            "polarity": row.polarity, "weight": row.weight}


@transaction.atomic
def round_aggregate(*, round: RevisionRound, request_id: str = "") -> RubricVersion | None:
    """Aggregate the panel's submitted proposals with the majority rule (rubrics.aggregation.aggregate) into a new
    immutable version (label rev-<number>, parent = the base version), which becomes the task's current rubric.
    Returns the new version, or None when nothing was applied (the current version stays)."""
    round = RevisionRound.objects.select_for_update().select_related("base_version").get(pk=round.pk)
    if round.status != RevisionRound.Status.OPEN:
        raise ValidationError("This round has already been aggregated.")
    task = BenchmarkTask.objects.select_for_update().get(pk=round.task_id)
    _check_current(round, task)
    item = round_item(round)
    panel_size = len(panel_members(round, item))
    base = {str(c.pk): c for c in round.base_version.criteria.all()}
    submitted = list(round.proposals.filter(status=RevisionProposal.Status.SUBMITTED).order_by("updated_at", "id"))
    by_id = {p.pk: p for p in submitted}
    result = aggregation.aggregate(
        criteria={k: aggregation.CriterionState(c.dimension, c.description, c.polarity, c.weight)
                  for k, c in base.items()},
        proposals=[_as_aggregation_proposal(p) for p in submitted], panel_size=panel_size,
    )

    version = None
    if result.applied:
        rows = _rows_of(round.base_version)
        row_of = {key: next(r for r in rows if (r.dimension, r.key_number) == (c.dimension, c.key_number))
                  for key, c in base.items()}
        changes = []  # (op, dimension, key_number, before, after, proposal ids)
        for change in result.applied:
            if change.op == Op.SUPPLEMENT:
                state = change.after
                row = _Row(state.dimension, _next_key(rows, state.dimension), state.description, state.polarity,
                           state.weight, 10_000 + len(rows))
                rows.append(row)
                changes.append((change.op, row.dimension, row.key_number, None, _state(row), change.proposal_ids))
                continue
            row = row_of[change.criterion]
            before = _state(row)
            if change.op == Op.DELETE:
                rows.remove(row)
                changes.append((change.op, row.dimension, row.key_number, before, None, change.proposal_ids))
                continue
            row.description, row.polarity, row.weight = (change.after.description, change.after.polarity,
                                                         change.after.weight)
            changes.append((change.op, row.dimension, row.key_number, before, _state(row), change.proposal_ids))
        counts = {op: sum(1 for c in result.applied if c.op == op) for op in Op.values}
        note = (f"Revision round {round.pk} of v{round.base_version.number}: "
                + ", ".join(f"{n} {op}" for op, n in counts.items() if n)
                + f"; {len(result.adjudication)} to adjudication.")
        version = _write_version(task=task, parent=round.base_version, rows=rows, note=note, by=None)
        for op, dimension, key_number, before, after, ids in changes:
            change = RubricChange.objects.create(version=version, op=op, dimension=dimension, key_number=key_number,
                                                 before=before, after=after)
            change.proposals.set([by_id[i] for i in ids])

    for adj in result.adjudication:
        record = RevisionAdjudication.objects.create(
            round=round, op=adj.op, criterion=base[adj.criterion] if adj.criterion else None, reason=adj.reason[:200],
        )
        record.proposals.set([by_id[i] for i in adj.proposal_ids])

    round.result_version = version
    round.aggregated_at = timezone.now()
    round.status = RevisionRound.Status.ADJUDICATION if result.adjudication else RevisionRound.Status.DONE
    round.save(update_fields=["result_version", "aggregated_at", "status"])
    item.status, item.decided_at = ReviewItem.Status.CLOSED, timezone.now()
    item.save(update_fields=["status", "decided_at"])
    review.log_action(
        actor=None, verb="round_aggregate", item=item, request_id=request_id,
        after={"version": version.number if version else None, "applied": len(result.applied),
               "adjudication": len(result.adjudication), "superseded": len(result.superseded),
               "panel": panel_size},
    )
    return version


def _chosen(adjudication: RevisionAdjudication, chosen_proposal_id) -> RevisionProposal:
    proposals = list(adjudication.proposals.select_related("criterion").order_by("id"))
    if chosen_proposal_id not in (None, ""):
        chosen = next((p for p in proposals if str(p.pk) == str(chosen_proposal_id)), None)
        if chosen is None:
            raise ValidationError("The chosen proposal is not one of this item's proposals.")
        return chosen
    if len({repr(proposal_after(p)) for p in proposals}) > 1:
        raise ValidationError("These proposals differ: choose the one to apply.")
    return proposals[0]


@transaction.atomic
def adjudication_decide(*, adjudication: RevisionAdjudication, admin, accept: bool, rationale: str,
                        chosen_proposal_id=None, request_id: str = "") -> RubricVersion | None:
    """An admin settles one adjudication item, with a rationale. Accepting applies the (chosen) proposal's change
    to the task's current version as a further new version. Returns that version (None for a rejection)."""
    if not has_role(admin, ADMIN):
        raise PermissionDenied("Only admins adjudicate.")
    if not isinstance(rationale, str) or not rationale.strip():
        raise ValidationError("A rationale is required for an adjudication decision.")
    adjudication = RevisionAdjudication.objects.select_for_update().get(pk=adjudication.pk)
    if adjudication.status != RevisionAdjudication.Status.PENDING:
        raise ValidationError("This item has already been decided.")
    round = RevisionRound.objects.select_for_update().get(pk=adjudication.round_id)
    item = round_item(round)
    version = None
    chosen = None
    before = after = None
    if accept:
        chosen = _chosen(adjudication, chosen_proposal_id)
        task = BenchmarkTask.objects.select_for_update().get(pk=round.task_id)
        current = RubricVersion.objects.get(pk=task.current_rubric_id)
        rows = _rows_of(current)
        if chosen.op == Op.SUPPLEMENT:
            row = _Row(chosen.dimension, _next_key(rows, chosen.dimension), " ".join(chosen.description.split()),
                       chosen.polarity, chosen.weight, 10_000)
            rows.append(row)
            after = _state(row)
        else:
            target = chosen.criterion
            row = next((r for r in rows if (r.dimension, r.key_number) == (target.dimension, target.key_number)),
                       None)
            if row is None:
                raise ValidationError(
                    f"The {target.dimension} criterion {target.key_number} is no longer in the current version "
                    f"(v{current.number}); this proposal cannot be applied. Reject it instead."
                )
            before = _state(row)
            if chosen.op == Op.DELETE:
                rows.remove(row)
            elif chosen.op == Op.WEIGHT:
                row.weight = chosen.weight
                after = _state(row)
            else:
                if chosen.description:
                    row.description = " ".join(chosen.description.split())
                if chosen.polarity is not None:
                    row.polarity = chosen.polarity
                after = _state(row)
            if after == before:
                raise ValidationError("The current version already reads like this proposal; nothing to apply.")
        note = (f"Adjudication {adjudication.pk} of revision round {round.pk} accepted: {chosen.get_op_display()} "
                f"proposed by {chosen.expert.username}.")
        version = _write_version(task=task, parent=current, rows=rows, note=note, by=admin)
        change = RubricChange.objects.create(
            version=version, op=chosen.op, dimension=row.dimension, key_number=row.key_number, before=before,
            after=after, adjudication=adjudication,
        )
        change.proposals.set([chosen])
    adjudication.status = (RevisionAdjudication.Status.ACCEPTED if accept else RevisionAdjudication.Status.REJECTED)
    adjudication.chosen_proposal = chosen
    adjudication.decided_by, adjudication.decided_at = admin, timezone.now()
    adjudication.rationale = rationale.strip()
    adjudication.save()
    review.log_action(
        actor=admin, verb="adjudicate_accept" if accept else "adjudicate_reject", item=item, target=adjudication,
        before=before, rationale=adjudication.rationale, request_id=request_id,
        after={"adjudication": adjudication.pk, "reason": adjudication.reason, "op": adjudication.op,
               "chosen_proposal": chosen.pk if chosen else None, "version": version.number if version else None,
               "criterion": after},
    )
    if not round.adjudications.filter(status=RevisionAdjudication.Status.PENDING).exists():
        round.status = RevisionRound.Status.DONE
        round.save(update_fields=["status"])
    return version


__all__ = [
    "LOG_VERBS", "StaleVersion", "SubmitResult", "WEIGHT_TIERS", "adjudication_decide", "can_view_round",
    "criterion_state", "has_submitted", "is_panel_member", "panel_members", "pending_adjudications",
    "proposal_after", "proposal_delete_draft", "proposal_save", "proposals_submit", "proposals_visible_to",
    "round_aggregate", "round_item", "round_rows", "round_open", "round_progress", "rounds_for", "version_changes",
]
