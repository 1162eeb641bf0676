"""Admin pages: the append-only action log (filters, rubric-operation counts per expert, CSV export) and inter-rater
agreement per workflow. Read-only: there is no page that edits or deletes an action-log row."""
from __future__ import annotations

import csv
import datetime as dt
import json

import django_filters
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from annotation import agreement_cache, selectors
from annotation.models import ActionLog, Workflow
from microverse_site.roles import ADMIN, role_required

PAGE_SIZE = 50

# The rubric operations of the revision workflow as logged by the revision engineer, in the paper's order (Figure 8).
RUBRIC_OPERATIONS = (
    ("proposal_delete", "Delete"),
    ("proposal_modify", "Modify"),
    ("proposal_weight", "Adjust weight"),
    ("proposal_supplement", "Supplement"),
)
RUBRIC_OPERATION_COLOURS = ("#b5523b", "#3b7bb5", "#d9a33b", "#4f9a5c")

CSV_COLUMNS = ("id", "when", "who", "verb", "workflow", "item", "target_type", "target_id", "before", "after",
               "rationale", "request_id")


# --------------------------------------------------------------------------------------------------------- filters


def _start_of_day(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


# The distinct verbs by a skip scan of the verb index (one probe per verb), not DISTINCT over every row: a
# million-row log has a few dozen verbs. Standard SQL: PostgreSQL and SQLite both run it.
_DISTINCT_VERBS_SQL = f"""
WITH RECURSIVE verbs(verb) AS (
    SELECT MIN(verb) FROM {ActionLog._meta.db_table}
    UNION ALL
    SELECT (SELECT MIN(verb) FROM {ActionLog._meta.db_table} WHERE verb > verbs.verb) FROM verbs
    WHERE verbs.verb IS NOT NULL
)
SELECT verb FROM verbs WHERE verb IS NOT NULL"""


def _verb_choices():
    with connection.cursor() as cursor:
        cursor.execute(_DISTINCT_VERBS_SQL)
        return [(verb, verb) for (verb,) in cursor.fetchall()]


class ActionLogFilter(django_filters.FilterSet):
    """Who, workflow, verb and an inclusive date range (days in the site's time zone)."""

    expert = django_filters.ModelChoiceFilter(
        field_name="actor", label="Who", empty_label="anyone",
        queryset=get_user_model().objects.order_by("username"),
    )
    workflow = django_filters.ChoiceFilter(choices=Workflow.choices, empty_label="any workflow")
    verb = django_filters.ChoiceFilter(choices=_verb_choices, empty_label="any verb")
    since = django_filters.DateFilter(label="From (day)", method="filter_since")
    until = django_filters.DateFilter(label="Until (day, inclusive)", method="filter_until")

    class Meta:
        model = ActionLog
        fields = ["expert", "workflow", "verb", "since", "until"]

    def filter_since(self, queryset, name, value):
        return queryset.filter(created_at__gte=_start_of_day(value))

    def filter_until(self, queryset, name, value):
        return queryset.filter(created_at__lt=_start_of_day(value + dt.timedelta(days=1)))

    def queryset_without(self, *names: str):
        """The filtered rows ignoring the named filters (the form must be valid)."""
        queryset = self.queryset.all()
        for name, value in self.form.cleaned_data.items():
            if name not in names:
                queryset = self.filters[name].filter(queryset, value)
        return queryset


def filtered_log(params) -> ActionLogFilter:
    return ActionLogFilter(params, queryset=selectors.action_log())


# ------------------------------------------------------------------------------------------- rubric operation counts


def rubric_operation_counts(queryset) -> dict:
    """Per expert, how many of each rubric operation the rows hold (one grouped query).

    Returns ``{"experts": [...], "operations": [(verb, label), ...], "counts": {username: [n per operation]}}``,
    experts sorted by username."""
    verbs = [verb for verb, _ in RUBRIC_OPERATIONS]
    grouped = (queryset.filter(verb__in=verbs, actor__isnull=False).order_by()
               .values("actor__username", "verb").annotate(n=Count("id")))
    counts: dict[str, list[int]] = {}
    for row in grouped:
        counts.setdefault(row["actor__username"], [0] * len(verbs))[verbs.index(row["verb"])] = row["n"]
    experts = sorted(counts)
    return {"experts": experts, "operations": list(RUBRIC_OPERATIONS), "counts": {e: counts[e] for e in experts}}


def _chart_data(ops: dict) -> dict:
    return {
        "labels": ops["experts"],
        "datasets": [
            {"label": label, "verb": verb, "backgroundColor": colour,
             "data": [ops["counts"][e][n] for e in ops["experts"]]}
            for n, ((verb, label), colour) in enumerate(zip(ops["operations"], RUBRIC_OPERATION_COLOURS))
        ],
    }


# ------------------------------------------------------------------------------------------------------ action log


def _json_text(value) -> str:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@role_required(ADMIN)
def action_log(request):
    log_filter = filtered_log(request.GET)
    if log_filter.is_valid():
        rows = log_filter.qs
        ops = rubric_operation_counts(log_filter.queryset_without("verb"))
    else:
        rows = ActionLog.objects.none()
        ops = rubric_operation_counts(ActionLog.objects.none())
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    for row in page.object_list:
        row.before_text, row.after_text = _json_text(row.before), _json_text(row.after)
    query = request.GET.copy()
    query.pop("page", None)
    table = [(e, ops["counts"][e], sum(ops["counts"][e])) for e in ops["experts"]]
    totals = [sum(ops["counts"][e][n] for e in ops["experts"]) for n in range(len(RUBRIC_OPERATIONS))]
    return render(request, "annotation/log.html", {
        "filter": log_filter,
        "page": page,
        "query": query.urlencode(),
        "operations": RUBRIC_OPERATIONS,
        "ops_table": table,
        "ops_totals": totals,
        "ops_total": sum(totals),
        "chart": _chart_data(ops),
    })


class _Echo:
    def write(self, value):
        return value


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value) -> str:
    """Text as a spreadsheet will not run it: a cell that would start a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_rows(rows):
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for row in rows.iterator(chunk_size=2000):
        yield writer.writerow([_csv_cell(v) for v in (
            row.pk,
            timezone.localtime(row.created_at).isoformat(),
            row.actor.username if row.actor_id else "",
            row.verb,
            row.workflow,
            row.item_id or "",
            row.target_type,
            row.target_id,
            _json_text(row.before),
            _json_text(row.after),
            row.rationale,
            row.request_id,
        )])


@role_required(ADMIN)
def action_log_csv(request):
    """The filtered rows (all of them, newest first) as CSV with a header row, streamed."""
    log_filter = filtered_log(request.GET)
    rows = log_filter.qs if log_filter.is_valid() else ActionLog.objects.none()
    response = StreamingHttpResponse(_csv_rows(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="action-log-{stamp}.csv"'
    return response


# ------------------------------------------------------------------------------------------------------- agreement


def kappa_colour(kappa: float | None) -> tuple[str, str]:
    """(background, text colour) for a kappa in [-1, 1]: white at 0, deeper blue towards 1, red towards -1."""
    if kappa is None:
        return "#eceff3", "#1d232b"
    strength = max(0.0, min(1.0, abs(kappa)))
    lightness = round(97 - 55 * strength)
    hue = 212 if kappa >= 0 else 8
    return f"hsl({hue}, 62%, {lightness}%)", "#ffffff" if lightness < 60 else "#1d232b"


def kappa_matrix(report: dict) -> list[dict]:
    """Rows of the pairwise kappa matrix (Table 6 layout): one row per rater, one cell per rater."""
    pairs = {}
    for pair in report["pairwise"]:
        pairs[(pair["rater_a"], pair["rater_b"])] = pairs[(pair["rater_b"], pair["rater_a"])] = pair
    rows = []
    for a in report["raters"]:
        cells = []
        for b in report["raters"]:
            pair = pairs.get((a, b))
            if a == b:
                cells.append({"diagonal": True, "rater": b})
            elif pair is None:
                cells.append({"missing": True, "rater": b})
            else:
                background, colour = kappa_colour(pair["kappa"])
                cells.append({"rater": b, "kappa": pair["kappa"], "n": pair["n_items"], "background": background,
                              "colour": colour, "percent": pair["percent_agreement"]})
        rows.append({"rater": a, "cells": cells})
    return rows


@role_required(ADMIN)
def agreement_page(request):
    workflow = request.GET.get("workflow") or Workflow.TASK_VOTING
    if workflow not in Workflow.values:
        workflow = Workflow.TASK_VOTING
    # Small workflows are computed inline; large ones come precomputed by the worker (annotation.agreement_cache).
    report, precomputed = agreement_cache.page_report(workflow)
    legend = [{"value": v, "background": kappa_colour(v)[0], "colour": kappa_colour(v)[1]}
              for v in (-1.0, -0.5, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    return render(request, "annotation/agreement.html", {
        "workflow": workflow,
        "workflow_label": Workflow(workflow).label,
        "workflows": Workflow.choices,
        "report": report,
        "precomputed": precomputed,
        "matrix": kappa_matrix(report),
        "legend": legend,
    })
