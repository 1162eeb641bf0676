"""Pages of the candidate-task pipeline (researchers and admins) and the LLM draft of a task's first rubric.

* ``/candidates/``: upload a CSV or JSON file of source videos (``rubrics.candidates.parse_candidate_file`` and
  ``candidates_import``: all or nothing), the counts per status (polled with htmx while the LLM has work), the
  candidates page by page with a retry for failed ones. Statuses only: votes and tallies of candidates in task
  voting are never shown here (experts vote blind; this page is not theirs: they get 403).
* ``/tasks/N/draft-rubric/``: ask the LLM for the first rubric of a task that has none (``rubric_draft_queue``).
"""
from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotation.models import Workflow
from annotation.services import log_action
from microverse_site.roles import ADMIN, RESEARCHER, any_role_required, has_role, role_required
from rubrics import candidates, selectors
from rubrics.models import BenchmarkTask, CandidateTask

PAGE_SIZE = 50
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
#: Statuses for which the LLM still has work: the page polls while any candidate has one of them.
ACTIVE_STATUSES = (CandidateTask.Status.PENDING, CandidateTask.Status.GENERATING)

Status = CandidateTask.Status


def _llm_configured() -> bool:
    return bool(settings.OPENAI_BASE_URL)


class CandidateUploadForm(forms.Form):
    file = forms.FileField(label="CSV or JSON file",
                           help_text="Columns (CSV header) or keys (JSON objects): title, description, url; "
                                     "with prompts: also prompt and level (Organ, Cellular or Subcellular).")
    with_prompts = forms.BooleanField(required=False, label="The file carries prompts and levels (no LLM call)")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is {filesizeformat(upload.size)}; the limit is "
                                        f"{filesizeformat(MAX_UPLOAD_BYTES)}. Nothing was imported.")
        return upload


# --------------------------------------------------------------------------------------------------- the page


def _status_filter(value) -> str:
    return value if value in Status.values else ""


def _live_context(request, *, status: str, page_number) -> dict:
    counts = selectors.candidate_status_counts()
    page = Paginator(selectors.candidate_list(status=status), PAGE_SIZE).get_page(page_number)
    active = sum(counts[s] for s in ACTIVE_STATUSES)
    return {
        "counts": [(value, label, counts[value]) for value, label in Status.choices],
        "total": sum(counts.values()), "active": active, "failed": counts[Status.FAILED],
        "page": page, "status": status, "statuses": Status.choices,
        "query": urlencode({"status": status}) if status else "",
        "live_query": urlencode({"status": status, "page": page.number}),
    }


def _page(request, form, *, http_status=200):
    status = _status_filter(request.GET.get("status", ""))
    context = _live_context(request, status=status, page_number=request.GET.get("page"))
    context.update(form=form, llm_configured=_llm_configured(), max_upload=MAX_UPLOAD_BYTES)
    return render(request, "rubrics/candidates.html", context, status=http_status)


@require_GET
@role_required(ADMIN, RESEARCHER)
def candidate_list(request):
    return _page(request, CandidateUploadForm())


@require_GET
@role_required(ADMIN, RESEARCHER)
def candidate_status(request):
    """The counts and the table (htmx polling): 286 (stop polling) once no candidate waits for the LLM."""
    status = _status_filter(request.GET.get("status", ""))
    context = _live_context(request, status=status, page_number=request.GET.get("page"))
    response = render(request, "rubrics/candidates.html#live", context)
    if not context["active"] and request.htmx:
        response.status_code = HttpResponseStopPolling.status_code
    return response


@require_POST
@role_required(ADMIN, RESEARCHER)
def candidate_import(request):
    form = CandidateUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _page(request, form, http_status=400)
    upload, with_prompts = form.cleaned_data["file"], form.cleaned_data["with_prompts"]
    required = ("title", "prompt", "level") if with_prompts else ("title",)
    try:
        rows = candidates.parse_candidate_file(name=upload.name, data=upload.read(), required=required)
        # candidates_import logs the import itself (verb "candidates_import", actor, counts).
        summary = candidates.candidates_import(rows=rows, user=request.user, with_llm=not with_prompts)
    except candidates.CandidateImportError as exc:
        form.add_error("file", f"{upload.name}: {' '.join(str(exc).split())}. Nothing was imported.")
        return _page(request, form, http_status=400)
    if summary.created:
        text = (f"Imported {summary.created} candidates from {upload.name}: {summary.to_voting} to task voting, "
                f"{summary.pending} waiting for the LLM.")
        if summary.skipped_duplicates:
            text += f" Skipped {summary.skipped_duplicates} rows whose URL is already a candidate."
        messages.success(request, text)
        if summary.pending and not _llm_configured():
            messages.warning(request, "No LLM endpoint is configured (OPENAI_BASE_URL): the candidates waiting for "
                                      "the LLM will fail until one is; then retry them.")
    elif summary.skipped_duplicates:
        messages.info(request, f"Nothing imported from {upload.name}: its {summary.skipped_duplicates} rows are "
                               "already candidates.")
    else:
        messages.info(request, f"Nothing to import in {upload.name}.")
    return redirect("candidate-list")


def _back(request):
    """The candidates page with the filter and page the POSTing form came from."""
    params = {}
    status = _status_filter(request.POST.get("status", ""))
    if status:
        params["status"] = status
    page = request.POST.get("page", "")
    if page.isdigit():
        params["page"] = page
    url = reverse("candidate-list")
    return redirect(f"{url}?{urlencode(params)}" if params else url)


@require_POST
@role_required(ADMIN, RESEARCHER)
def candidate_retry(request, pk: int):
    candidate = get_object_or_404(CandidateTask, pk=pk)
    with transaction.atomic():
        retried = candidates.candidate_retry(candidate_id=candidate.pk)
        if retried:
            log_action(actor=request.user, verb="candidates_retry", workflow=Workflow.TASK_VOTING, target=candidate,
                       before={"status": Status.FAILED, "error": candidate.generation_error[:500]},
                       after={"status": Status.PENDING})
    if retried:
        messages.success(request, f"Candidate {candidate.pk} is queued for the LLM again.")
    else:
        messages.info(request, f"Candidate {candidate.pk} has not failed ({candidate.get_status_display()}); "
                               "nothing to retry.")
    return _back(request)


@require_POST
@role_required(ADMIN, RESEARCHER)
def candidate_retry_failed(request):
    ids = selectors.candidate_ids(status=Status.FAILED)
    with transaction.atomic():
        retried = [pk for pk in ids if candidates.candidate_retry(candidate_id=pk)]
        if retried:
            log_action(actor=request.user, verb="candidates_retry", workflow=Workflow.TASK_VOTING,
                       after={"count": len(retried), "candidates": retried[:1000]})
    if retried:
        messages.success(request, f"{len(retried)} failed candidates are queued for the LLM again.")
    else:
        messages.info(request, "No candidate has failed; nothing to retry.")
    return _back(request)


# ------------------------------------------------------------------------------------ first rubric of a task


@require_POST
@role_required(ADMIN, RESEARCHER)
def task_draft_rubric(request, index: int):
    task = get_object_or_404(BenchmarkTask, index=index)
    if task.current_rubric_id is not None or task.rubric_versions.exists():
        messages.info(request, f"Task {task.index} already has a rubric; revise it instead of drafting one.")
    elif not _llm_configured():
        messages.error(request, "No LLM endpoint is configured (set OPENAI_BASE_URL), so no draft was asked for.")
    elif selectors.rubric_draft_state(task=task)["pending"]:
        messages.info(request, f"A draft of task {task.index}'s rubric is already on its way.")
    else:
        with transaction.atomic():
            log_action(actor=request.user, verb=selectors.RUBRIC_DRAFT_REQUEST_VERB, target=task,
                       after={"task": task.index})
            candidates.rubric_draft_queue(task_id=task.pk)  # sent to the "llm" queue when this commits
        messages.success(request, f"The LLM is drafting a rubric for task {task.index}.")
    return redirect("task-detail", index=task.index)


@require_GET
@any_role_required
def task_draft_status(request, index: int):
    """The draft's state (htmx polling): 286 once it is no longer pending; a full reload once the rubric exists."""
    task = BenchmarkTask.objects.filter(index=index).first()
    if task is None:
        raise Http404(f"No task {index}.")
    draft = selectors.rubric_draft_state(task=task)
    context = {"task": task, "draft": draft, "can_draft": has_role(request.user, ADMIN, RESEARCHER),
               "llm_configured": _llm_configured()}
    response = render(request, "rubrics/task_detail.html#draft-status", context)
    if request.htmx and not draft["pending"]:
        response.status_code = HttpResponseStopPolling.status_code
        if draft["drafted"]:
            response["HX-Refresh"] = "true"  # show the new rubric with its criteria
    return response
