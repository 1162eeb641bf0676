"""Captions of verified clips (pipeline 3): the LLM writes them, experts check them (approve, edit or reject).

* :func:`caption_generate` - the clip's FRAMES_PER_CLIP (8) evenly spaced frames as JPEG image parts plus its source
  video's title and description go to the LLM (purpose "caption", ``microverse_site.llm.chat``: retries with backoff,
  Retry-After, image halving on HTTP 413, one repair turn, tokens and cost on the LLMCall row) with the paper's
  captioning instruction. A valid answer (one paragraph of prose, CAPTION_MIN_WORDS..CAPTION_MAX_WORDS words) becomes
  the next :class:`~datasets.models.Caption` version (source "llm", status "checking") and opens its caption_check
  review item. A failure creates nothing and is logged (verb ``caption_failed``, with the reason); running it again
  retries. Idempotent: a clip that has a caption being checked or approved is left alone, and an identical earlier
  request's ok answer is reused instead of paid for again.
* Caption checking (:func:`caption_decision_submit`, outcome handler :func:`handle_outcome`): approve (the caption
  becomes "approved", any other approved version "superseded"), edit (a new version, source "expert", parent the
  checked one, "approved"; the checked one "superseded"; the word diff is shown from the two texts) or reject with a
  reason ("rejected"; :func:`caption_regenerate` queues a new LLM version, whose request names the rejected caption
  and the reason). Every version is kept; every step is in the action log.

The caption_check panel is one expert by default (:data:`DEFAULT_PANEL`, written as the workflow's ``WorkflowConfig``
when the first caption item opens, if the workflow has none); with a larger panel, approve and edit count as keep,
and the latest edit among the keeps is what gets approved.

Call :func:`caption_generate` outside transactions (the LLM call can take minutes); Celery runs it on the "llm" queue
(``datasets.caption_tasks.generate_caption``).
"""
from __future__ import annotations

import base64
import difflib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Max

from annotation import services
from annotation.models import ReviewItem, Workflow, WorkflowConfig
from datasets import verification
from datasets.models import Caption, Clip
from microverse_site import llm
from rubrics import llm_prompts

logger = logging.getLogger(__name__)

WORKFLOW = Workflow.CAPTION_CHECK.value
LLM_QUEUE = "llm"
PURPOSE = "caption"
DEFAULT_PANEL = (1, 1)  # (panel size, quorum) of caption checking unless an admin configured another
CAPTION_MIN_WORDS = 80
CAPTION_MAX_WORDS = 250
CAPTION_MAX_CHARS = 2500
EDIT_MAX_CHARS = 5000
REASON_MAX_CHARS = 2000
IMAGE_MAX_WIDTH = 512  # pixels; frames are scaled down to this width before JPEG encoding
JPEG_QUALITY = 85
DESCRIPTION_MAX_CHARS = 3000
ACTIVE = (Caption.Status.CHECKING, Caption.Status.APPROVED)

# ---------------------------------------------------------------------------------------------------- prompt

CAPTION_SYSTEM = (
    "You write training captions for a text-to-video model that learns to show the microscopic world of biology "
    "and medicine. You are given frames sampled evenly, in order, from one short clip of a real scientific or "
    "educational video, together with the title and description of the video the clip comes from. Describe what "
    "the clip shows, in this order and in flowing prose:\n"
    "1. the main subject: what is being shown (the organ, tissue, cell type, organelle, molecule or organism);\n"
    "2. the scene and the actions: where it takes place and what moves, changes or interacts over the clip;\n"
    "3. the visible details: colours, lighting, staining, the kind of imaging (light or electron microscopy, "
    "fluorescence, animation) and the camera's view and motion;\n"
    "4. textures and fine structures: surfaces, membranes, granules, filaments, edges and translucency.\n"
    "Rules: one paragraph of about 150 words (at least 80, at most 250) in English; no title, no bullet points, no "
    "numbered points, no line breaks; describe only what can be seen in the frames, using the title and description "
    "only to name things correctly; do not mention the frames, the video, its title, channel, captions or on-screen "
    "text. Answer with the paragraph only."
)

CAPTION_USER = (
    "Source video title: {title}\n"
    "Source video description: {description}\n\n"
    "The {count} images are frames of the clip, evenly spaced from its start to its end. Write the caption now: one "
    "paragraph of about 150 words, no bullet points."
)

REGENERATE_NOTE = (
    "\n\nAn expert rejected an earlier caption of this clip for this reason: {reason}\n"
    "The rejected caption was: {text}\nWrite a new caption that does not have this problem."
)



def _clip_text(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def caption_messages(*, images: list[str], title: str, description: str = "",
                     rejected: Caption | None = None) -> list[dict]:
    """The chat messages: the instruction, then one user message with the metadata and the frames (base64 JPEG)."""
    text = CAPTION_USER.format(title=_clip_text(title, 300) or "(none)",
                               description=_clip_text(description, DESCRIPTION_MAX_CHARS) or "(none)",
                               count=len(images))
    if rejected is not None:
        text += REGENERATE_NOTE.format(reason=_clip_text(rejected.reject_reason, 500) or "(no reason given)",
                                       text=_clip_text(rejected.text, CAPTION_MAX_CHARS))
    content: list[dict] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}", "detail": "low"}}
                for image in images]
    return [{"role": "system", "content": CAPTION_SYSTEM}, {"role": "user", "content": content}]


def validate_caption(text: str) -> str:
    """One paragraph of prose, CAPTION_MIN_WORDS..CAPTION_MAX_WORDS words, no lists, headings or markdown."""
    return llm_prompts.validate_paragraph(
        text, min_words=CAPTION_MIN_WORDS, max_words=CAPTION_MAX_WORDS, max_chars=CAPTION_MAX_CHARS,
        short_hint=f"write about 150 (at least {CAPTION_MIN_WORDS})",
        long_hint=f"write about 150 (at most {CAPTION_MAX_WORDS})")


# ---------------------------------------------------------------------------------------------------- frames


def frames_per_clip() -> int:
    return int(settings.PIPELINE.get("FRAMES_PER_CLIP", 8))


def _evenly(items: list, count: int) -> list:
    if len(items) <= count:
        return list(items)
    return [items[int((i + 0.5) * len(items) / count)] for i in range(count)]


def clip_frames(clip: Clip, count: int | None = None) -> list:
    """`count` (FRAMES_PER_CLIP) evenly spaced frames of the clip, BGR: the sampled frames the split kept when the
    clip has them, else decoded from the clip file, else from the source video (``video_io.read_frames``)."""
    from datasets import pipeline, video_io

    count = count or frames_per_clip()
    if getattr(clip, "sample_frames", None):
        try:
            frames = pipeline.read_samples(clip)
            if frames:
                return _evenly(frames, count)
        except (OSError, ValueError) as error:
            logger.warning("clip %s: stored sample frames unreadable (%s); decoding", clip.pk, error)
    if clip.file:
        with pipeline.local_video_path(clip.file) as path:
            length = video_io.probe(path).frame_count or (clip.end_frame - clip.start_frame)
            return video_io.read_frames(path, pipeline.sample_indices(0, length, count))
    with pipeline.local_video_path(clip.video.file) as path:
        return video_io.read_frames(path, pipeline.sample_indices(clip.start_frame, clip.end_frame, count))


def encode_jpeg(frame, max_width: int = IMAGE_MAX_WIDTH) -> str:
    """A BGR frame as base64 JPEG, scaled down to `max_width` pixels wide."""
    from datasets import video_io  # (sets OpenCV's log level before cv2 is first used)
    import cv2

    ok, data = cv2.imencode(".jpg", video_io.downscale(frame, max_width), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("a frame cannot be encoded as JPEG")
    return base64.b64encode(data.tobytes()).decode("ascii")


# ------------------------------------------------------------------------------------------------ generation


@dataclass(frozen=True)
class GenerationResult:
    status: str  # created / skipped / failed / not_verified / missing
    caption: Caption | None = None
    reason: str = ""


def _ensure_panel_config() -> None:
    if not WorkflowConfig.objects.filter(workflow=WORKFLOW).exists():
        size, quorum = getattr(settings, "CAPTION_CHECK_PANEL", DEFAULT_PANEL)
        _, created = WorkflowConfig.objects.get_or_create(workflow=WORKFLOW,
                                                          defaults={"panel_size": size, "quorum": quorum})
        if created:
            services.log_action(actor=None, verb="workflow_config", workflow=WORKFLOW,
                                after={"panel_size": size, "quorum": quorum}, rationale="caption checking default")


def _fail(clip: Clip, reason: str, *, call_id: int | None = None, status: str = "error") -> GenerationResult:
    services.log_action(actor=None, verb="caption_failed", workflow=WORKFLOW, target=clip, rationale=reason[:2000],
                        after={"clip": clip.pk, "llm_call": call_id, "status": status})
    logger.warning("clip %s: no caption: %s", clip.pk, reason)
    return GenerationResult("failed", reason=reason)


def _call_id_of(result: llm.LLMResult) -> int | None:
    if result.call_id is not None:
        return result.call_id
    from microverse_site.models import LLMCall  # a cached answer: the call that paid for it

    return (LLMCall.objects.filter(purpose=PURPOSE, request_hash=result.request_hash, status="ok")
            .order_by("-created_at", "-id").values_list("pk", flat=True).first())


def caption_generate(*, clip_id: int) -> GenerationResult:
    """Write the next caption version of a verified clip with the LLM and open its caption_check item (see the
    module docstring). Never raises for an LLM or video failure: the result says "failed" and the log has why."""
    clip = Clip.objects.select_related("video").filter(pk=clip_id).first()
    if clip is None:
        return GenerationResult("missing", reason="the clip no longer exists")
    if not verification.is_verified(clip.pk):
        return GenerationResult("not_verified", reason="only clips the experts verified are captioned")
    if clip.captions.filter(status__in=ACTIVE).exists():
        return GenerationResult("skipped", reason="the clip has a caption being checked or approved")
    rejected = clip.captions.order_by("-version").first()
    if rejected is not None and rejected.status != Caption.Status.REJECTED:
        rejected = None
    try:
        images = [encode_jpeg(frame) for frame in clip_frames(clip)]
    except Exception as exc:  # noqa: BLE001 - an unreadable or missing file: recorded, the clip can be retried
        return _fail(clip, f"the clip's frames cannot be read: {getattr(exc, 'reason', None) or exc}")
    if not images:
        return _fail(clip, "the clip has no frames")
    messages = caption_messages(images=images, title=clip.video.title, description=clip.video.description,
                                rejected=rejected)
    try:
        result = llm.chat(purpose=PURPOSE, messages=messages, validate=validate_caption, shrink=llm.halve_images,
                          use_cache=True)
    except llm.LLMError as exc:
        return _fail(clip, exc.reason, call_id=exc.call_id, status=exc.status)
    with transaction.atomic():
        clip = Clip.objects.select_for_update().get(pk=clip_id)
        if clip.captions.filter(status__in=ACTIVE).exists():  # another run finished first
            return GenerationResult("skipped", reason="the clip has a caption being checked or approved")
        version = (clip.captions.aggregate(top=Max("version"))["top"] or 0) + 1
        call_id = _call_id_of(result)
        caption = Caption.objects.create(clip=clip, version=version, text=result.value, source=Caption.Source.LLM,
                                         status=Caption.Status.CHECKING, llm_call_id=call_id)
        _ensure_panel_config()
        item = services.review_item_open(workflow=WORKFLOW, target=caption)
        services.log_action(actor=None, verb="caption_generated", item=item, target=clip,
                            after={"clip": clip.pk, "caption": caption.pk, "version": version, "model": result.model,
                                   "llm_call": call_id, "prompt_tokens": result.prompt_tokens,
                                   "completion_tokens": result.completion_tokens, "cached": result.cached,
                                   "after_rejected_version": rejected.version if rejected else None})
    return GenerationResult("created", caption=caption)


def captions_queue(*, clip_ids: Iterable[int]) -> int:
    """Send one ``datasets.caption_tasks.generate_caption`` per clip to the "llm" queue, now."""
    from datasets.caption_tasks import generate_caption

    sent = 0
    for clip_id in clip_ids:
        generate_caption.apply_async(args=[clip_id], queue=LLM_QUEUE)
        sent += 1
    return sent


def _queue_on_commit(clip_ids: list[int]) -> None:
    if clip_ids:
        transaction.on_commit(lambda: captions_queue(clip_ids=clip_ids))


def clips_needing_captions():
    """Verified clips with no caption at all (never captioned, or every generation failed)."""
    return verification.verified_clips().annotate(n=Count("captions")).filter(n=0)


def captions_generate_for_verified(*, user=None, request_id: str = "") -> int:
    """Queue caption generation for every verified clip without a caption (the researchers' button). Returns the
    number queued; the tasks are sent once the transaction commits."""
    with transaction.atomic():
        clip_ids = list(clips_needing_captions().order_by("pk").values_list("pk", flat=True))
        if clip_ids:
            services.log_action(actor=user, verb="captions_queued", workflow=WORKFLOW,
                                after={"clips": len(clip_ids)}, request_id=request_id)
        _queue_on_commit(clip_ids)
    return len(clip_ids)


def caption_regenerate(*, clip_id: int, user=None, request_id: str = "") -> bool:
    """Queue a new LLM caption for a clip whose latest caption was rejected (or whose generation failed).
    False (nothing queued) when the clip has a caption being checked or approved, or is not verified."""
    with transaction.atomic():
        clip = Clip.objects.select_for_update().filter(pk=clip_id).first()
        if clip is None or not verification.is_verified(clip.pk):
            return False
        if clip.captions.filter(status__in=ACTIVE).exists():
            return False
        latest = clip.captions.order_by("-version").first()
        services.log_action(actor=user, verb="caption_regenerate", workflow=WORKFLOW, target=clip,
                            before={"version": latest.version, "status": latest.status} if latest else None,
                            request_id=request_id)
        _queue_on_commit([clip.pk])
    return True


# -------------------------------------------------------------------------------------------------- checking


APPROVE, EDIT, REJECT = "approve", "edit", "reject"
ACTIONS = (APPROVE, EDIT, REJECT)


def caption_for(item: ReviewItem) -> Caption | None:
    if item.workflow != WORKFLOW:
        return None
    return Caption.objects.select_related("clip", "clip__video", "parent").filter(pk=item.object_id).first()


def _normalise(text: str) -> str:
    return " ".join((text or "").split())


def clean_check(*, caption: Caption, action: str, text: str = "", reason: str = "") -> dict:
    """The decision fields of a caption check, or ValidationError."""
    if action == APPROVE:
        return {"value": "keep", "reason": "", "comment": "", "extra": {"action": APPROVE}}
    if action == EDIT:
        edited = (text or "").strip()
        if not edited:
            raise ValidationError("The edited caption is empty.")
        if len(edited) > EDIT_MAX_CHARS:
            raise ValidationError(f"The edited caption is longer than {EDIT_MAX_CHARS} characters.")
        if _normalise(edited) == _normalise(caption.text):
            raise ValidationError("The edit changes nothing: approve the caption instead.")
        return {"value": "keep", "reason": "", "comment": "", "extra": {"action": EDIT, "text": edited}}
    if action == REJECT:
        why = (reason or "").strip()
        if not why:
            raise ValidationError("Say why the caption is rejected.")
        if len(why) > REASON_MAX_CHARS:
            raise ValidationError(f"The reason is longer than {REASON_MAX_CHARS} characters.")
        return {"value": "reject", "reason": "", "comment": why, "extra": {"action": REJECT}}
    raise ValidationError("The action must be approve, edit or reject.")


def caption_decision_submit(*, item: ReviewItem, expert, action: str, text: str = "", reason: str = "",
                            request_id: str = "") -> services.DecisionResult:
    """An expert's check of a caption (approve / edit / reject), through the blind, locked review machinery."""
    caption = caption_for(item)
    if caption is None:
        raise ValidationError("This item is not a caption-checking item, or its caption no longer exists.")
    fields = clean_check(caption=caption, action=action, text=text, reason=reason)
    return services.decision_submit(item=item, expert=expert, request_id=request_id, **fields)


def handle_outcome(item: ReviewItem, outcome: str) -> None:
    """Outcome handler of caption_check (registered in ``datasets.apps``), inside the deciding transaction."""
    caption = Caption.objects.select_for_update().filter(pk=item.object_id).first()
    if caption is None or caption.status != Caption.Status.CHECKING:
        return
    decisions = list(item.decisions.select_related("expert").order_by("created_at", "pk"))
    clip = Clip.objects.select_for_update().get(pk=caption.clip_id)
    if outcome == "accepted":
        edits = [d for d in decisions if d.value == "keep" and (d.extra or {}).get("action") == EDIT]
        if edits:
            edit = edits[-1]
            version = (clip.captions.aggregate(top=Max("version"))["top"] or 0) + 1
            approved = Caption.objects.create(clip=clip, version=version, text=edit.extra["text"],
                                              source=Caption.Source.EXPERT, status=Caption.Status.APPROVED,
                                              parent=caption, created_by=edit.expert)
            caption.status = Caption.Status.SUPERSEDED
            caption.save(update_fields=["status"])
            services.log_action(actor=edit.expert, verb="caption_edited", item=item, target=approved,
                                before={"version": caption.version, "text": caption.text},
                                after={"version": approved.version, "text": approved.text,
                                       "diff": unified_diff(caption.text, approved.text)})
        else:
            approved = caption
            caption.status = Caption.Status.APPROVED
            caption.save(update_fields=["status"])
            services.log_action(actor=None, verb="caption_approved", item=item, target=caption,
                                after={"clip": clip.pk, "version": caption.version})
        superseded = (Caption.objects.filter(clip=clip, status__in=ACTIVE).exclude(pk=approved.pk)
                      .update(status=Caption.Status.SUPERSEDED))
        if superseded:
            services.log_action(actor=None, verb="captions_superseded", item=item, target=clip,
                                after={"count": superseded, "by_version": approved.version})
    elif outcome == "rejected":
        reasons = [d.comment.strip() for d in decisions if d.value == "reject" and d.comment.strip()]
        caption.status = Caption.Status.REJECTED
        caption.reject_reason = "\n".join(reasons)
        caption.save(update_fields=["status", "reject_reason"])
        services.log_action(actor=None, verb="caption_rejected", item=item, target=caption,
                            after={"clip": clip.pk, "version": caption.version}, rationale=caption.reject_reason)


# ----------------------------------------------------------------------------------------------------- reads


def word_diff(old: str, new: str) -> list[tuple[str, str]]:
    """[(op, text)] with op "equal" / "delete" / "insert", word by word (difflib), for showing an edit."""
    a, b = (old or "").split(), (new or "").split()
    parts: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            parts.append(("equal", " ".join(a[i1:i2])))
        else:
            if i2 > i1:
                parts.append(("delete", " ".join(a[i1:i2])))
            if j2 > j1:
                parts.append(("insert", " ".join(b[j1:j2])))
    return parts


def unified_diff(old: str, new: str) -> str:
    """A word-per-line unified diff (difflib), as kept in the action log."""
    return "\n".join(difflib.unified_diff((old or "").split(), (new or "").split(), "checked", "edited",
                                          lineterm="", n=3))


def caption_history(clip: Clip) -> list[dict]:
    """Every version of a clip's caption, oldest first, each with its diff against its parent (expert edits)."""
    rows = []
    for caption in clip.captions.select_related("parent", "llm_call", "created_by").order_by("version"):
        rows.append({"caption": caption,
                     "diff": word_diff(caption.parent.text, caption.text) if caption.parent else None})
    return rows


def status_counts() -> dict[str, int]:
    by_status = dict(Caption.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {status: by_status.get(status, 0) for status in Caption.Status.values}


def latest_failures(clip_ids: Iterable[int]) -> dict[int, str]:
    """{clip id: reason} for clips whose latest generation attempt failed (no caption created after it)."""
    from annotation.models import ActionLog

    ids = [str(pk) for pk in clip_ids]
    failures: dict[int, str] = {}
    seen: set[str] = set()
    rows = (ActionLog.objects.filter(workflow=WORKFLOW, target_type="clip", target_id__in=ids,
                                     verb__in=("caption_failed", "caption_generated", "caption_regenerate"))
            .order_by("-created_at", "-id").values_list("target_id", "verb", "rationale"))
    for target_id, verb, rationale in rows:
        if target_id in seen:
            continue
        seen.add(target_id)
        if verb == "caption_failed":
            failures[int(target_id)] = rationale
    return failures
