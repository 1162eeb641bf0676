from django.conf import settings
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from microverse_site.roles import ADMIN, RESEARCHER, any_role_required, has_role, role_required
from rubrics import diff, revision, selectors, services
from rubrics.models import BenchmarkExport, BenchmarkTask, Level, RubricVersion

PAGE_SIZE = 25


@any_role_required
def task_list(request):
    level = request.GET.get("level", "")
    if level not in Level.values:
        level = ""
    query = request.GET.get("q", "")[:200]
    page = Paginator(selectors.task_list(level=level, query=query), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "level": level, "q": query, "levels": Level.choices}
    template = "rubrics/task_list.html#results" if request.htmx else "rubrics/task_list.html"
    return render(request, template, context)


@any_role_required
def task_detail(request, index: int):
    try:
        task = selectors.task_detail(index=index)
    except BenchmarkTask.DoesNotExist:
        raise Http404(f"No task {index}.") from None
    versions = selectors.rubric_versions(task=task)
    number = _int_or_none(request.GET.get("version"))
    compare = _int_or_none(request.GET.get("compare"))
    if number is None and task.current_rubric_id is None:
        # A task accepted in task voting has no rubric until one is drafted: show the task and the draft's state.
        context = {"task": task, "versions": versions, "version": None, "criteria": {},
                   "draft": selectors.rubric_draft_state(task=task), **_draft_permissions(request)}
        template = "rubrics/task_detail.html#rubric" if request.htmx else "rubrics/task_detail.html"
        return render(request, template, context)
    try:
        version = selectors.version_with_criteria(task=task, number=number)
        compared = selectors.version_with_criteria(task=task, number=compare) if compare else None
    except RubricVersion.DoesNotExist:
        raise Http404("No such rubric version.") from None
    changes = None
    if compared is not None:
        changes = diff.diff_criteria(_criterion_dicts(compared), _criterion_dicts(version))
    criteria = selectors.criteria_by_dimension(version)
    context = {
        "unreachable_dimensions": diff.dimensions_with_unreachable_keys(criteria),
        "task": task, "versions": versions, "version": version, "compared": compared, "changes": changes,
        "criteria": criteria,
        "version_changes": revision.version_changes(version) if version.parent_id else [],
    }
    template = "rubrics/task_detail.html#rubric" if request.htmx else "rubrics/task_detail.html"
    return render(request, template, context)


def _draft_permissions(request) -> dict:
    """Who may ask the LLM for a first rubric draft, and whether an endpoint is configured to ask."""
    return {"can_draft": has_role(request.user, ADMIN, RESEARCHER), "llm_configured": bool(settings.OPENAI_BASE_URL)}


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _criterion_dicts(version):
    return [
        {"dimension": c.dimension, "key_number": c.key_number, "description": c.description,
         "polarity": c.polarity, "weight": c.weight}
        for c in version.criteria.all()
    ]


@any_role_required
def benchmark_overview(request):
    counts = selectors.level_counts()
    context = {
        "counts": counts,
        "total": sum(counts.values()),
        "chart": {"labels": [label for _, label in Level.choices], "values": list(counts.values())},
        "criteria": selectors.criterion_counts_by_label(),
        "exports": selectors.export_list(),
    }
    return render(request, "rubrics/overview.html", context)


@require_POST
@role_required(ADMIN, RESEARCHER)
def export_create(request):
    style = request.POST.get("style", "")
    try:
        export = services.benchmark_export_request(style=style, user=request.user)
    except ValueError as exc:
        return HttpResponse(str(exc), status=400)
    if request.htmx:
        return render(request, "rubrics/overview.html#export-row", {"export": export})
    return redirect("benchmark-overview")


@role_required(ADMIN, RESEARCHER)
def export_status(request, pk: int):
    export = get_object_or_404(BenchmarkExport, pk=pk)
    response = render(request, "rubrics/overview.html#export-row", {"export": export})
    if export.is_final and request.htmx:
        response.status_code = HttpResponseStopPolling.status_code
    return response


@role_required(ADMIN, RESEARCHER)
def export_download(request, pk: int):
    export = get_object_or_404(BenchmarkExport, pk=pk, status=BenchmarkExport.Status.DONE)
    return FileResponse(export.file.open("rb"), as_attachment=True, filename=f"MWBenchRubrics-{export.style}.json",
                        content_type="application/json")
