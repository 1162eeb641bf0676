"""Pages of the rubric revision workflow: the expert's revision page (htmx partials), the list of rounds, and the
admins' adjudication queue. Thin: parse, authorise, call rubrics.revision, render."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from microverse_site.roles import ADMIN, EXPERT, has_role, role_required
from rubrics import revision, selectors
from rubrics.models import (
    BenchmarkTask,
    Dimension,
    RevisionAdjudication,
    RevisionProposal,
    RevisionRound,
)

Op = RevisionProposal.Op


def _errors(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _round_or_404(round_id: int) -> RevisionRound:
    return get_object_or_404(RevisionRound.objects.select_related("task", "base_version", "result_version"),
                             pk=round_id)


def _viewable_round(request, round_id: int) -> RevisionRound:
    round = _round_or_404(round_id)
    if not revision.can_view_round(user=request.user, round=round):
        raise PermissionDenied("You are not on this revision round's panel.")
    return round


# --------------------------------------------------------------------------------------------- round list


@role_required(EXPERT, ADMIN)
def round_list(request):
    user = request.user
    rounds = revision.rounds_for(user=user)
    task_filter = request.GET.get("task", "")
    if task_filter.isdigit():
        rounds = rounds.filter(task__index=int(task_filter))
    rows = revision.round_rows(user=user, rounds=rounds[:200])
    context = {"rows": rows, "task_filter": task_filter if task_filter.isdigit() else ""}
    if has_role(user, ADMIN):
        context["experts"] = (get_user_model().objects.filter(is_active=True, groups__name=EXPERT)
                              .order_by("username"))
        context["pending_adjudications"] = RevisionAdjudication.objects.filter(
            status=RevisionAdjudication.Status.PENDING).count()
    return render(request, "rubrics/revision_list.html", context)


@require_POST
@role_required(ADMIN)
def round_open(request):
    try:
        index = int(request.POST.get("task", ""))
    except ValueError:
        messages.error(request, "Give the number of the task to revise.")
        return redirect("revision-list")
    task = BenchmarkTask.objects.filter(index=index).first()
    if task is None:
        messages.error(request, f"There is no task {index}.")
        return redirect("revision-list")
    experts = None
    if request.POST.get("panel") != "auto":
        ids = request.POST.getlist("experts")
        experts = list(get_user_model().objects.filter(pk__in=[i for i in ids if i.isdigit()]).order_by("pk"))
        if not experts:
            messages.error(request, "Choose the panel's experts, or choose automatic assignment.")
            return redirect("revision-list")
    try:
        round = revision.round_open(task=task, by=request.user, experts=experts)
    except ValidationError as exc:
        messages.error(request, _errors(exc))
        return redirect("revision-list")
    messages.success(request, f"Revision round {round.pk} opened on task {task.index} (v{round.base_version.number}).")
    return redirect("revision-round", round_id=round.pk)


# -------------------------------------------------------------------------------------------- round page


def _round_context(request, round: RevisionRound, **extra) -> dict:
    user = request.user
    item = revision.round_item(round)
    on_panel = revision.is_panel_member(round, user, item)
    submitted = on_panel and revision.has_submitted(round, user, item)
    is_open = round.status == RevisionRound.Status.OPEN
    stale = is_open and round.task.current_rubric_id != round.base_version_id
    proposals = list(revision.proposals_visible_to(user=user, round=round))
    context = {
        "round": round, "task": round.task, "base": round.base_version, "on_panel": on_panel,
        "submitted": submitted, "is_open": is_open, "stale": stale,
        "editable": on_panel and is_open and not submitted and not stale,
        "progress": revision.round_progress(round, item),
        "criteria": selectors.criteria_by_dimension(
            selectors.version_with_criteria(task=round.task, number=round.base_version.number)),
        "drafts": [p for p in proposals if p.expert_id == user.pk and p.status == RevisionProposal.Status.DRAFT],
        "own": [p for p in proposals if p.expert_id == user.pk],
        "proposals": proposals,
        "dimensions": Dimension.choices, "tiers": revision.WEIGHT_TIERS,
    }
    if not is_open:
        context["result_changes"] = (revision.version_changes(round.result_version)
                                     if round.result_version_id else [])
        context["adjudications"] = list(
            round.adjudications.select_related("criterion", "decided_by", "chosen_proposal")
            .prefetch_related("proposals__expert").order_by("id"))
    context.update(extra)
    return context


@role_required(EXPERT, ADMIN)
def round_detail(request, round_id: int):
    round = _viewable_round(request, round_id)
    context = _round_context(request, round)
    template = "rubrics/revision_round.html#body" if request.htmx else "rubrics/revision_round.html"
    return render(request, template, context)


def _panel_round(request, round_id: int) -> RevisionRound:
    round = _round_or_404(round_id)
    if not revision.is_panel_member(round, request.user):
        raise PermissionDenied("You are not on this revision round's panel.")
    return round


@role_required(EXPERT, ADMIN)
def proposal_form(request, round_id: int):
    """The form for one operation (htmx partial): ?op=delete|modify|weight|supplement&criterion=<id>."""
    round = _panel_round(request, round_id)
    op = request.GET.get("op", "")
    if op not in Op.values:
        raise Http404("Unknown operation.")
    criterion = None
    if op != Op.SUPPLEMENT:
        criterion = round.base_version.criteria.filter(pk=request.GET.get("criterion") or 0).first()
        if criterion is None:
            raise Http404("No such criterion in this version.")
    return render(request, "rubrics/revision_form.html", {
        "round": round, "op": op, "criterion": criterion, "values": {}, "dimensions": Dimension.choices,
        "tiers": revision.WEIGHT_TIERS,
    })


def _drafts(round, user):
    return list(round.proposals.filter(expert_id=user.pk, status=RevisionProposal.Status.DRAFT)
                .select_related("criterion").order_by("id"))


@require_POST
@role_required(EXPERT, ADMIN)
def proposal_save(request, round_id: int):
    round = _panel_round(request, round_id)
    data = request.POST
    op = data.get("op", "")
    base_version_id = data.get("base_version_id", "")
    common = {"round": round, "expert": request.user, "rationale": data.get("rationale", ""),
              "base_version_id": base_version_id}
    criterion = None
    try:
        if op == Op.WEIGHT:
            # "Adjust weight (or polarity)": a changed weight is a weight proposal, a changed polarity a modify.
            criterion = round.base_version.criteria.filter(pk=data.get("criterion_id") or 0).first()
            if criterion is None:
                raise ValidationError("That criterion is not part of the rubric version under revision.")
            weight = revision._to_float(data.get("weight"), "Weight")
            polarity = revision._to_polarity(data.get("polarity"))
            new_weight = weight is not None and weight != criterion.weight
            new_polarity = polarity is not None and polarity != criterion.polarity
            if not (new_weight or new_polarity):
                raise ValidationError("Change the weight or the polarity (or press Escape to cancel).")
            if not data.get("rationale", "").strip():
                raise ValidationError("A rationale is required: say why this change is needed.")
            if new_weight:
                revision.proposal_save(op=Op.WEIGHT, criterion_id=criterion.pk, weight=weight, **common)
            if new_polarity:
                revision.proposal_save(op=Op.MODIFY, criterion_id=criterion.pk, polarity=polarity, **common)
        else:
            revision.proposal_save(op=op, criterion_id=data.get("criterion_id") or None,
                                   description=data.get("description"), weight=data.get("weight"),
                                   polarity=data.get("polarity"), dimension=data.get("dimension") or None, **common)
    except revision.StaleVersion as exc:
        return _form_error(request, round, op, data, _errors(exc), stale=True)
    except ValidationError as exc:
        return _form_error(request, round, op, data, _errors(exc))
    if not request.htmx:
        messages.success(request, "Draft saved.")
        return redirect("revision-round", round_id=round.pk)
    return render(request, "rubrics/revision_form.html#saved", {
        "round": round, "drafts": _drafts(round, request.user), "saved_op": Op(op).label if op in Op.values else op,
    })


def _form_error(request, round, op, data, message, stale=False):
    if not request.htmx:
        messages.error(request, message)
        return redirect("revision-round", round_id=round.pk)
    criterion = None
    if op in Op.values and op != Op.SUPPLEMENT:
        criterion = round.base_version.criteria.filter(pk=data.get("criterion_id") or 0).first()
    if op not in Op.values or (op != Op.SUPPLEMENT and criterion is None):
        return render(request, "rubrics/revision_form.html#message", {"error": message, "stale": stale})
    return render(request, "rubrics/revision_form.html", {
        "round": round, "op": op, "criterion": criterion, "values": data, "error": message, "stale": stale,
        "dimensions": Dimension.choices, "tiers": revision.WEIGHT_TIERS,
    })


@require_POST
@role_required(EXPERT, ADMIN)
def proposal_delete(request, round_id: int, pk: int):
    round = _panel_round(request, round_id)
    proposal = get_object_or_404(RevisionProposal, pk=pk, round=round, expert=request.user)
    error = ""
    try:
        revision.proposal_delete_draft(proposal=proposal, expert=request.user)
    except ValidationError as exc:
        error = _errors(exc)
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect("revision-round", round_id=round.pk)
    return render(request, "rubrics/revision_round.html#drafts", {
        "round": round, "drafts": _drafts(round, request.user), "drafts_error": error, "editable": True,
    })


@require_POST
@role_required(EXPERT, ADMIN)
def proposals_submit(request, round_id: int):
    round = _panel_round(request, round_id)
    error = ""
    try:
        result = revision.proposals_submit(round=round, expert=request.user,
                                           base_version_id=request.POST.get("base_version_id") or None)
    except ValidationError as exc:
        error = _errors(exc)
    else:
        if result.aggregated:
            note = (f"You submitted {result.submitted} proposal(s); you were the last of the panel, so the round "
                    "has been aggregated.")
        else:
            note = (f"You submitted {result.submitted} proposal(s). The others' proposals stay hidden until the panel "
                    "is done.")
        if not request.htmx:
            messages.success(request, note)
    round = _round_or_404(round_id)
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect("revision-round", round_id=round.pk)
    context = _round_context(request, round, submit_error=error, submit_note="" if error else note)
    return render(request, "rubrics/revision_round.html#body", context)


# --------------------------------------------------------------------------------------------- adjudication


@role_required(ADMIN)
def adjudication_queue(request):
    items = list(revision.pending_adjudications())
    recent = list(RevisionAdjudication.objects.exclude(status=RevisionAdjudication.Status.PENDING)
                  .select_related("round__task", "decided_by", "criterion").order_by("-decided_at", "-id")[:20])
    return render(request, "rubrics/adjudication_queue.html", {"items": items, "recent": recent})


@require_POST
@role_required(ADMIN)
def adjudication_decide(request, pk: int):
    adjudication = get_object_or_404(RevisionAdjudication.objects.select_related("round__task", "criterion"), pk=pk)
    decision = request.POST.get("decision", "")
    error = ""
    version = None
    if decision not in ("accept", "reject"):
        error = "Choose Accept or Reject."
    else:
        try:
            version = revision.adjudication_decide(
                adjudication=adjudication, admin=request.user, accept=decision == "accept",
                rationale=request.POST.get("rationale", ""), chosen_proposal_id=request.POST.get("chosen") or None,
            )
        except ValidationError as exc:
            error = _errors(exc)
    if not request.htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"Adjudication {pk} {decision}ed.")
        return redirect("adjudication-queue")
    adjudication = (revision.pending_adjudications().filter(pk=pk).first()
                    or RevisionAdjudication.objects.select_related("round__task", "criterion", "decided_by")
                    .prefetch_related("proposals__expert").get(pk=pk))
    return render(request, "rubrics/adjudication_queue.html#item", {
        "a": adjudication, "error": error, "values": request.POST if error else {}, "new_version": version,
    })
