"""Clip verification: experts keep or reject the clips the pipeline kept, and label them micro / non-micro.

A workflow on the shared review machinery (``annotation``): one :class:`~annotation.models.ReviewItem` (workflow
``clip_verification``, target the :class:`~datasets.models.Clip`) per clip whose pipeline verdict is "kept" (it passed
every filter: classifier or left unclassified for the experts, borders, text). Panels, blind decisions and the
locked consensus (panel size and quorum: ``WorkflowConfig`` or ``REVIEW_PANEL_SIZE`` / ``REVIEW_QUORUM``, 3 and 2 by
default) are the machinery's; this module adds what a clip decision carries:

* ``Decision.value``: keep / reject;
* ``Decision.reason``: for a rejection, one of :data:`REASONS` (required); "other" needs a note (``Decision.comment``);
* ``Decision.extra["micro"]``: the micro-simulation label (True / False), which trains the classifier. Unset, it
  follows from the decision where it can: a kept clip is microscale (True), a clip rejected as "not microscale" is
  not (False); a label contradicting the decision is refused.

The expert outcome of a clip is its item's status (open / accepted = *verified* / rejected = *dropped by the
experts*); :func:`handle_outcome` logs it with the panel's majority micro label or majority rejection reason. The
pipeline's own ``Clip.verdict`` is left alone (it is recomputed from measurements whenever thresholds change).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet

from annotation import services
from annotation.models import Decision, ReviewItem, Workflow
from datasets.models import Clip

WORKFLOW = Workflow.CLIP_VERIFICATION.value
KEEP, REJECT = "keep", "reject"

#: Rejection reasons, in the order of their keys (1-5) on the expert page.
REASONS: tuple[tuple[str, str], ...] = (
    ("meaningless", "Meaningless"),
    ("physically_inconsistent", "Physically inconsistent"),
    ("not_microscale", "Not microscale"),
    ("text_or_borders", "Text or borders"),
    ("other", "Other (note required)"),
)
REASON_LABELS = dict(REASONS)
OTHER = "other"
NOT_MICROSCALE = "not_microscale"
NOTE_MAX = 5000


# ------------------------------------------------------------------------------------------------------ items


def clip_content_type() -> ContentType:
    return ContentType.objects.get_for_model(Clip)


def items() -> QuerySet[ReviewItem]:
    return ReviewItem.objects.filter(workflow=WORKFLOW, content_type=clip_content_type())


def eligible_clips() -> QuerySet[Clip]:
    """Clips the pipeline kept (every filter passed, or left unclassified for the experts)."""
    return Clip.objects.filter(verdict=Clip.Verdict.KEPT)


def verification_open(*, clip_ids: Iterable[int] | None = None, user=None, request_id: str = "") -> int:
    """Open a clip-verification item for every kept clip (or those of `clip_ids` that are kept) without one.

    Idempotent: a clip that has an item (whatever its status) gets no second one. Returns how many were opened."""
    content_type = clip_content_type()
    clips = eligible_clips()
    if clip_ids is not None:
        clips = clips.filter(pk__in=list(clip_ids))
    with transaction.atomic():
        existing = set(ReviewItem.objects.filter(workflow=WORKFLOW, content_type=content_type)
                       .values_list("object_id", flat=True))
        fresh = [pk for pk in clips.order_by("pk").values_list("pk", flat=True) if pk not in existing]
        ReviewItem.objects.bulk_create(
            [ReviewItem(workflow=WORKFLOW, content_type=content_type, object_id=pk) for pk in fresh],
            batch_size=500, ignore_conflicts=True)
        if fresh:
            services.log_action(actor=user, verb="verification_open", workflow=WORKFLOW,
                                after={"opened": len(fresh), "first_clip": fresh[0], "last_clip": fresh[-1]},
                                request_id=request_id)
    return len(fresh)


def clip_for(item: ReviewItem) -> Clip | None:
    if item.workflow != WORKFLOW:
        return None
    return Clip.objects.select_related("video").filter(pk=item.object_id).first()


# -------------------------------------------------------------------------------------------------- decisions


def parse_micro(value) -> bool | None:
    """"true"/"micro"/"1" -> True, "false"/"non-micro"/"0" -> False, ""/None -> None (from a form or JSON)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "none", "null", "unset"):
        return None
    if text in ("true", "1", "yes", "micro", "m"):
        return True
    if text in ("false", "0", "no", "non-micro", "nonmicro", "u"):
        return False
    raise ValidationError(f"The micro label must be micro or non-micro, not {str(value)[:20]!r}.")


def clean_decision(*, value: str, reason: str = "", note: str = "", micro=None) -> dict:
    """The fields of a clip decision (value, reason, comment, extra), or ValidationError saying what is wrong."""
    value = (value or "").strip()
    reason = (reason or "").strip()
    note = (note or "").strip()
    micro = parse_micro(micro)
    if value not in (KEEP, REJECT):
        raise ValidationError("The decision must be keep or reject.")
    if len(note) > NOTE_MAX:
        raise ValidationError(f"The note is longer than {NOTE_MAX} characters.")
    if value == KEEP:
        if reason:
            raise ValidationError("A kept clip takes no rejection reason.")
        if micro is False:
            raise ValidationError("A kept clip is microscale: label it micro, or reject it as not microscale.")
        micro = True
    else:
        if reason not in REASON_LABELS:
            raise ValidationError("Choose a rejection reason: " + ", ".join(label for _, label in REASONS) + ".")
        if reason == OTHER and not note:
            raise ValidationError("A rejection for another reason needs a note saying what is wrong.")
        if reason == NOT_MICROSCALE:
            if micro is True:
                raise ValidationError("A clip rejected as not microscale cannot be labelled micro.")
            micro = False
    return {"value": value, "reason": reason, "comment": note, "extra": {} if micro is None else {"micro": micro}}


def decision_submit(*, item: ReviewItem, expert, value: str, reason: str = "", note: str = "", micro=None,
                    request_id: str = "") -> services.DecisionResult:
    """Record an expert's clip decision (see :func:`clean_decision`) through the review machinery's blind, locked
    consensus (``annotation.services.decision_submit``)."""
    if item.workflow != WORKFLOW:
        raise ValidationError("This item is not a clip-verification item.")
    fields = clean_decision(value=value, reason=reason, note=note, micro=micro)
    return services.decision_submit(item=item, expert=expert, request_id=request_id, **fields)


# --------------------------------------------------------------------------------------------------- outcomes


def majority_reason(decisions: Iterable[Decision]) -> str:
    """The most common reason among the rejections (ties: the reason given first)."""
    ordered = sorted((d for d in decisions if d.value == REJECT and d.reason), key=lambda d: (d.created_at, d.pk))
    counts = Counter(d.reason for d in ordered)
    return counts.most_common(1)[0][0] if counts else ""


def majority_micro(decisions: Iterable[Decision]) -> bool | None:
    """The panel's micro label: the strict majority of the labels given, None on a tie or without labels."""
    labels = [d.extra.get("micro") for d in decisions if isinstance(d.extra, dict)]
    labels = [label for label in labels if isinstance(label, bool)]
    yes, no = labels.count(True), labels.count(False)
    if yes == no:
        return None
    return yes > no


def handle_outcome(item: ReviewItem, outcome: str) -> None:
    """Outcome handler of clip_verification (registered in ``datasets.apps``): runs in the deciding transaction.

    accepted: the clip is verified (logged with the panel's micro label); rejected: dropped by the experts (logged
    with the majority reason and every reason's count). The clip row itself is not changed."""
    decisions = list(item.decisions.all())
    clip = Clip.objects.filter(pk=item.object_id).only("pk", "video_id").first()
    base = {"clip": item.object_id, "video": clip.video_id if clip else None}
    if outcome == "accepted":
        services.log_action(actor=None, verb="clip_verified", item=item,
                            after={**base, "micro": majority_micro(decisions)})
    elif outcome == "rejected":
        reasons = Counter(d.reason for d in decisions if d.value == REJECT and d.reason)
        services.log_action(actor=None, verb="clip_dropped_by_experts", item=item,
                            after={**base, "reason": majority_reason(decisions), "reasons": dict(reasons)})


# -------------------------------------------------------------------------------------------------- selectors


def _object_ids(status: str):
    return items().filter(status=status).values("object_id")


def verified_clips() -> QuerySet[Clip]:
    """Clips whose verification panel accepted them."""
    return Clip.objects.filter(pk__in=_object_ids(ReviewItem.Status.ACCEPTED))


def rejected_clips() -> QuerySet[Clip]:
    """Clips the experts dropped."""
    return Clip.objects.filter(pk__in=_object_ids(ReviewItem.Status.REJECTED))


def is_verified(clip_id: int) -> bool:
    return items().filter(object_id=clip_id, status=ReviewItem.Status.ACCEPTED).exists()


def expert_outcome(clip: Clip) -> dict:
    """A clip's expert outcome: ``{"status": "unreviewed" | "open" | "accepted" | "rejected", "reason", "micro",
    "keeps", "rejects"}`` (reason: the majority rejection reason of a rejected clip)."""
    item = items().filter(object_id=clip.pk).first()
    if item is None:
        return {"status": "unreviewed", "reason": "", "micro": None, "keeps": 0, "rejects": 0}
    decisions = list(item.decisions.all())
    return {
        "status": item.status, "item": item.pk,
        "reason": majority_reason(decisions) if item.status == ReviewItem.Status.REJECTED else "",
        "micro": majority_micro(decisions),
        "keeps": sum(d.value == KEEP for d in decisions), "rejects": sum(d.value == REJECT for d in decisions),
    }


def micro_labels(*, decided_only: bool = True) -> dict[int, bool]:
    """{clip id: the panel's micro label} for the classifier's training set: clips whose experts' labels have a
    strict majority (ties and unlabelled clips are left out); by default only decided items."""
    rows = Decision.objects.filter(item__workflow=WORKFLOW, item__content_type=clip_content_type())
    if decided_only:
        rows = rows.exclude(item__status=ReviewItem.Status.OPEN)
    by_clip: dict[int, list[bool]] = {}
    for clip_id, extra in rows.values_list("item__object_id", "extra"):
        label = extra.get("micro") if isinstance(extra, dict) else None
        if isinstance(label, bool):
            by_clip.setdefault(clip_id, []).append(label)
    labels = {}
    for clip_id, values in by_clip.items():
        yes, no = values.count(True), values.count(False)
        if yes != no:
            labels[clip_id] = yes > no
    return labels


def counts() -> dict[str, int]:
    """Kept clips, items by status, and kept clips not yet opened for verification."""
    by_status = dict(items().values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    opened = items().values("object_id")
    return {
        "kept_clips": eligible_clips().count(),
        "not_opened": eligible_clips().exclude(pk__in=opened).count(),
        "open": by_status.get(ReviewItem.Status.OPEN, 0),
        "accepted": by_status.get(ReviewItem.Status.ACCEPTED, 0),
        "rejected": by_status.get(ReviewItem.Status.REJECTED, 0),
        "unassigned": items().filter(status=ReviewItem.Status.OPEN)
        .annotate(n=Count("assignments", filter=~Q(assignments__status="passed"))).filter(n=0).count(),
    }


def rejection_reason_counts() -> dict[str, int]:
    """How often each reason was the majority reason of a rejected clip."""
    result = {code: 0 for code, _ in REASONS}
    rejected = items().filter(status=ReviewItem.Status.REJECTED).prefetch_related("decisions")
    for item in rejected:
        reason = majority_reason(item.decisions.all())
        if reason:
            result[reason] = result.get(reason, 0) + 1
    return result
