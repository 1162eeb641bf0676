"""The benchmark report: each model's leaderboard row, computed exactly as published (selectors).

Scores come from each model's latest run on the rubric label asked for (a judge run or an imported results file,
whichever is newer) and go through :mod:`rubrics.scoring` unchanged: for every task the run holds, each dimension's
stored score list (as the judge gave it; None for a dimension that is pending, not judged, or whose answer was flagged
as unusable) is walked against the criteria of the rubric version the judge saw, key number by key number. Nothing
is rounded here except in the Markdown tables (one decimal, as the paper prints them).
"""
from __future__ import annotations

from rubrics import scoring
from rubrics.models import Criterion

from judging.models import JudgeRun, Judgement

DIMENSIONS = scoring.DIMENSIONS
LEVELS = scoring.LEVELS
ACTIVE = ("pending", "running")


def latest_runs(*, rubric_label: str = "released") -> dict[str, JudgeRun]:
    """Model name -> its latest run on `rubric_label` (cancelled runs too: they show what was judged)."""
    latest: dict[str, JudgeRun] = {}
    for run in JudgeRun.objects.filter(rubric_label=rubric_label).select_related("model").order_by("created_at", "id"):
        latest[run.model.name] = run
    return dict(sorted(latest.items()))


def _rubrics(version_ids) -> dict[int, dict[str, list[scoring.Criterion]]]:
    rubrics: dict[int, dict[str, list[scoring.Criterion]]] = {}
    rows = (Criterion.objects.filter(version_id__in=set(version_ids)).order_by("version_id", "dimension", "position")
            .values_list("version_id", "dimension", "polarity", "weight", "key_number"))
    for version_id, dim, polarity, weight, key_number in rows:
        rubrics.setdefault(version_id, {}).setdefault(dim, []).append(
            scoring.Criterion(polarity=polarity, weight=weight, key_number=key_number))
    return rubrics


def run_task_results(run: JudgeRun) -> list[scoring.TaskResult]:
    """One :class:`rubrics.scoring.TaskResult` per task of the run, in task index order."""
    rows = list(Judgement.objects.filter(run=run).order_by("task__index", "dimension")
                .values_list("task__index", "task__level", "dimension", "status", "scores", "rubric_version_id"))
    rubrics = _rubrics(row[5] for row in rows)
    tasks: dict[int, dict] = {}
    for index, level, dim, status, scores, version_id in rows:
        task = tasks.setdefault(index, {"level": level, "version": version_id, "judgement": {}})
        task["judgement"][dim] = None if status in ACTIVE else scores
    return [scoring.score_task(index=index, level=task["level"], rubric=rubrics.get(task["version"], {}),
                               judgement=task["judgement"])
            for index, task in sorted(tasks.items())]


def model_row(run: JudgeRun) -> dict:
    summary = scoring.summarise_model(run_task_results(run))
    return {"valid_tasks": summary.valid_tasks, "average": summary.average, "levels": summary.levels,
            "dimensions": summary.dimensions, "malformed_tasks": summary.malformed_tasks}


def benchmark_report(*, rubric_label: str = "released") -> dict:
    """``{"models": {NAME: {"valid_tasks", "average", "levels": {level: x}, "dimensions": {dim: x},
    "malformed_tasks": [index, ...]}}}``; an average over no task is None (null in JSON)."""
    return {"models": {name: model_row(run) for name, run in latest_runs(rubric_label=rubric_label).items()}}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ranked(report: dict) -> list[tuple[str, dict]]:
    rows = list(report["models"].items())
    return sorted(rows, key=lambda item: (item[1]["average"] is None, -(item[1]["average"] or 0.0), item[0]))


def report_markdown(report: dict) -> str:
    """Table 1 (Model | Average | Organ | Cellular | Subcellular) and Table 2 (Model | Scientific | Visual |
    Instruction), best average first, one decimal."""
    lines = ["## Table 1: overall and per level", "",
             "| Model | Average | Organ | Cellular | Subcellular |", "| --- | --- | --- | --- | --- |"]
    for name, row in _ranked(report):
        levels = row["levels"]
        lines.append(f"| {name} | {_cell(row['average'])} | {_cell(levels.get('Organ-level'))} | "
                     f"{_cell(levels.get('Cellular-level'))} | {_cell(levels.get('Subcellular-level'))} |")
    lines += ["", "## Table 2: per dimension", "",
              "| Model | Scientific | Visual | Instruction |", "| --- | --- | --- | --- |"]
    for name, row in _ranked(report):
        dims = row["dimensions"]
        lines.append(f"| {name} | {_cell(dims.get('scientific'))} | {_cell(dims.get('visual'))} | "
                     f"{_cell(dims.get('instruction'))} |")
    return "\n".join(lines) + "\n"
