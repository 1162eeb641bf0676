"""Pipeline pages (researchers and admins): the funnel and dataset statistics, the videos with their stage states,
and one video's stages (htmx polling), controls and clips. Thin: parse, authorise, call a service or selector,
render."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from datasets import overview_cache, pipeline, selectors
from datasets.models import SourceVideo, StageRun
from microverse_site.roles import ADMIN, RESEARCHER, role_required

PAGE_SIZE = 50
pipeline_role_required = role_required(RESEARCHER, ADMIN)


def _thresholds() -> list[tuple[str, object]]:
    conf = settings.PIPELINE
    return [("Split: adjacent-frame similarity below", conf["SPLIT_THRESHOLD"]),
            ("Split: shortest clip kept (s)", conf["MIN_CLIP_SECONDS"]),
            ("Classifier: p(micro) at least", conf["CLASSIFIER_THRESHOLD"]),
            ("Borders: largest black border fraction", conf["BORDER_MAX_FRACTION"]),
            ("Text: largest burned-in text area fraction", conf["TEXT_MAX_AREA_FRACTION"]),
            ("Frames sampled per clip", conf["FRAMES_PER_CLIP"])]


@pipeline_role_required
def funnel(request):
    overview = overview_cache.pipeline_overview()
    context = {
        "funnel": overview["funnel"],
        "stats": overview["stats"],
        "videos": selectors.video_list()[:20],
        "thresholds": _thresholds(),
        "classifier_configured": bool(settings.PIPELINE.get("CLASSIFIER_DIR")),
    }
    return render(request, "datasets/funnel.html", context)


@pipeline_role_required
def video_list(request):
    admission = request.GET.get("admission", "")
    status = request.GET.get("status", "")
    page = Paginator(selectors.video_list(admission=admission, status=status), PAGE_SIZE).get_page(
        request.GET.get("page"))
    context = {"page": page, "videos": page.object_list, "admission": admission, "status": status,
               "admissions": SourceVideo.Admission.choices, "statuses": StageRun.Status.choices}
    return render(request, "datasets/video_list.html", context)


def _video_or_404(pk: int) -> SourceVideo:
    try:
        return selectors.video_detail(pk=pk)
    except SourceVideo.DoesNotExist:
        raise Http404(f"No video {pk}.") from None


def _stage_context(video: SourceVideo) -> dict:
    states = selectors.stage_states(video)
    statuses = {s["run"].status for s in states if s["run"]}
    return {
        "video": video, "states": states, "all_final": selectors.all_final(states),
        "can_start": video.admission == SourceVideo.Admission.ADMITTED
        and not statuses & set(pipeline.ACTIVE_STATUSES),
        "can_cancel": bool(statuses & set(pipeline.ACTIVE_STATUSES)),
        "can_retry": bool(statuses & {StageRun.Status.FAILED, StageRun.Status.CANCELLED})
        and not statuses & set(pipeline.ACTIVE_STATUSES),
    }


@pipeline_role_required
def video_detail(request, pk: int):
    video = _video_or_404(pk)
    clips = list(selectors.video_clips(video))
    from datasets import ingest

    context = {**_stage_context(video), "clips": clips, "clip_counts": selectors.clip_summary(clips),
               "rules": ingest.admission_rules(), "thresholds": _thresholds(),
               "classifier_configured": bool(settings.PIPELINE.get("CLASSIFIER_DIR"))}
    return render(request, "datasets/video_detail.html", context)


@pipeline_role_required
def video_stages(request, pk: int):
    """The stage table alone, polled by htmx every second until every stage is final (then 286 stops it)."""
    video = _video_or_404(pk)
    context = _stage_context(video)
    response = render(request, "datasets/video_detail.html#stages", context)
    if context["all_final"] and request.htmx:
        # Stop polling, and reload the page once so that the clips the stages made appear.
        response.status_code = HttpResponseStopPolling.status_code
        response["HX-Refresh"] = "true"
    return response


def _act(request, pk: int, action, done: str):
    video = get_object_or_404(SourceVideo, pk=pk)
    try:
        action(video=video, user=request.user, request_id=getattr(request, "request_id", ""))
    except pipeline.PipelineError as error:
        if request.htmx:
            # 200, not 409: htmx swaps only successful responses, and the refusal is shown in the swapped part.
            return render(request, "datasets/video_detail.html#stages",
                          {**_stage_context(_video_or_404(pk)), "error": str(error)})
        messages.error(request, str(error))
        return redirect("video-detail", pk=pk)
    if request.htmx:
        return render(request, "datasets/video_detail.html#stages", _stage_context(_video_or_404(pk)))
    messages.success(request, done)
    return redirect("video-detail", pk=pk)


@require_POST
@pipeline_role_required
def video_start(request, pk: int):
    return _act(request, pk, pipeline.pipeline_start, "Pipeline queued.")


@require_POST
@pipeline_role_required
def video_cancel(request, pk: int):
    return _act(request, pk, pipeline.pipeline_cancel, "Queued and running stages cancelled.")


@require_POST
@pipeline_role_required
def video_retry(request, pk: int):
    return _act(request, pk, pipeline.pipeline_retry, "Failed and cancelled stages queued again.")


@require_POST
@pipeline_role_required
def reevaluate(request, pk: int | None = None):
    video = get_object_or_404(SourceVideo, pk=pk) if pk is not None else None
    counts = pipeline.pipeline_reevaluate(user=request.user, video=video,
                                          request_id=getattr(request, "request_id", ""))
    messages.success(request, f"Re-evaluated {counts['clips']} clips with the current thresholds: "
                              f"{counts['changed']} changed; {counts['kept']} kept, {counts['dropped']} dropped, "
                              f"{counts['pending']} pending.")
    return redirect("video-detail", pk=pk) if pk is not None else redirect("pipeline-funnel")
