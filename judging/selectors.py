"""Reads for the judging pages: leaderboard rows, a model's per-task scores, a task across models, one judgement.

Every number is computed by :mod:`rubrics.scoring` (``score_task`` per task, ``summarise_model`` per model), the one
scoring code of the site; this module only gathers Judgement rows and rubric criteria into its inputs, with a fixed
number of queries whatever the number of models, tasks or judgements (the tests check two sizes).

Which run counts for a model: its latest :class:`~judging.models.JudgeRun` (by creation time, then id) with the
requested ``rubric_label`` (default "released") and, when given, the requested judge model. A run's judgements are
taken as stored: pending ones count as missing; scored and flagged ones are walked the published way (so a flagged
answer with a malformed list contributes exactly what the published calculation gives it, and its task is listed in
``malformed_tasks``; a flagged answer without a list leaves its task out).

Coverage is the number of benchmark tasks whose three dimensions are all *scored* (status "scored") in the model's run,
over the number of benchmark tasks. ``flagged_tasks`` counts the tasks with at least one flagged judgement.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import default_storage
from django.db.models import Count, Q

from annotation.models import Assignment, ReviewItem, Workflow
from judging.models import GeneratedVideo, JudgeRun, Judgement, ModelUnderTest
from rubrics import scoring
from rubrics.models import BenchmarkTask, Criterion, Level

DIMENSIONS = scoring.DIMENSIONS
LEVELS = scoring.LEVELS
LEVEL_LABELS = dict(Level.choices)

# Sort keys of the leaderboard (?sort=KEY or ?sort=-KEY).
SORT_KEYS = ("model", "judge_model", "valid_tasks", "average", "Organ-level", "Cellular-level", "Subcellular-level",
             "scientific", "visual", "instruction", "coverage", "flagged_tasks", "malformed")
DEFAULT_SORT = "-average"


# ------------------------------------------------------------------------------------------------ building blocks


def runs_for_leaderboard(*, rubric_label: str = "released", judge_model: str = "") -> dict[int, JudgeRun]:
    """The counted run of each model: {model id: JudgeRun} (one query)."""
    runs = JudgeRun.objects.filter(rubric_label=rubric_label).select_related("model")
    if judge_model:
        runs = runs.filter(judge_model=judge_model)
    chosen: dict[int, JudgeRun] = {}
    for run in runs.order_by("created_at", "id"):  # later runs overwrite earlier ones
        chosen[run.model_id] = run
    return chosen


def _criteria(version_ids) -> dict[tuple[int, str], list[scoring.Criterion]]:
    """Scoring criteria per (rubric version id, dimension), in position order (one query)."""
    grouped: dict[tuple[int, str], list[scoring.Criterion]] = defaultdict(list)
    rows = (Criterion.objects.filter(version_id__in=set(version_ids))
            .order_by("version_id", "dimension", "position")
            .values_list("version_id", "dimension", "polarity", "weight", "key_number"))
    for version_id, dimension, polarity, weight, key_number in rows:
        grouped[(version_id, dimension)].append(scoring.Criterion(polarity=polarity, weight=weight,
                                                                  key_number=key_number))
    return grouped


@dataclass
class TaskScores:
    """One task in one run: the scoring result plus what the pages show beside it."""

    index: int
    level: str
    result: scoring.TaskResult | None
    statuses: dict[str, str] = field(default_factory=dict)  # dimension -> pending / scored / flagged
    flag_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def covered(self) -> bool:
        return all(self.statuses.get(d) == Judgement.Status.SCORED for d in DIMENSIONS)

    @property
    def flagged(self) -> bool:
        return any(s == Judgement.Status.FLAGGED for s in self.statuses.values())


def run_task_scores(run_ids, *, task_ids=None) -> dict[int, dict[int, TaskScores]]:
    """{run id: {task index: TaskScores}} for the given runs (two queries), optionally for some tasks only."""
    rows = Judgement.objects.filter(run_id__in=list(run_ids))
    if task_ids is not None:
        rows = rows.filter(task_id__in=list(task_ids))
    rows = list(rows.order_by().values_list("run_id", "task__index", "task__level", "dimension", "rubric_version_id",
                                            "status", "scores", "flag_reason"))
    criteria = _criteria(row[4] for row in rows)
    grouped: dict[tuple[int, int], list] = defaultdict(list)
    levels: dict[int, str] = {}
    for row in rows:
        grouped[(row[0], row[1])].append(row)
        levels[row[1]] = row[2]
    result: dict[int, dict[int, TaskScores]] = {run_id: {} for run_id in run_ids}
    for (run_id, index), judgements in grouped.items():
        rubric, judgement, statuses, reasons = {}, {}, {}, {}
        for _, _, _, dimension, version_id, status, scores, flag_reason in judgements:
            rubric[dimension] = criteria.get((version_id, dimension), [])
            statuses[dimension] = status
            if flag_reason:
                reasons[dimension] = flag_reason
            if status != Judgement.Status.PENDING:
                judgement[dimension] = scores
        task_result = scoring.score_task(index=index, level=levels[index], rubric=rubric, judgement=judgement)
        result[run_id][index] = TaskScores(index=index, level=levels[index], result=task_result, statuses=statuses,
                                           flag_reasons=reasons)
    return result


def summary_dict(summary: scoring.ModelSummary) -> dict:
    """A ModelSummary in the documented ``benchmark_report`` shape."""
    return {"valid_tasks": summary.valid_tasks, "average": summary.average, "levels": dict(summary.levels),
            "dimensions": dict(summary.dimensions), "malformed_tasks": list(summary.malformed_tasks)}


# --------------------------------------------------------------------------------------------------- leaderboard


@dataclass
class Leaderboard:
    rows: list[dict]
    total_tasks: int
    rubric_label: str
    judge_model: str
    sort: str
    judge_models: list[str]


def _sort_value(row: dict, key: str):
    if key in LEVELS:
        return row["levels"].get(key)
    if key in DIMENSIONS:
        return row["dimensions"].get(key)
    if key == "malformed":
        return len(row["malformed_tasks"])
    return row.get(key)


def sort_rows(rows: list[dict], sort: str) -> tuple[list[dict], str]:
    """Rows sorted by ``sort`` (a SORT_KEYS key, "-" prefix for descending); None values always last; ties by
    model name. An unknown key falls back to DEFAULT_SORT; returns the rows and the sort actually used."""
    key = sort.lstrip("-")
    if key not in SORT_KEYS:
        sort, key = DEFAULT_SORT, DEFAULT_SORT.lstrip("-")
    descending = sort.startswith("-")
    by_name = sorted(rows, key=lambda r: r["model"].lower())
    present = [r for r in by_name if _sort_value(r, key) is not None]
    absent = [r for r in by_name if _sort_value(r, key) is None]

    def value(row):
        v = _sort_value(row, key)
        return v.lower() if isinstance(v, str) else v

    present.sort(key=value, reverse=descending)  # stable: equal values stay in name order
    return present + absent, sort


def leaderboard(*, rubric_label: str = "released", judge_model: str = "", sort: str = DEFAULT_SORT) -> Leaderboard:
    """One row per model with a counted run. Constant queries: runs, judgements, criteria, task count, judge models.

    Row keys: ``model_id``, ``model``, ``run_id``, ``judge_model``, ``valid_tasks``, ``average``, ``levels``,
    ``dimensions``, ``malformed_tasks`` (the benchmark_report shape), plus ``covered``, ``total_tasks``,
    ``coverage`` (0-1), ``flagged_tasks`` (count) and ``flagged`` (indices)."""
    runs = runs_for_leaderboard(rubric_label=rubric_label, judge_model=judge_model)
    scores = run_task_scores([run.pk for run in runs.values()])
    total = BenchmarkTask.objects.count()
    rows = []
    for model_id, run in runs.items():
        tasks = scores[run.pk]
        summary = scoring.summarise_model(t.result for t in sorted(tasks.values(), key=lambda t: t.index))
        covered = sum(1 for t in tasks.values() if t.covered)
        flagged = sorted(t.index for t in tasks.values() if t.flagged)
        rows.append({"model_id": model_id, "model": run.model.name, "run_id": run.pk, "judge_model": run.judge_model,
                     **summary_dict(summary), "covered": covered, "total_tasks": total,
                     "coverage": covered / total if total else None, "flagged_tasks": len(flagged),
                     "flagged": flagged})
    rows, sort = sort_rows(rows, sort)
    judge_models = sorted(set(JudgeRun.objects.filter(rubric_label=rubric_label)
                              .values_list("judge_model", flat=True).distinct()))
    return Leaderboard(rows=rows, total_tasks=total, rubric_label=rubric_label, judge_model=judge_model, sort=sort,
                       judge_models=judge_models)


def leaderboard_report(board: Leaderboard) -> dict:
    """The JSON export: ``{"models": {name: {benchmark_report keys + coverage keys}}, ...}``."""
    keys = ("valid_tasks", "average", "levels", "dimensions", "malformed_tasks", "covered", "total_tasks",
            "coverage", "flagged_tasks", "flagged", "judge_model", "run_id")
    return {"rubric_label": board.rubric_label, "judge_model": board.judge_model or None,
            "total_tasks": board.total_tasks, "sort": board.sort,
            "models": {row["model"]: {k: row[k] for k in keys} for row in board.rows}}


# ---------------------------------------------------------------------------------------------------- model page


def model_run(*, model: ModelUnderTest, run_id: int | None = None, rubric_label: str = "released") -> JudgeRun | None:
    runs = JudgeRun.objects.filter(model=model)
    if run_id is not None:
        return runs.filter(pk=run_id).first()
    return runs.filter(rubric_label=rubric_label).order_by("-created_at", "-id").first()


def model_task_rows(*, model: ModelUnderTest, run: JudgeRun | None, level: str = "") -> list[dict]:
    """Every benchmark task (of a level, if given) with this run's scores and the model's video status.
    Three or four queries whatever the number of tasks."""
    tasks = BenchmarkTask.objects.order_by("index")
    if level:
        tasks = tasks.filter(level=level)
    tasks = list(tasks.values_list("id", "index", "level", "prompt"))
    scores = run_task_scores([run.pk], task_ids=[t[0] for t in tasks])[run.pk] if run else {}
    videos = dict(GeneratedVideo.objects.filter(model=model, task_id__in=[t[0] for t in tasks])
                  .values_list("task_id", "status"))
    rows = []
    for task_id, index, task_level, prompt in tasks:
        task_scores = scores.get(index)
        result = task_scores.result if task_scores else None
        rows.append({"index": index, "level": task_level, "prompt": prompt, "video_status": videos.get(task_id),
                     "overall": result.overall if result else None,
                     "dimensions": result.dimensions if result else {d: None for d in DIMENSIONS},
                     "statuses": task_scores.statuses if task_scores else {},
                     "malformed": list(result.malformed) if result else [],
                     "included": bool(result and result.included), "judged": task_scores is not None})
    return rows


def model_runs(model: ModelUnderTest) -> list[JudgeRun]:
    return list(JudgeRun.objects.filter(model=model).order_by("-created_at", "-id"))


# ----------------------------------------------------------------------------------------------------- task page


def task_across_models(*, task: BenchmarkTask, rubric_label: str = "released", judge_model: str = "") -> list[dict]:
    """The task's scores in each model's counted run, with the video status. Constant queries."""
    runs = runs_for_leaderboard(rubric_label=rubric_label, judge_model=judge_model)
    scores = run_task_scores([r.pk for r in runs.values()], task_ids=[task.pk])
    videos = dict(GeneratedVideo.objects.filter(task=task).values_list("model_id", "status"))
    rows = []
    for model_id, run in sorted(runs.items(), key=lambda kv: kv[1].model.name.lower()):
        task_scores = scores[run.pk].get(task.index)
        result = task_scores.result if task_scores else None
        rows.append({"model_id": model_id, "model": run.model.name, "run_id": run.pk,
                     "judge_model": run.judge_model, "video_status": videos.get(model_id),
                     "overall": result.overall if result else None,
                     "dimensions": result.dimensions if result else {d: None for d in DIMENSIONS},
                     "statuses": task_scores.statuses if task_scores else {},
                     "malformed": list(result.malformed) if result else [], "judged": task_scores is not None})
    return rows


# ------------------------------------------------------------------------------------------------ judgement page


def judgement_detail(*, run: JudgeRun, task: BenchmarkTask) -> dict:
    """The three dimensions of one task in one run: criteria with the judge's 0/1 (entry ``i`` -> key number
    ``i + 1``, the published walk), problems, dimension score, reasoning, raw response, flag and LLM call; the
    frames the judge saw. Constant queries."""
    judgements = {j.dimension: j for j in Judgement.objects.filter(run=run, task=task).select_related("llm_call")}
    version_ids = {j.rubric_version_id for j in judgements.values()}
    criteria = defaultdict(list)
    for criterion in Criterion.objects.filter(version_id__in=version_ids).order_by("dimension", "position"):
        criteria[(criterion.version_id, criterion.dimension)].append(criterion)
    video = None
    video_ids = {j.video_id for j in judgements.values() if j.video_id}
    if video_ids:
        video = GeneratedVideo.objects.filter(pk__in=video_ids).first()
    if video is None:
        video = GeneratedVideo.objects.filter(model_id=run.model_id, task=task).first()
    dimensions = []
    rubric, answers = {}, {}
    for dimension in DIMENSIONS:
        judgement = judgements.get(dimension)
        if judgement is None:
            dimensions.append({"dimension": dimension, "label": dict(scoring_dimension_labels())[dimension],
                               "judgement": None, "criteria": [], "extra": [], "problems": [], "score": None})
            continue
        own = criteria[(judgement.rubric_version_id, dimension)]
        scores = judgement.scores if judgement.status != Judgement.Status.PENDING else None
        walk = [scoring.Criterion(polarity=c.polarity, weight=c.weight, key_number=c.key_number) for c in own]
        rubric[dimension], answers[dimension] = walk, scores
        entries = scores if isinstance(scores, list) else []
        rows = []
        for criterion in own:
            i = criterion.key_number - 1
            rows.append({"criterion": criterion, "entry": entries[i] if 0 <= i < len(entries) else None,
                         "reached": 0 <= i < len(entries)})
        numbers = {c.key_number for c in own}
        extra = [{"position": i + 1, "entry": e} for i, e in enumerate(entries) if (i + 1) not in numbers]
        result = scoring.score_dimension(walk, scores)
        dimensions.append({"dimension": dimension, "label": dict(scoring_dimension_labels())[dimension],
                           "judgement": judgement, "criteria": rows, "extra": extra,
                           "problems": list(result.problems), "score": result.score})
    overall = None
    if judgements:
        overall = scoring.score_task(index=task.index, level=task.level, rubric=rubric, judgement=answers).overall
    frames = [default_storage.url(name) for name in (video.frames if video else []) if name]
    return {"run": run, "task": task, "video": video, "frames": frames, "dimensions": dimensions, "overall": overall}


def scoring_dimension_labels():
    from rubrics.models import Dimension

    return Dimension.choices


# ------------------------------------------------------------------------------------------- human evaluation


def human_eval_status() -> dict:
    """What has been sent to the experts: per workflow (scores, pairwise) the items and their assignments by status,
    and per model its readable videos and how many of them are sampled for scoring. Four queries."""
    workflows = (Workflow.HUMAN_EVAL.value, Workflow.PAIRWISE.value)
    status = {w: {"items": 0, "assigned": 0, "done": 0, "passed": 0} for w in workflows}
    for row in ReviewItem.objects.filter(workflow__in=workflows).values("workflow").annotate(n=Count("id")):
        status[row["workflow"]]["items"] = row["n"]
    for row in (Assignment.objects.filter(workflow__in=workflows).values("workflow", "status")
                .annotate(n=Count("id")).order_by()):
        status[row["workflow"]][row["status"]] = row["n"]
    sampled = ReviewItem.objects.filter(workflow=Workflow.HUMAN_EVAL,
                                        content_type=ContentType.objects.get_for_model(GeneratedVideo))
    models = list(ModelUnderTest.objects.order_by("name").annotate(
        readable=Count("videos", filter=Q(videos__status=GeneratedVideo.Status.OK)),
        sampled=Count("videos", filter=Q(videos__pk__in=sampled.values("object_id")))))
    return {"scores": status[Workflow.HUMAN_EVAL.value], "pairwise": status[Workflow.PAIRWISE.value],
            "models": models}
