"""Reads of benchmark tasks and rubrics."""
from __future__ import annotations

from django.db import connection
from django.db.models import Count, F, Prefetch, Q, QuerySet

from rubrics.models import BenchmarkExport, BenchmarkTask, CandidateTask, Criterion, Level, RubricVersion

#: The action-log verb of a researcher's or admin's request for an LLM rubric draft (target: the task).
RUBRIC_DRAFT_REQUEST_VERB = "rubric_draft_request"


def task_list(*, level: str = "", query: str = "") -> QuerySet[BenchmarkTask]:
    """Tasks filtered by level and searched over prompt and requirement (PostgreSQL full-text search when available)."""
    tasks = BenchmarkTask.objects.all()
    if level:
        tasks = tasks.filter(level=level)
    query = query.strip()
    if query.isdigit():
        return tasks.filter(index=int(query))
    if query:
        if connection.vendor == "postgresql":
            from django.contrib.postgres.search import SearchQuery, SearchVector

            vector = SearchVector("prompt", "requirement", config="english")
            tasks = tasks.annotate(search=vector).filter(search=SearchQuery(query, config="english"))
        else:
            for term in query.split():
                tasks = tasks.filter(Q(prompt__icontains=term) | Q(requirement__icontains=term))
    return tasks.order_by("index")


def level_counts() -> dict[str, int]:
    counts = dict(BenchmarkTask.objects.values_list("level").annotate(n=Count("id")).order_by())
    return {value: counts.get(value, 0) for value, _ in Level.choices}


def task_detail(*, index: int) -> BenchmarkTask:
    return BenchmarkTask.objects.select_related("current_rubric").get(index=index)


def rubric_versions(*, task: BenchmarkTask) -> list[RubricVersion]:
    return list(
        task.rubric_versions.select_related("created_by", "parent")
        .annotate(criterion_count=Count("criteria"))
        .order_by("number")
    )


def version_with_criteria(*, task: BenchmarkTask, number: int | None = None) -> RubricVersion:
    versions = task.rubric_versions.prefetch_related(
        Prefetch("criteria", queryset=Criterion.objects.order_by("dimension", "position"))
    )
    if number is None:
        return versions.get(pk=task.current_rubric_id)
    return versions.get(number=number)


def criteria_by_dimension(version: RubricVersion) -> dict[str, list[Criterion]]:
    grouped: dict[str, list[Criterion]] = {"scientific": [], "visual": [], "instruction": []}
    for criterion in version.criteria.all():
        grouped[criterion.dimension].append(criterion)
    return grouped


def criterion_counts_by_label() -> dict[str, int]:
    return dict(Criterion.objects.values_list("version__label").annotate(n=Count("id")).order_by())


def release_rows(*, label: str) -> list[dict]:
    """Every task with the criteria of its version called `label` ("current" = each task's current version)."""
    versions = RubricVersion.objects.select_related("task")
    if label == "current":
        versions = versions.filter(task__current_rubric=F("pk"))
    else:
        versions = versions.filter(label=label)
    criteria = Criterion.objects.filter(version__in=versions).values(
        "version_id", "dimension", "key_number", "description", "polarity", "weight", "position"
    )
    by_version: dict[int, list[dict]] = {}
    for row in criteria.order_by("version_id", "dimension", "position"):
        by_version.setdefault(row["version_id"], []).append(row)
    rows = []
    for version in versions.order_by("task__index"):
        task = version.task
        rows.append({"index": task.index, "prompt": task.prompt, "requirement": task.requirement,
                     "criteria": by_version.get(version.pk, [])})
    return rows


def export_list(*, limit: int = 10) -> QuerySet[BenchmarkExport]:
    return BenchmarkExport.objects.select_related("requested_by")[:limit]


# ------------------------------------------------------------------------------------------- candidate tasks


def candidate_status_counts() -> dict[str, int]:
    """Candidates per status, every status present (in the order of ``CandidateTask.Status``)."""
    counts = dict(CandidateTask.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {value: counts.get(value, 0) for value in CandidateTask.Status.values}


def candidate_list(*, status: str = "") -> QuerySet[CandidateTask]:
    """Candidates (newest first), optionally of one status, with their task (accepted ones) in the same query."""
    candidates = CandidateTask.objects.select_related("task").defer("task__source_metadata")
    if status:
        candidates = candidates.filter(status=status)
    return candidates.order_by("-id")


def candidate_ids(*, status: str) -> list[int]:
    return list(CandidateTask.objects.filter(status=status).order_by("id").values_list("id", flat=True))


def rubric_draft_state(*, task: BenchmarkTask) -> dict:
    """Where the LLM draft of a task's first rubric stands.

    ``drafted``: the task has a current rubric; ``requested``: the latest draft request (an ActionLog row, or None);
    ``error``: the reason of the draft's LLM call that failed after that request ("" if none); ``pending``: requested,
    not drafted and not failed. The draft's LLM call is found by its request hash (the same model and messages that
    ``rubrics.candidates.candidate_draft_rubric`` sends)."""
    from annotation.models import ActionLog
    from microverse_site import llm
    from microverse_site.models import LLMCall
    from rubrics import llm_prompts

    state = {"drafted": task.current_rubric_id is not None, "requested": None, "error": "", "pending": False}
    if state["drafted"]:
        return state
    request = (ActionLog.objects.filter(verb=RUBRIC_DRAFT_REQUEST_VERB, target_type=BenchmarkTask._meta.model_name,
                                        target_id=str(task.pk))
               .select_related("actor").order_by("-created_at", "-id").first())
    state["requested"] = request
    if request is None:
        return state
    messages = llm_prompts.rubric_draft_messages(prompt=task.prompt, requirement=task.requirement, level=task.level)
    request_hash = llm.request_hash(llm.LLMSettings.from_settings().model_for("rubric_draft"), messages, {})
    failed = (LLMCall.objects.filter(purpose="rubric_draft", request_hash=request_hash,
                                     created_at__gte=request.created_at)
              .exclude(status="ok").order_by("-created_at", "-id").values_list("error", "status").first())
    if failed is not None:
        state["error"] = failed[0] or f"the LLM's answer was {failed[1]}"
    state["pending"] = failed is None
    return state
