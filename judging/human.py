"""Human evaluation services: experts score sampled generated videos criterion by criterion, and make blind pairwise
choices between two models' videos of one task. Every write is logged (annotation.services.log_action).

Blindness: the expert pages never receive a model name. Videos are served through an opaque, signed token
(:func:`media_token`) that names neither the model nor the storage path, and only to an expert assigned to an item
showing that video. In a pairwise comparison the side on which video A appears is drawn per expert and comparison
(:func:`a_shown_left`, a keyed hash: stable across page loads, unpredictable without the secret key) and stored with
the choice, which is mapped back from left/right to A/B here.

Assignments reuse the review machinery (annotation ``ReviewItem`` / ``Assignment``) with the workflows
``human_eval`` (target: a GeneratedVideo) and ``pairwise`` (target: a PairwiseComparison).
"""
from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from annotation.models import Assignment, ReviewItem, Workflow
from annotation.selectors import queue as review_queue
from annotation.services import log_action, review_item_open
from judging import consistency
from judging.models import GeneratedVideo, HumanScore, PairwiseComparison, PairwisePreference
from microverse_site.roles import EXPERT
from rubrics.models import BenchmarkTask, Criterion

HUMAN_EVAL = Workflow.HUMAN_EVAL.value
PAIRWISE = Workflow.PAIRWISE.value
DEFAULT_EXPERTS_PER_ITEM = 2
MEDIA_SALT = "judging.media.video"
SIDES = ("left", "right", "tie")


# --------------------------------------------------------------------------------------------------- assigning


def _experts():
    return get_user_model().objects.filter(is_active=True, groups__name=EXPERT).distinct()


def _assign(items: list[ReviewItem], *, experts_per_item: int, assigned_by, workflow: str, rng: random.Random,
            experts=None) -> int:
    """Give each item `experts_per_item` experts, least loaded in this workflow first (ties broken by `rng`)."""
    pool = list(experts) if experts is not None else list(_experts().order_by("pk"))
    if not pool:
        raise ValidationError("There are no active experts to assign.")
    loads = dict(Assignment.objects.filter(workflow=workflow, expert__in=pool,
                                           status=Assignment.Status.ASSIGNED)
                 .values_list("expert_id").annotate(n=Count("id")).order_by())
    load = {e.pk: loads.get(e.pk, 0) for e in pool}
    positions = {e.pk: 0 for e in pool}
    tops = Assignment.objects.filter(expert__in=pool).values_list("expert_id").annotate(top=Max("position"))
    positions.update({expert_id: top or 0 for expert_id, top in tops.order_by()})
    tiebreak = {e.pk: rng.random() for e in pool}
    made = 0
    for item in items:
        on_panel = set(item.assignments.values_list("expert_id", flat=True))
        missing = experts_per_item - len(on_panel)
        candidates = sorted((e for e in pool if e.pk not in on_panel), key=lambda e: (load[e.pk], tiebreak[e.pk]))
        for expert in candidates[:max(0, missing)]:
            positions[expert.pk] += 1
            Assignment.objects.create(item=item, expert=expert, assigned_by=assigned_by,
                                      position=positions[expert.pk])
            load[expert.pk] += 1
            made += 1
    return made


@transaction.atomic
def human_eval_sample(*, n: int, seed: int, models=None, experts_per_item: int = DEFAULT_EXPERTS_PER_ITEM,
                      experts=None, assigned_by=None) -> list[GeneratedVideo]:
    """Sample `n` readable generated videos (of `models` if given) with ``random.Random(seed)`` over the video ids
    in order, open a ``human_eval`` review item for each and assign `experts_per_item` experts to it (least loaded
    first). Videos already sampled keep their item and are topped up, so running it twice with the same arguments
    adds nothing. Returns the sampled videos."""
    if n < 1:
        raise ValidationError("Sample at least one video.")
    videos = GeneratedVideo.objects.filter(status=GeneratedVideo.Status.OK).exclude(file="")
    if models is not None:
        videos = videos.filter(model__in=list(models))
    ids = list(videos.order_by("pk").values_list("pk", flat=True))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(ids, min(n, len(ids))))
    items = [review_item_open(workflow=HUMAN_EVAL, target=video)
             for video in GeneratedVideo.objects.filter(pk__in=chosen).order_by("pk")]
    made = _assign(items, experts_per_item=experts_per_item, assigned_by=assigned_by, workflow=HUMAN_EVAL, rng=rng,
                   experts=experts)
    log_action(actor=assigned_by, verb="human_eval_sample", workflow=HUMAN_EVAL,
               after={"n": n, "seed": seed, "videos": chosen, "assignments": made,
                      "models": sorted(m.name for m in models) if models is not None else None})
    return list(GeneratedVideo.objects.filter(pk__in=chosen).order_by("pk"))


@transaction.atomic
def pairwise_create(*, task: BenchmarkTask, video_a: GeneratedVideo, video_b: GeneratedVideo, experts=None,
                    experts_per_item: int = DEFAULT_EXPERTS_PER_ITEM, assigned_by=None,
                    seed: int = 0) -> PairwiseComparison:
    """A blind comparison of two models' videos of `task` (idempotent in either order), its ``pairwise`` review
    item, and its experts (the given ones, or the least loaded)."""
    if video_a.task_id != task.pk or video_b.task_id != task.pk:
        raise ValidationError("Both videos must be of the comparison's task.")
    if video_a.model_id == video_b.model_id:
        raise ValidationError("A comparison needs videos of two different models.")
    existing = PairwiseComparison.objects.filter(
        Q(video_a=video_a, video_b=video_b) | Q(video_a=video_b, video_b=video_a)).first()
    comparison = existing or PairwiseComparison.objects.create(task=task, video_a=video_a, video_b=video_b)
    item = review_item_open(workflow=PAIRWISE, target=comparison)
    made = _assign([item], experts_per_item=len(experts) if experts is not None else experts_per_item,
                   assigned_by=assigned_by, workflow=PAIRWISE, rng=random.Random(seed), experts=experts)
    if existing is None:
        log_action(actor=assigned_by, verb="pairwise_create", item=item,
                   after={"task": task.index, "video_a": video_a.pk, "video_b": video_b.pk, "assignments": made})
    return comparison


def pairwise_sample(*, n: int, seed: int, models, experts_per_item: int = DEFAULT_EXPERTS_PER_ITEM,
                    assigned_by=None) -> list[PairwiseComparison]:
    """`n` comparisons drawn with ``random.Random(seed)``: a task both models of a random pair have a readable video
    for; which video is A is drawn too."""
    models = sorted(models, key=lambda m: m.pk)
    if len(models) < 2:
        raise ValidationError("Pairwise preference needs at least two models.")
    videos = {}
    for video in GeneratedVideo.objects.filter(model__in=models, status=GeneratedVideo.Status.OK).exclude(file=""):
        videos[(video.model_id, video.task_id)] = video
    candidates = []
    for i, first in enumerate(models):
        for second in models[i + 1:]:
            for (model_id, task_id), video in sorted(videos.items()):
                if model_id == first.pk and (second.pk, task_id) in videos:
                    candidates.append((video, videos[(second.pk, task_id)]))
    rng = random.Random(seed)
    made = []
    for video_x, video_y in rng.sample(candidates, min(n, len(candidates))):
        a, b = (video_x, video_y) if rng.random() < 0.5 else (video_y, video_x)
        made.append(pairwise_create(task=a.task, video_a=a, video_b=b, experts_per_item=experts_per_item,
                                    assigned_by=assigned_by, seed=seed))
    return made


# ---------------------------------------------------------------------------------------------- scoring a video


def video_criteria(video: GeneratedVideo) -> list[Criterion]:
    """The criteria of the video's task's current rubric version, by dimension and position."""
    version_id = video.task.current_rubric_id
    if version_id is None:
        return []
    return list(Criterion.objects.filter(version_id=version_id).order_by("dimension", "position"))


def _assignment(*, expert, workflow: str, target, lock: bool = False) -> Assignment:
    rows = Assignment.objects.filter(
        expert=expert, workflow=workflow, item__content_type=ContentType.objects.get_for_model(target),
        item__object_id=target.pk).exclude(status=Assignment.Status.PASSED)
    if lock:
        rows = rows.select_for_update()
    assignment = rows.select_related("item").first()
    if assignment is None:
        raise PermissionDenied("This item is not in your queue.")
    return assignment


def _parse_score(value) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"A score is 0 or 1, not {value!r}.")
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    if isinstance(value, int) and value in (0, 1):
        return value
    raise ValidationError(f"A score is 0 or 1, not {value!r}.")


@transaction.atomic
def human_score_submit(*, expert, video: GeneratedVideo, scores: Mapping, request_id: str = "") -> list[HumanScore]:
    """Record an expert's 0/1 for every criterion of the video's task's current rubric version.

    All criteria are required and no others are accepted; values are 0 or 1. The expert must be assigned to the
    video (``human_eval``). A second submit updates the expert's rows in place (one row per expert and criterion)
    and is logged with before/after. The assignment is marked done."""
    assignment = _assignment(expert=expert, workflow=HUMAN_EVAL, target=video, lock=True)
    criteria = video_criteria(video)
    if not criteria:
        raise ValidationError("This video's task has no rubric to score against.")
    wanted = {c.pk for c in criteria}
    given = {}
    for key, value in scores.items():
        try:
            given[int(key)] = _parse_score(value)
        except (TypeError, ValueError) as error:
            if isinstance(error, ValidationError):
                raise
            raise ValidationError(f"Unknown criterion {key!r}.") from None
    missing = sorted(wanted - set(given))
    unknown = sorted(set(given) - wanted)
    if unknown:
        raise ValidationError(f"Criteria not in this video's rubric: {', '.join(map(str, unknown))}.")
    if missing:
        raise ValidationError(f"Score every criterion: {len(missing)} of {len(wanted)} missing.")
    before = dict(HumanScore.objects.filter(expert=expert, video=video).values_list("criterion_id", "score"))
    rows = []
    for criterion in criteria:
        score = given[criterion.pk]
        try:
            with transaction.atomic():
                row, created = HumanScore.objects.get_or_create(expert=expert, video=video, criterion=criterion,
                                                                defaults={"score": score})
        except IntegrityError:  # a concurrent first submit of the same expert won the race
            row, created = HumanScore.objects.get(expert=expert, video=video, criterion=criterion), False
        if not created and row.score != score:
            row.score = score
            row.save(update_fields=["score"])
        rows.append(row)
    after = {c.pk: given[c.pk] for c in criteria}
    if before != after:
        log_action(actor=expert, verb="human_score", item=assignment.item,
                   before={str(k): v for k, v in sorted(before.items())} or None,
                   after={str(k): v for k, v in sorted(after.items())}, request_id=request_id)
    if assignment.status != Assignment.Status.DONE:
        assignment.status, assignment.completed_at = Assignment.Status.DONE, timezone.now()
        assignment.save(update_fields=["status", "completed_at"])
    return rows


# --------------------------------------------------------------------------------------------------- pairwise


def a_shown_left(*, expert, comparison: PairwiseComparison) -> bool:
    """Whether this expert sees video A on the left: a keyed hash of (comparison, expert), stable and hidden."""
    message = f"pairwise-side:{comparison.pk}:{expert.pk}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()
    return bool(digest[0] & 1)


def shown_videos(*, expert, comparison: PairwiseComparison) -> tuple[GeneratedVideo, GeneratedVideo]:
    """(left video, right video) as this expert sees them."""
    if a_shown_left(expert=expert, comparison=comparison):
        return comparison.video_a, comparison.video_b
    return comparison.video_b, comparison.video_a


@transaction.atomic
def pairwise_submit(*, expert, comparison: PairwiseComparison, choice_left_right: str,
                    request_id: str = "") -> PairwisePreference:
    """Record "left", "right" or "tie" as the expert saw it, mapped back to A / B / tie with the side stored.

    One preference per expert and comparison; submitting again changes it (logged)."""
    if choice_left_right not in SIDES:
        raise ValidationError(f"Choose left, right or tie, not {choice_left_right!r}.")
    assignment = _assignment(expert=expert, workflow=PAIRWISE, target=comparison, lock=True)
    left_is_a = a_shown_left(expert=expert, comparison=comparison)
    if choice_left_right == "tie":
        choice = PairwisePreference.Choice.TIE
    elif (choice_left_right == "left") == left_is_a:
        choice = PairwisePreference.Choice.A
    else:
        choice = PairwisePreference.Choice.B
    existing = PairwisePreference.objects.filter(comparison=comparison, expert=expert).first()
    before = existing.choice if existing else None
    if existing is None:
        preference = PairwisePreference.objects.create(comparison=comparison, expert=expert,
                                                       a_shown_left=left_is_a, choice=choice)
    else:
        preference = existing
        if existing.choice != choice:
            existing.choice = choice
            existing.save(update_fields=["choice"])
    if before != choice:
        log_action(actor=expert, verb="pairwise_choice", item=assignment.item, before={"choice": before},
                   after={"choice": str(choice), "shown": choice_left_right, "a_shown_left": left_is_a},
                   request_id=request_id)
    if assignment.status != Assignment.Status.DONE:
        assignment.status, assignment.completed_at = Assignment.Status.DONE, timezone.now()
        assignment.save(update_fields=["status", "completed_at"])
    return preference


def pairwise_outcomes() -> list[tuple[str, str, str, str | None]]:
    """Every preference as ``(level, model A, model B, winner or None)`` (one query)."""
    rows = PairwisePreference.objects.values_list(
        "comparison__task__level", "comparison__video_a__model__name", "comparison__video_b__model__name", "choice")
    outcomes = []
    for level, model_a, model_b, choice in rows:
        winner = model_a if choice == PairwisePreference.Choice.A else model_b if choice == "b" else None
        outcomes.append((level, model_a, model_b, winner))
    return outcomes


def pairwise_results() -> dict[str, list[dict]]:
    """Preference ratios with Wilson 95 % intervals per model pair, over all levels ("all") and per level."""
    return consistency.preference_ratios(pairwise_outcomes())


# ------------------------------------------------------------------------------------------------ expert queues


def queue(*, expert, workflow: str):
    return review_queue(expert=expert, workflow=workflow)


def media_token(*, expert, video: GeneratedVideo) -> str:
    """An opaque token for one expert and one video (signed; names neither the model nor the file)."""
    return signing.dumps([expert.pk, video.pk], salt=MEDIA_SALT, compress=True)


def video_for_token(*, expert, token: str) -> GeneratedVideo:
    """The video a token stands for, if it was issued to this expert and they are still assigned to an item showing
    it (``human_eval`` on the video, or ``pairwise`` on a comparison of it). PermissionDenied otherwise."""
    try:
        expert_id, video_id = signing.loads(token, salt=MEDIA_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        raise PermissionDenied("Not a video link of yours.") from None
    if expert_id != expert.pk:
        raise PermissionDenied("Not a video link of yours.")
    video = GeneratedVideo.objects.filter(pk=video_id).first()
    if video is None:
        raise PermissionDenied("Not a video link of yours.")
    comparisons = PairwiseComparison.objects.filter(Q(video_a=video) | Q(video_b=video)).values_list("pk", flat=True)
    assigned = Assignment.objects.filter(expert=expert).exclude(status=Assignment.Status.PASSED).filter(
        Q(workflow=HUMAN_EVAL, item__content_type=ContentType.objects.get_for_model(GeneratedVideo),
          item__object_id=video.pk)
        | Q(workflow=PAIRWISE, item__content_type=ContentType.objects.get_for_model(PairwiseComparison),
            item__object_id__in=list(comparisons))
    ).exists()
    if not assigned:
        raise PermissionDenied("This video is not in your queue.")
    return video
