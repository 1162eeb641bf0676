"""Expert review pages (queues, htmx item panels) and the admins' panels page. Thin: parse, authorise, call, render.

Blind review: an item panel shows the others' votes only when annotation.selectors.can_see_others_decisions says so
(after the expert's own submission); an item decided before the expert voted shows "decided", never the outcome,
and still takes their vote (it counts for agreement, not for the outcome).
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from annotation import consensus, selectors, services
from annotation.models import Assignment, ReviewItem, Workflow, WorkflowConfig
from microverse_site.roles import ADMIN, EXPERT, role_required
from rubrics import voting

# Workflows whose queue these pages serve, with the template that shows one item's target. A workflow other than
# task voting names a "handler" (a dotted path, imported on use) with ``item_context(item=, user=) -> dict`` (what its
# templates show) and ``submit(request=, item=) -> (DecisionResult, label)`` (parses its own fields, raises
# ValidationError to refuse them), and its own "form_template" (the decision form), "keys_template" (the key map)
# and "script_template" (page keyboard script, included once outside the swapped panel).
QUEUE_WORKFLOWS = {
    Workflow.TASK_VOTING.value: {"item_template": "annotation/task_voting_item.html"},
    Workflow.CLIP_VERIFICATION.value: {
        "item_template": "datasets/clip_verification_item.html",
        "form_template": "datasets/clip_verification_form.html",
        "keys_template": "datasets/clip_verification_keys.html",
        "script_template": "datasets/clip_verification_script.html",
        "handler": "datasets.review_views.ClipVerificationQueue",
    },
    Workflow.CAPTION_CHECK.value: {
        "item_template": "datasets/caption_check_item.html",
        "form_template": "datasets/caption_check_form.html",
        "keys_template": "datasets/caption_check_keys.html",
        "script_template": "datasets/caption_check_script.html",
        "handler": "datasets.review_views.CaptionCheckQueue",
    },
}
# Workflows whose admins' panels page is the one below (it lists candidate tasks).
PANEL_WORKFLOWS = {Workflow.TASK_VOTING.value}
VOTES = ("keep", "reject")
COMMENT_MAX = 5000
PANELS_PAGE_SIZE = 25


def _workflow_or_404(workflow: str) -> str:
    if workflow not in QUEUE_WORKFLOWS:
        raise Http404("No review queue for this workflow.")
    return workflow


def _panel_workflow_or_404(workflow: str) -> str:
    if workflow not in PANEL_WORKFLOWS:
        raise Http404("No panels page for this workflow.")
    return workflow


def _handler(workflow: str):
    path = QUEUE_WORKFLOWS[workflow].get("handler")
    return import_string(path) if path else None


def _request_id(request) -> str:
    return getattr(request, "request_id", "")


def _is_htmx_partial(request) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def item_state(*, item: ReviewItem, voted: bool, is_admin: bool = False) -> str:
    """What the viewer may know of the item's status: the outcome only after their own vote (or as admin)."""
    if item.status == ReviewItem.Status.OPEN:
        return "open"
    return item.status if (voted or is_admin) else "decided"


# ------------------------------------------------------------------------------------------------ expert pages


@role_required(EXPERT)
def review_home(request):
    rows = []
    for value, label in Workflow.choices:
        progress = selectors.queue_progress(expert=request.user, workflow=value)
        page = _queue_page_url(value)
        if progress.assigned or value in QUEUE_WORKFLOWS:
            rows.append({"workflow": value, "label": label, "progress": progress,
                         "has_page": page is not None, "page": page,
                         "has_panels": value in PANEL_WORKFLOWS})
    return render(request, "annotation/review_home.html", {"rows": rows})


# Workflows whose expert pages live in other apps.
OTHER_QUEUE_PAGES = {
    Workflow.RUBRIC_REVISION.value: "revision-list",
    "human_eval": "judging-human",
    "pairwise": "judging-pairwise",
}


def _queue_page_url(workflow: str) -> str | None:
    if workflow in QUEUE_WORKFLOWS:
        return reverse("review-queue", args=[workflow])
    name = OTHER_QUEUE_PAGES.get(workflow)
    return reverse(name) if name else None


def _neighbours(queue, assignment: Assignment):
    before = Q(position__lt=assignment.position) | Q(position=assignment.position, pk__lt=assignment.pk)
    after = Q(position__gt=assignment.position) | Q(position=assignment.position, pk__gt=assignment.pk)
    previous = queue.filter(before).order_by("-position", "-pk").values_list("item_id", flat=True).first()
    following = queue.filter(after).order_by("position", "pk").values_list("item_id", flat=True).first()
    return previous, following


def _panel_context(request, workflow: str, assignment: Assignment | None, flash: dict | None = None) -> dict:
    user = request.user
    queue = selectors.queue(expert=user, workflow=workflow)
    config = QUEUE_WORKFLOWS[workflow]
    context = {
        "workflow": workflow, "workflow_label": Workflow(workflow).label, "flash": flash,
        "progress": selectors.queue_progress(expert=user, workflow=workflow),
        "assignment": assignment, "item": None, "item_template": config["item_template"],
        "form_template": config.get("form_template"), "keys_template": config.get("keys_template"),
        "script_template": config.get("script_template"),
        "queue_url": reverse("review-queue", args=[workflow]),
        "orderings": [(name, label) for name, (label, _) in QUEUE_ORDERINGS.get(workflow, {}).items()],
        "ordering": request.session.get(f"queue-order:{workflow}", ""),
    }
    if assignment is None:
        last = queue.order_by("-position", "-pk").values_list("item_id", flat=True).first()
        context.update(previous_item=last, next_item=None)
        return context
    item = assignment.item
    own = selectors.own_decision(expert=user, item=item)
    visible = list(selectors.decisions_visible_to(user=user, item=item)) if own is not None else []
    previous, following = _neighbours(queue, assignment)
    is_open = item.status == ReviewItem.Status.OPEN
    handler = _handler(workflow)
    if handler is not None:
        context.update(handler.item_context(item=item, user=user))
    else:
        context["candidate"] = voting.candidate_for(item)
    context.update(
        item=item, own=own,
        others=[d for d in visible if d.expert_id != user.pk],
        state=item_state(item=item, voted=own is not None),
        # A vote can change while the item is open; a first vote is still taken after the decision (agreement).
        can_vote=assignment.status in services.ACTIVE and (is_open or own is None),
        can_pass=assignment.status == Assignment.Status.ASSIGNED,
        previous_item=previous, next_item=following,
    )
    return context


def _render_panel(request, workflow: str, assignment: Assignment | None, flash: dict | None = None,
                  status: int = 200) -> HttpResponse:
    context = _panel_context(request, workflow, assignment, flash)
    partial = _is_htmx_partial(request)
    response = render(request, "annotation/queue.html#panel" if partial else "annotation/queue.html", context,
                      status=status)
    return response


def _least_sure_first(waiting):
    from datasets.classifier_versions import uncertainty_order  # the classifier lives in the datasets app

    return uncertainty_order(waiting)


# Optional orders in which an expert is served a workflow's waiting items (besides the queue's own order).
QUEUE_ORDERINGS = {Workflow.CLIP_VERIFICATION.value: {"least-sure": ("Least sure first", _least_sure_first)}}


def _next_waiting(request, workflow: str, after_position: int | None = None) -> Assignment | None:
    """The next item to serve: in the order the expert chose (?order=, remembered in the session) or the queue's."""
    key = f"queue-order:{workflow}"
    if "order" in request.GET:
        request.session[key] = request.GET["order"] if request.GET["order"] in QUEUE_ORDERINGS.get(workflow, {}) else ""
    chosen = QUEUE_ORDERINGS.get(workflow, {}).get(request.session.get(key, ""))
    if chosen is None:
        return selectors.next_assignment(expert=request.user, workflow=workflow, after_position=after_position)
    waiting = selectors.queue(expert=request.user, workflow=workflow).filter(status=Assignment.Status.ASSIGNED)
    return chosen[1](waiting).first()


def _queue_url(workflow: str, item_id: int | None = None) -> str:
    url = reverse("review-queue", args=[workflow])
    return f"{url}?{urlencode({'item': item_id})}" if item_id else url


@role_required(EXPERT)
def queue_page(request, workflow: str):
    """The expert's queue: the item asked for (?item=ID, for previous / next) or where they left off."""
    _workflow_or_404(workflow)
    item_id = request.GET.get("item", "")
    if item_id:
        if not item_id.isdigit():
            raise Http404("No such item in your queue.")
        assignment = selectors.queue(expert=request.user, workflow=workflow).filter(item_id=int(item_id)).first()
        if assignment is None:
            raise Http404("No such item in your queue.")
    else:
        assignment = _next_waiting(request, workflow)
    return _render_panel(request, workflow, assignment)


def _own_assignment(request, workflow: str, item_id: int) -> tuple[ReviewItem, Assignment]:
    item = get_object_or_404(ReviewItem, pk=item_id, workflow=workflow)
    assignment = selectors.queue(expert=request.user, workflow=workflow).filter(item=item).first()
    if assignment is None:
        raise PermissionDenied("This item is not on your panel.")
    return item, assignment


def _after(request, workflow: str, position: int, flash: dict) -> HttpResponse:
    """Answer a vote or a pass: the next waiting item's panel (htmx) or a redirect to the queue (plain form)."""
    following = _next_waiting(request, workflow, after_position=position)
    if not request.htmx:
        (messages.error if flash.get("error") else messages.success)(request, flash.get("message", ""))
        return redirect(_queue_url(workflow, following.item_id if following else None))
    response = _render_panel(request, workflow, following, flash)
    response["HX-Replace-Url"] = _queue_url(workflow, following.item_id if following else None)
    return response


@require_POST
@role_required(EXPERT)
def item_decision(request, workflow: str, item_id: int):
    """Keep or reject (with an optional comment); a repeat of the same vote changes nothing."""
    _workflow_or_404(workflow)
    handler = _handler(workflow)
    if handler is not None:
        return _handled_decision(request, workflow, item_id, handler)
    value = request.POST.get("value", "")
    if value not in VOTES:
        return HttpResponseBadRequest("The vote must be keep or reject.")
    comment = request.POST.get("comment", "").strip()[:COMMENT_MAX]
    item, assignment = _own_assignment(request, workflow, item_id)
    try:
        result = services.decision_submit(item=item, expert=request.user, value=value, comment=comment,
                                          request_id=_request_id(request))
    except ValidationError as exc:
        item.refresh_from_db()
        flash = {"error": True, "item": item, "message": " ".join(exc.messages)}
        return _after(request, workflow, assignment.position, flash)
    item.refresh_from_db()
    decisions = list(selectors.decisions_visible_to(user=request.user, item=item))
    flash = {
        "item": item, "candidate": voting.candidate_for(item), "value": value, "changed": result.changed,
        "outcome": result.outcome, "decisions": decisions,
        "keeps": sum(d.value == "keep" for d in decisions), "rejects": sum(d.value == "reject" for d in decisions),
        "message": f"Saved: {value}." if result.changed else f"Already saved: {value}.",
    }
    return _after(request, workflow, assignment.position, flash)


def _handled_decision(request, workflow: str, item_id: int, handler) -> HttpResponse:
    """A decision of a workflow with its own fields: a refused one shows the same item again with the reason (and
    what was typed); a saved one moves on to the next waiting item, like a vote."""
    item, assignment = _own_assignment(request, workflow, item_id)
    try:
        result, label = handler.submit(request=request, item=item)
    except ValidationError as exc:
        item.refresh_from_db()
        flash = {"error": True, "item": item, "message": " ".join(exc.messages), "posted": request.POST}
        if not request.htmx:
            messages.error(request, flash["message"])
            return redirect(_queue_url(workflow, item.pk))
        response = _render_panel(request, workflow, assignment, flash)
        response["HX-Replace-Url"] = _queue_url(workflow, item.pk)
        return response
    item.refresh_from_db()
    decisions = list(selectors.decisions_visible_to(user=request.user, item=item))
    flash = {
        "item": item, "value": result.decision.value, "changed": result.changed, "outcome": result.outcome,
        "decisions": decisions,
        "keeps": sum(d.value == "keep" for d in decisions), "rejects": sum(d.value == "reject" for d in decisions),
        "message": f"Saved: {label}." if result.changed else f"Already saved: {label}.",
    }
    if hasattr(handler, "flash_context"):
        flash.update(handler.flash_context(item=item, result=result))
    return _after(request, workflow, assignment.position, flash)


@require_POST
@role_required(EXPERT)
def item_pass(request, workflow: str, item_id: int):
    """"Outside my expertise": the item leaves this expert's queue and goes to another expert."""
    _workflow_or_404(workflow)
    item, assignment = _own_assignment(request, workflow, item_id)
    try:
        services.assignment_pass(item=item, expert=request.user,
                                 rationale=request.POST.get("comment", "").strip()[:COMMENT_MAX],
                                 request_id=_request_id(request))
    except ValidationError as exc:
        flash = {"error": True, "item": item, "message": " ".join(exc.messages)}
    else:
        flash = {"passed": True, "item": item, "message": "Passed: the item goes to another expert."}
    return _after(request, workflow, assignment.position, flash)


# ------------------------------------------------------------------------------------------------- admin page


def _experts():
    return (get_user_model().objects.filter(is_active=True, groups__name=EXPERT).order_by("username")
            .only("id", "username"))


@role_required(ADMIN)
def panels_page(request, workflow: str):
    _panel_workflow_or_404(workflow)
    rule = services.workflow_rule(workflow)
    open_page = Paginator(voting.open_items(), PANELS_PAGE_SIZE).get_page(request.GET.get("page"))
    rejected_page = Paginator(voting.rejected_items(), PANELS_PAGE_SIZE).get_page(request.GET.get("rpage"))
    split = voting.split_items()
    context = {
        "workflow": workflow, "workflow_label": Workflow(workflow).label, "rule": rule,
        "configured": WorkflowConfig.objects.filter(workflow=workflow).exists(),
        "counts": voting.counts(), "experts": list(_experts()),
        "open_page": open_page, "open_rows": voting.panel_rows(open_page.object_list),
        "split_count": split.count(), "split_rows": voting.panel_rows(split[:PANELS_PAGE_SIZE]),
        "rejected_page": rejected_page, "rejected_rows": voting.panel_rows(rejected_page.object_list),
    }
    return render(request, "annotation/panels.html", context)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@require_POST
@role_required(ADMIN)
def panels_config(request, workflow: str):
    """Set the workflow's panel size and quorum (a strict majority, see annotation.consensus.ConsensusRule)."""
    _panel_workflow_or_404(workflow)
    panel_size, quorum = _int(request.POST.get("panel_size")), _int(request.POST.get("quorum"))
    try:
        if panel_size is None or quorum is None:
            raise ValueError("Panel size and quorum must be whole numbers.")
        consensus.ConsensusRule(panel_size=panel_size, quorum=quorum)
    except ValueError as exc:
        messages.error(request, f"Not saved: {exc}")
        return redirect("review-panels", workflow)
    before = services.workflow_rule(workflow)
    WorkflowConfig.objects.update_or_create(workflow=workflow, defaults={"panel_size": panel_size, "quorum": quorum})
    services.log_action(actor=request.user, verb="workflow_config", workflow=workflow,
                        before={"panel_size": before.panel_size, "quorum": before.quorum},
                        after={"panel_size": panel_size, "quorum": quorum}, request_id=_request_id(request))
    messages.success(request, f"Saved: {quorum} of {panel_size}.")
    return redirect("review-panels", workflow)


@require_POST
@role_required(ADMIN)
def panels_auto_assign(request, workflow: str):
    _panel_workflow_or_404(workflow)
    made = services.panel_auto_assign(workflow=workflow, assigned_by=request.user, request_id=_request_id(request))
    messages.success(request, f"Auto-assign made {made} assignment{'s' if made != 1 else ''}.")
    return redirect("review-panels", workflow)


@require_POST
@role_required(ADMIN)
def panels_assign(request, workflow: str, item_id: int):
    """Put the chosen experts on one item's panel by hand."""
    _panel_workflow_or_404(workflow)
    item = get_object_or_404(ReviewItem, pk=item_id, workflow=workflow)
    ids = [i for i in (_int(v) for v in request.POST.getlist("experts")) if i is not None]
    chosen = list(get_user_model().objects.filter(pk__in=ids))
    if not chosen:
        messages.error(request, "Choose at least one expert.")
    else:
        try:
            services.panel_assign(item=item, experts=chosen, assigned_by=request.user,
                                  request_id=_request_id(request))
        except ValidationError as exc:
            messages.error(request, f"Item {item.pk}: " + " ".join(exc.messages))
        else:
            names = ", ".join(sorted(u.username for u in chosen))
            messages.success(request, f"Item {item.pk}: assigned {names}.")
    page = request.POST.get("page", "")
    url = reverse("review-panels", args=[workflow])
    return redirect(f"{url}?{urlencode({'page': page})}#item-{item.pk}" if page else f"{url}#item-{item.pk}")
