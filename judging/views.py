"""Judging pages. Thin: parse, authorise, call selectors / services, render.

Who sees what:
* results (leaderboard and its exports, a model's page, a task across models, a judgement, consistency) show model
  names: researchers and admins only; an expert (without either role) gets 403;
* the human-evaluation pages (scoring queue, pairwise queue, the video media view) are blind: experts only, and only
  their own assignments. Researchers and admins get 403 there: they read the results on the consistency page, and a
  non-expert view of the queue would show nothing of use (queues are per expert). Nothing on these pages names a
  model: videos are served by an opaque signed token, never by their storage name.
"""
from __future__ import annotations

import csv
import io
import re

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from judging import consistency, human, report, selectors
from judging.forms import HumanEvalSampleForm
from judging.models import GeneratedVideo, JudgeRun, ModelUnderTest, PairwiseComparison
from microverse_site.roles import ADMIN, EXPERT, RESEARCHER, role_required
from rubrics.models import BenchmarkTask, Dimension, Level

results_required = role_required(RESEARCHER, ADMIN)
LEVEL_LABELS = dict(Level.choices)
DIMENSION_LABELS = dict(Dimension.choices)
COLUMNS = [  # (sort key, header, getter)
    ("average", "Average", lambda r: r["average"]),
    *[(level, LEVEL_LABELS[level], (lambda lv: lambda r: r["levels"].get(lv))(level)) for level in selectors.LEVELS],
]
DIM_COLUMNS = [(d, DIMENSION_LABELS[d], (lambda dim: lambda r: r["dimensions"].get(dim))(d))
               for d in selectors.DIMENSIONS]


def _request_id(request) -> str:
    return getattr(request, "request_id", "")


# ------------------------------------------------------------------------------------------ human-eval sampling


@role_required(ADMIN)
def human_sample(request):
    """Admins send generated videos to the experts: a seeded sample of videos to score criterion by criterion, or of
    blind pairwise comparisons, each given to the least-loaded experts. Shows what is out there already."""
    form = HumanEvalSampleForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        models = list(data["models"]) or None
        try:
            if data["kind"] == "pairwise":
                made = human.pairwise_sample(n=data["n"], seed=data["seed"], models=models,
                                             experts_per_item=data["experts_per_item"], assigned_by=request.user)
                messages.success(request, f"{len(made)} pairwise comparison(s) sampled (seed {data['seed']}).")
            else:
                made = human.human_eval_sample(n=data["n"], seed=data["seed"], models=models,
                                               experts_per_item=data["experts_per_item"], assigned_by=request.user)
                messages.success(request, f"{len(made)} video(s) sampled for scoring (seed {data['seed']}).")
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("judging-human-sample")
    return render(request, "judging/human_sample.html",
                  {"form": form, "status": selectors.human_eval_status()}, status=400 if form.errors else 200)


# ---------------------------------------------------------------------------------------------------- leaderboard


def _board(request) -> selectors.Leaderboard:
    return selectors.leaderboard(rubric_label=request.GET.get("rubric", "released") or "released",
                                 judge_model=request.GET.get("judge", ""),
                                 sort=request.GET.get("sort", selectors.DEFAULT_SORT))


def _sort_links(request, board: selectors.Leaderboard) -> dict[str, dict]:
    """For each sortable column: the URL that sorts by it (descending first; again flips) and its aria-sort."""
    links = {}
    current = board.sort.lstrip("-")
    descending = board.sort.startswith("-")
    for key in selectors.SORT_KEYS:
        if key == current:
            target = key if descending else f"-{key}"
            state = "descending" if descending else "ascending"
        else:
            target = key if key in ("model", "judge_model") else f"-{key}"
            state = "none"
        params = {k: v for k, v in request.GET.items() if k != "sort"}
        params["sort"] = target
        links[key] = {"url": "?" + urlencode(params), "state": state}
    return links


@results_required
def leaderboard(request):
    board = _board(request)
    links = _sort_links(request, board)

    def header(key, label, numeric=True):
        return {"key": key, "label": label, "numeric": numeric, **links[key]}

    common = [header("model", "Model", False), header("judge_model", "Judge", False)]
    table1_headers = [*common, header("average", "Average"),
                      *(header(lv, LEVEL_LABELS[lv]) for lv in selectors.LEVELS),
                      header("valid_tasks", "Valid tasks"), header("coverage", "Coverage"),
                      header("flagged_tasks", "Flagged tasks"), header("malformed", "Malformed tasks")]
    table2_headers = [*common, *(header(d, DIMENSION_LABELS[d]) for d in selectors.DIMENSIONS)]
    rows = []
    for row in board.rows:
        rows.append({**row, "table1": [row["average"], *(row["levels"].get(lv) for lv in selectors.LEVELS)],
                     "table2": [row["dimensions"].get(d) for d in selectors.DIMENSIONS]})
    chart = {
        "labels": [r["model"] for r in board.rows],
        "datasets": [{"label": header, "data": [getter(r) for r in board.rows]}
                     for _, header, getter in COLUMNS + DIM_COLUMNS],
    }
    query = {k: v for k, v in request.GET.items() if k in ("rubric", "judge", "sort")}
    exports = {fmt: reverse("judging-leaderboard-export", args=[fmt]) + ("?" + urlencode(query) if query else "")
               for fmt in ("csv", "md", "json")}
    return render(request, "judging/leaderboard.html", {
        "board": board, "rows": rows, "chart": chart, "exports": exports, "table1_headers": table1_headers,
        "table2_headers": table2_headers,
    })


def leaderboard_markdown(board: selectors.Leaderboard) -> str:
    """Table 1 (average and per level) and Table 2 (per dimension) as ``manage.py benchmark_report --markdown``
    prints them (judging.report.report_markdown, one decimal), then coverage and flagged tasks per model."""
    report_like = {"models": {r["model"]: {k: r[k] for k in ("average", "levels", "dimensions")} for r in board.rows}}
    title = f"# Leaderboard (rubric: {board.rubric_label}" + (f", judge: {board.judge_model}" if board.judge_model
                                                              else "") + ")\n\n"
    lines = ["", "## Coverage", "", "| Model | Judge | Valid tasks | Covered | Flagged tasks | Malformed tasks |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in board.rows:
        lines.append(f"| {r['model']} | {r['judge_model']} | {r['valid_tasks']} | {r['covered']}/{r['total_tasks']} "
                     f"| {r['flagged_tasks']} | {len(r['malformed_tasks'])} |")
    return title + report.report_markdown(report_like) + "\n".join(lines) + "\n"


def leaderboard_csv(board: selectors.Leaderboard) -> str:
    """One row per model, full precision (empty cell: no score)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "judge_model", "run_id", "valid_tasks", "average", *selectors.LEVELS,
                     *selectors.DIMENSIONS, "covered", "total_tasks", "coverage", "flagged_tasks",
                     "malformed_tasks"])
    for r in board.rows:
        values = [r["average"], *(r["levels"].get(lv) for lv in selectors.LEVELS),
                  *(r["dimensions"].get(d) for d in selectors.DIMENSIONS)]
        writer.writerow([r["model"], r["judge_model"], r["run_id"], r["valid_tasks"],
                         *("" if v is None else repr(v) for v in values), r["covered"], r["total_tasks"],
                         "" if r["coverage"] is None else repr(r["coverage"]), r["flagged_tasks"],
                         " ".join(map(str, r["malformed_tasks"]))])
    return out.getvalue()


@results_required
def leaderboard_export(request, fmt: str):
    board = _board(request)
    if fmt == "json":
        return JsonResponse(selectors.leaderboard_report(board), json_dumps_params={"indent": 2})
    if fmt == "csv":
        response = HttpResponse(leaderboard_csv(board), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="leaderboard.csv"'
        return response
    if fmt == "md":
        response = HttpResponse(leaderboard_markdown(board), content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="leaderboard.md"'
        return response
    raise Http404("Export as csv, md or json.")


# ------------------------------------------------------------------------------------------- model, task, judgement


@results_required
def model_detail(request, model_id: int):
    model = get_object_or_404(ModelUnderTest, pk=model_id)
    run_id = request.GET.get("run", "")
    run = selectors.model_run(model=model, run_id=int(run_id) if run_id.isdigit() else None,
                              rubric_label=request.GET.get("rubric", "released") or "released")
    level = request.GET.get("level", "")
    if level not in LEVEL_LABELS:
        level = ""
    rows = selectors.model_task_rows(model=model, run=run, level=level)
    return render(request, "judging/model_detail.html", {
        "model": model, "run": run, "runs": selectors.model_runs(model), "rows": rows, "level": level,
        "levels": list(Level.choices), "dimensions": list(Dimension.choices),
        "summary": sum(1 for r in rows if r["included"]),
    })


@results_required
def task_detail(request, index: int):
    task = get_object_or_404(BenchmarkTask, index=index)
    rows = selectors.task_across_models(task=task, rubric_label=request.GET.get("rubric", "released") or "released",
                                        judge_model=request.GET.get("judge", ""))
    return render(request, "judging/task_detail.html", {"task": task, "rows": rows,
                                                        "dimensions": list(Dimension.choices)})


@results_required
def judgement_detail(request, run_id: int, index: int):
    run = get_object_or_404(JudgeRun.objects.select_related("model"), pk=run_id)
    task = get_object_or_404(BenchmarkTask, index=index)
    context = selectors.judgement_detail(run=run, task=task)
    return render(request, "judging/judgement_detail.html", context)


# ----------------------------------------------------------------------------------------------------- consistency


@results_required
def consistency_page(request):
    report = consistency.consistency_from_db(rubric_label=request.GET.get("rubric", "released") or "released")
    dims = list(Dimension.choices)
    kinds = ("judge_vs_expert", "expert_vs_expert", "judge_vs_judge")
    chart = {
        "labels": [label for _, label in dims],
        "percent": [{"label": name.replace("_", " "), "data": [report["dimensions"][d][name]["percent"]
                                                               for d, _ in dims]}
                    for name in kinds],
        "kappa": [{"label": name.replace("_", " "), "data": [report["dimensions"][d][name]["kappa"] for d, _ in dims]}
                  for name in kinds],
    }
    rows = [{"dimension": d, "label": label, "cells": [report["dimensions"][d][k] for k in kinds]} for d, label in dims]
    judges = [{"judge": judge, "cells": [per_dim.get(d) for d, _ in dims]}
              for judge, per_dim in report["judges"].items()]
    pairwise = [{"level": level, "label": LEVEL_LABELS.get(level, "All levels"),
                 "rows": [{**r, "cells": [r["first_wins"], r["second_wins"], r["ties"]]} for r in level_rows]}
                for level, level_rows in report["pairwise"].items()]
    return render(request, "judging/consistency.html", {
        "report": report, "rows": rows, "judges": judges, "dims": dims, "chart": chart, "pairwise": pairwise,
        "json_url": reverse("judging-consistency-json"),
    })


@results_required
def consistency_json(request):
    report = consistency.consistency_from_db(rubric_label=request.GET.get("rubric", "released") or "released")
    return JsonResponse(report, json_dumps_params={"indent": 2})


# ------------------------------------------------------------------------------------------- expert: human scoring


def _progress(queue) -> dict:
    statuses = [a.status for a in queue]
    return {"done": statuses.count("done"), "total": len(statuses)}


def _pick(request, queue, *, item_id: str = ""):
    if item_id:
        if not item_id.isdigit():
            raise Http404("No such item in your queue.")
        for assignment in queue:
            if assignment.item_id == int(item_id):
                return assignment
        raise Http404("No such item in your queue.")
    return next((a for a in queue if a.status == "assigned"), None)


def _neighbours(queue, assignment):
    if assignment is None:
        return (queue[-1].item_id if queue else None), None
    i = queue.index(assignment)
    return (queue[i - 1].item_id if i > 0 else None), (queue[i + 1].item_id if i + 1 < len(queue) else None)


def _queue_base(request, workflow: str, url_name: str, assignment, flash) -> tuple[dict, object]:
    """What a blind queue page shows whatever is judged: the expert's queue in order, where the assignment sits in
    it (previous / next), progress, the flash message. Returns the context and the assignment as queued."""
    queue = list(human.queue(expert=request.user, workflow=workflow))
    if assignment is not None:
        assignment = next((a for a in queue if a.pk == assignment.pk), assignment)
    previous, following = _neighbours(queue, assignment)
    return {"assignment": assignment, "progress": _progress(queue), "flash": flash, "previous_item": previous,
            "next_item": following, "queue_url": reverse(url_name)}, assignment


def _render_queue_page(request, template: str, context: dict):
    """The whole page, or its panel for an htmx swap (a history restore wants the whole page)."""
    partial = bool(request.htmx) and not request.htmx.history_restore_request
    return render(request, f"{template}#panel" if partial else template, context)


def _queued_assignment(request, workflow: str, item_id: int, refusal: str):
    """The expert's own assignment of `item_id` in `workflow` (not passed), or 403 with `refusal`."""
    assignment = next((a for a in human.queue(expert=request.user, workflow=workflow) if a.item_id == item_id), None)
    if assignment is None:
        raise PermissionDenied(refusal)
    return assignment


def _refused(request, url_name: str, item_id: int, render_panel, assignment, flash: dict):
    """A refused answer: the same item again with the reason (htmx), or a redirect to it with a message."""
    if not request.htmx:
        messages.error(request, flash["message"])
        return redirect(_queue_url(url_name, item_id))
    return render_panel(request, assignment, flash=flash)


def _saved(request, workflow: str, url_name: str, render_panel, message: str):
    """A saved answer: on to the next waiting item (htmx: its panel, with the address bar following)."""
    following = human.queue(expert=request.user, workflow=workflow).filter(status="assigned").first()
    url = _queue_url(url_name, following.item_id if following else None)
    if not request.htmx:
        messages.success(request, message)
        return redirect(url)
    response = render_panel(request, following, flash={"message": message})
    response["HX-Replace-Url"] = url
    return response


def _queue_url(name: str, item_id=None) -> str:
    url = reverse(name)
    return f"{url}?{urlencode({'item': item_id})}" if item_id else url


# ------------------------------------------------------------------------------------ expert: criterion scores


def _render_human(request, assignment, *, flash=None):
    context, assignment = _queue_base(request, human.HUMAN_EVAL, "judging-human", assignment, flash)
    if assignment is not None:
        expert = request.user
        video = GeneratedVideo.objects.select_related("task").get(pk=assignment.item.object_id)
        criteria = human.video_criteria(video)
        own = dict(video.human_scores.filter(expert=expert).values_list("criterion_id", "score"))
        submitted = (flash or {}).get("values") or {}
        groups = []
        for value, label in Dimension.choices:
            rows = [{"criterion": c, "value": submitted.get(c.pk, own.get(c.pk))} for c in criteria
                    if c.dimension == value]
            if rows:
                groups.append({"dimension": value, "label": label, "rows": rows})
        context.update(task=video.task, groups=groups, n_criteria=len(criteria), scored=bool(own),
                       video_url=reverse("judging-media", args=[human.media_token(expert=expert, video=video)]),
                       submit_url=reverse("judging-human-submit", args=[assignment.item_id]))
    return _render_queue_page(request, "judging/human_queue.html", context)


@role_required(EXPERT)
def human_queue(request):
    queue = list(human.queue(expert=request.user, workflow=human.HUMAN_EVAL))
    return _render_human(request, _pick(request, queue, item_id=request.GET.get("item", "")))


@require_POST
@role_required(EXPERT)
def human_submit(request, item_id: int):
    assignment = _queued_assignment(request, human.HUMAN_EVAL, item_id, "This video is not in your queue.")
    video = get_object_or_404(GeneratedVideo, pk=assignment.item.object_id)
    scores = {}
    for key, value in request.POST.items():
        match = re.fullmatch(r"c_(\d+)", key)
        if match:
            scores[int(match.group(1))] = value
    try:
        human.human_score_submit(expert=request.user, video=video, scores=scores, request_id=_request_id(request))
    except ValidationError as exc:
        values = {k: int(v) for k, v in scores.items() if v in ("0", "1")}
        return _refused(request, "judging-human", item_id, _render_human, assignment,
                        {"error": True, "message": " ".join(exc.messages), "values": values})
    return _saved(request, human.HUMAN_EVAL, "judging-human", _render_human, "Saved.")


# -------------------------------------------------------------------------------------------- expert: pairwise


def _render_pairwise(request, assignment, *, flash=None):
    context, assignment = _queue_base(request, human.PAIRWISE, "judging-pairwise", assignment, flash)
    if assignment is not None:
        expert = request.user
        comparison = (PairwiseComparison.objects.select_related("task", "video_a", "video_b")
                      .get(pk=assignment.item.object_id))
        left, right = human.shown_videos(expert=expert, comparison=comparison)
        own = comparison.preferences.filter(expert=expert).first()
        shown_choice = None
        if own is not None:
            if own.choice == "tie":
                shown_choice = "tie"
            else:
                shown_choice = "left" if (own.choice == "a") == own.a_shown_left else "right"
        context.update(task=comparison.task, shown_choice=shown_choice,
                       left_url=reverse("judging-media", args=[human.media_token(expert=expert, video=left)]),
                       right_url=reverse("judging-media", args=[human.media_token(expert=expert, video=right)]),
                       submit_url=reverse("judging-pairwise-submit", args=[assignment.item_id]))
    return _render_queue_page(request, "judging/pairwise.html", context)


@role_required(EXPERT)
def pairwise_queue(request):
    queue = list(human.queue(expert=request.user, workflow=human.PAIRWISE))
    return _render_pairwise(request, _pick(request, queue, item_id=request.GET.get("item", "")))


@require_POST
@role_required(EXPERT)
def pairwise_submit(request, item_id: int):
    assignment = _queued_assignment(request, human.PAIRWISE, item_id, "This comparison is not in your queue.")
    comparison = get_object_or_404(PairwiseComparison, pk=assignment.item.object_id)
    choice = request.POST.get("choice", "")
    try:
        human.pairwise_submit(expert=request.user, comparison=comparison, choice_left_right=choice,
                              request_id=_request_id(request))
    except ValidationError as exc:
        return _refused(request, "judging-pairwise", item_id, _render_pairwise, assignment,
                        {"error": True, "message": " ".join(exc.messages)})
    return _saved(request, human.PAIRWISE, "judging-pairwise", _render_pairwise, f"Saved: {choice}.")


# ------------------------------------------------------------------------------------------------ blind media


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024


def _stream(handle, start: int, length: int):
    try:
        handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


@role_required(EXPERT)
def media_video(request, token: str):
    """A video for an assigned expert, by opaque token; supports one byte range (seeking, looping). No file name
    in any header."""
    video = human.video_for_token(expert=request.user, token=token)
    if not video.file:
        raise Http404("This video has no file.")
    storage = video.file.storage
    name = video.file.name
    try:
        size = storage.size(name)
        handle = storage.open(name, "rb")
    except (FileNotFoundError, OSError):
        raise Http404("The video file is missing.") from None
    content_type = "video/webm" if name.lower().endswith(".webm") else "video/mp4"
    start, end, status = 0, size - 1, 200
    match = _RANGE.match(request.headers.get("Range", "").strip())
    if match and size:
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        elif last:
            start, end = max(0, size - int(last)), size - 1
        if start > end or start >= size:
            handle.close()
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        status = 206
    length = end - start + 1 if size else 0
    response = StreamingHttpResponse(_stream(handle, start, length), status=status, content_type=content_type)
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response

