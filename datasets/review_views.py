"""Pages of clip verification and caption checking. Thin: parse, authorise, call the services, render.

* The experts' queues are the review machinery's queue page (``annotation.views``, ``/review/clip_verification/``
  and ``/review/caption_check/``): :class:`ClipVerificationQueue` and :class:`CaptionCheckQueue` are its handlers
  (what an item shows, how a decision's own fields are parsed); blind review, progress, previous / next and htmx
  swaps are the queue page's.
* ``/captions/`` (researchers and admins): per-status counts of verification and captions, and the actions: open
  verification items for kept clips, assign experts (admins), generate captions for verified clips, regenerate a
  rejected or failed caption; ``/captions/clips/<id>/``: every caption version of a clip with the experts' diffs.
"""
from __future__ import annotations

from django.contrib import messages
from django.db.models import OuterRef, Subquery
from django.http import Http404
from django.utils.http import url_has_allowed_host_and_scheme
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation import services as review_services
from annotation.models import ReviewItem
from datasets import captions, verification
from datasets.models import Caption, Clip
from microverse_site.roles import ADMIN, EXPERT, RESEARCHER, has_role, role_required

LIST_LIMIT = 50


def _request_id(request) -> str:
    return getattr(request, "request_id", "")


def _url(fieldfile) -> str:
    if not fieldfile:
        return ""
    try:
        return fieldfile.url
    except (ValueError, NotImplementedError):
        return ""


def _percent(value) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def stage_results(clip: Clip) -> list[dict]:
    """The pipeline's measurements of a clip, as rows for people."""
    borders = [clip.border_top, clip.border_bottom, clip.border_left, clip.border_right]
    rows = [
        {"stage": "classify", "value": "unclassified (no classifier)" if clip.micro_probability is None
         else f"p(micro) = {clip.micro_probability:.2f}" + (f" ({clip.classifier_version})"
                                                           if clip.classifier_version else "")},
        {"stage": "borders", "value": "not measured" if clip.border_top is None else
         " · ".join(f"{side} {_percent(v)}" for side, v in zip(("top", "bottom", "left", "right"), borders))},
        {"stage": "text", "value": "not measured" if clip.text_area_fraction is None else
         f"{_percent(clip.text_area_fraction)} of the frame" + (f": “{clip.text_found[:80]}”" if clip.text_found
                                                                else "")},
        {"stage": "verdict", "value": clip.verdict + (f": {clip.stop_reason}" if clip.stop_reason else "")},
    ]
    return rows


def _clip_context(clip: Clip | None) -> dict:
    if clip is None:
        return {"clip": None}
    return {"clip": clip, "video": clip.video, "clip_url": _url(clip.file), "poster_url": _url(clip.thumbnail),
            "stages": stage_results(clip)}


# --------------------------------------------------------------------------------------- queue page handlers


class ClipVerificationQueue:
    """Keep or reject a clip (a reason for a rejection, a note for "other") and its micro / non-micro label."""

    @staticmethod
    def item_context(*, item: ReviewItem, user) -> dict:
        context = _clip_context(verification.clip_for(item))
        own = item.decisions.filter(expert=user).first()
        micro = (own.extra or {}).get("micro") if own else None
        context.update(
            reasons=[{"key": str(n), "code": code, "label": label}
                     for n, (code, label) in enumerate(verification.REASONS, start=1)],
            micro_value="" if micro is None else ("true" if micro else "false"),
        )
        return context

    @staticmethod
    def submit(*, request, item: ReviewItem):
        post = request.POST
        value = post.get("value", "")
        reason = post.get("reason", "") if value == "reject" else ""
        result = verification.decision_submit(
            item=item, expert=request.user, value=value, reason=reason,
            note=post.get("note", "")[:verification.NOTE_MAX + 1], micro=post.get("micro", ""),
            request_id=_request_id(request))
        label = value if value == "keep" else f"reject ({verification.REASON_LABELS.get(reason, reason)})"
        micro = (result.decision.extra or {}).get("micro")
        if micro is not None:
            label += ", micro" if micro else ", non-micro"
        return result, label


class CaptionCheckQueue:
    """Approve, edit or reject (with a reason) an LLM caption, watching the clip."""

    @staticmethod
    def item_context(*, item: ReviewItem, user) -> dict:
        caption = captions.caption_for(item)
        context = _clip_context(caption.clip if caption else None)
        context.update(caption=caption, caption_words=len(caption.text.split()) if caption else 0,
                       can_regenerate=True)
        return context

    @staticmethod
    def submit(*, request, item: ReviewItem):
        post = request.POST
        action = post.get("action", "")
        result = captions.caption_decision_submit(item=item, expert=request.user, action=action,
                                                  text=post.get("text", ""), reason=post.get("reason", ""),
                                                  request_id=_request_id(request))
        return result, {"approve": "approved", "edit": "edited", "reject": "rejected"}.get(action, action)

    @staticmethod
    def flash_context(*, item: ReviewItem, result) -> dict:
        caption = Caption.objects.filter(pk=item.object_id).first()
        if caption is None:
            return {}
        edited = caption.children.filter(source=Caption.Source.EXPERT).order_by("-version").first()
        return {"template": "datasets/_caption_flash.html", "caption": caption, "edited": edited,
                "diff": captions.word_diff(caption.text, edited.text) if edited else None}


# ----------------------------------------------------------------------------------------------- researchers


def _rejected_rows(limit: int = LIST_LIMIT) -> list[dict]:
    """Verified clips whose latest caption is rejected (they wait for a regeneration)."""
    latest = Caption.objects.filter(clip=OuterRef("pk")).order_by("-version")
    clips = (verification.verified_clips().annotate(latest_status=Subquery(latest.values("status")[:1]))
             .filter(latest_status=Caption.Status.REJECTED).select_related("video").order_by("pk")[:limit])
    rows = []
    for clip in clips:
        caption = clip.captions.order_by("-version").first()
        rows.append({"clip": clip, "caption": caption})
    return rows


@role_required(RESEARCHER, ADMIN)
def captions_overview(request):
    needing = captions.clips_needing_captions()
    failed_ids = list(needing.order_by("pk").values_list("pk", flat=True)[:1000])
    failures = captions.latest_failures(failed_ids)
    failed_clips = {c.pk: c for c in Clip.objects.filter(pk__in=list(failures)[:LIST_LIMIT]).select_related("video")}
    reason_counts = verification.rejection_reason_counts()
    context = {
        "verification": verification.counts(),
        "reasons": [{"code": code, "label": label, "count": reason_counts.get(code, 0)}
                    for code, label in verification.REASONS],
        "caption_counts": captions.status_counts(),
        "needing": needing.count(),
        "verified": verification.verified_clips().count(),
        "with_approved": verification.verified_clips().filter(captions__status=Caption.Status.APPROVED)
        .distinct().count(),
        "failures": [{"clip": failed_clips[pk], "reason": reason} for pk, reason in failures.items()
                     if pk in failed_clips],
        "rejected": _rejected_rows(),
        "recent": (Caption.objects.select_related("clip", "clip__video").order_by("-created_at", "-id")[:20]),
        "is_admin": has_role(request.user, ADMIN),
        "micro_labels": len(verification.micro_labels()),
    }
    return render(request, "datasets/captions.html", context)


@require_POST
@role_required(RESEARCHER, ADMIN)
def verification_open(request):
    opened = verification.verification_open(user=request.user, request_id=_request_id(request))
    messages.success(request, f"Opened {opened} clip-verification item{'s' if opened != 1 else ''}.")
    return redirect("captions-overview")


@require_POST
@role_required(ADMIN)
def assign_experts(request, workflow: str):
    if workflow not in (verification.WORKFLOW, captions.WORKFLOW):
        raise Http404("No such workflow here.")
    made = review_services.panel_auto_assign(workflow=workflow, assigned_by=request.user,
                                             request_id=_request_id(request))
    messages.success(request, f"Auto-assign made {made} assignment{'s' if made != 1 else ''}.")
    return redirect("captions-overview")


@require_POST
@role_required(RESEARCHER, ADMIN)
def captions_generate(request):
    queued = captions.captions_generate_for_verified(user=request.user, request_id=_request_id(request))
    messages.success(request, f"Queued caption generation for {queued} verified clip{'s' if queued != 1 else ''}.")
    return redirect("captions-overview")


@require_POST
@role_required(RESEARCHER, ADMIN, EXPERT)
def caption_regenerate(request, clip_id: int):
    """Queue a new LLM caption for a clip whose latest caption was rejected (or whose generation failed)."""
    get_object_or_404(Clip, pk=clip_id)
    queued = captions.caption_regenerate(clip_id=clip_id, user=request.user, request_id=_request_id(request))
    text = (f"Clip {clip_id}: a new caption is being written." if queued
            else f"Clip {clip_id}: nothing to regenerate (its caption is being checked or approved).")
    if request.htmx:
        return render(request, "datasets/_regenerate_result.html", {"queued": queued, "text": text})
    (messages.success if queued else messages.error)(request, text)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = reverse("captions-overview")  # never redirect off the site
    return redirect(target)


@role_required(RESEARCHER, ADMIN)
def caption_history(request, clip_id: int):
    clip = get_object_or_404(Clip.objects.select_related("video"), pk=clip_id)
    context = {**_clip_context(clip), "history": captions.caption_history(clip),
               "outcome": verification.expert_outcome(clip),
               "failure": captions.latest_failures([clip.pk]).get(clip.pk)}
    return render(request, "datasets/caption_history.html", context)
