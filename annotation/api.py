"""Review API (session or token auth): an expert's queue, one item with only the decisions its requester may see,
decisions and passes; admins: auto-assignment. Thin: parse, authorise, call the services and selectors, serialise."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.models import Assignment, Decision, ReviewItem, Workflow
from annotation.serializers import (
    AutoAssignResultSerializer,
    DecisionInputSerializer,
    DecisionResultSerializer,
    ErrorSerializer,
    ItemSerializer,
    PassInputSerializer,
    PassResultSerializer,
    QueueSerializer,
)
from annotation.views import item_state
from microverse_site.roles import ADMIN, EXPERT, api_role_permission, has_role
from rubrics import voting

VOTING_WORKFLOWS = {Workflow.TASK_VOTING.value}  # items whose decisions are keep / reject votes


def _workflow_or_404(workflow: str) -> str:
    if workflow not in Workflow.values:
        raise Http404("No such workflow.")
    return workflow


def _candidates(items) -> dict:
    return voting.candidates_for([i for i in items if i.workflow == Workflow.TASK_VOTING])


def _panel_assignment(user, item: ReviewItem) -> Assignment | None:
    return Assignment.objects.filter(item=item, expert=user, status__in=services.ACTIVE).first()


def _next_item(user, workflow: str, after_position: int | None = None) -> int | None:
    following = selectors.next_assignment(expert=user, workflow=workflow, after_position=after_position)
    return following.item_id if following else None


class QueuePagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class QueueView(APIView):
    """The requesting expert's queue for a workflow, in order, with progress and where they left off."""

    permission_classes = [api_role_permission(EXPERT)]

    @extend_schema(responses=QueueSerializer,
                   parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)])
    def get(self, request, workflow: str):
        _workflow_or_404(workflow)
        paginator = QueuePagination()
        page = paginator.paginate_queryset(selectors.queue(expert=request.user, workflow=workflow), request,
                                           view=self)
        candidates = _candidates([a.item for a in page])
        progress = selectors.queue_progress(expert=request.user, workflow=workflow)
        data = {
            "workflow": workflow,
            "progress": {"done": progress.done, "assigned": progress.assigned, "label": progress.label},
            "next_item": _next_item(request.user, workflow),
            "count": paginator.page.paginator.count,
            "next": paginator.get_next_link(), "previous": paginator.get_previous_link(),
            "results": [
                {"item_id": a.item_id, "position": a.position, "status": a.status,
                 "state": item_state(item=a.item, voted=a.status == Assignment.Status.DONE),
                 "candidate": candidates.get(a.item_id)}
                for a in page
            ],
        }
        return Response(QueueSerializer(data).data)


class ItemDetailView(APIView):
    """One item, with the decisions the requester may see: their own always, the others' only after their own.
    Experts see only items on their panel (403 otherwise); admins see every item and every decision."""

    permission_classes = [api_role_permission(EXPERT, ADMIN)]

    @extend_schema(responses={200: ItemSerializer, 403: ErrorSerializer, 404: ErrorSerializer})
    def get(self, request, item_id: int):
        item = get_object_or_404(ReviewItem, pk=item_id)
        is_admin = has_role(request.user, ADMIN)
        assignment = _panel_assignment(request.user, item)
        if assignment is None and not is_admin:
            raise PermissionDenied("This item is not on your panel.")
        own = selectors.own_decision(expert=request.user, item=item)
        others_visible = selectors.can_see_others_decisions(user=request.user, item=item)
        is_open = item.status == ReviewItem.Status.OPEN
        data = {
            "id": item.pk, "workflow": item.workflow,
            "state": item_state(item=item, voted=own is not None, is_admin=is_admin),
            "candidate": _candidates([item]).get(item.pk),
            "your_decision": own, "others_visible": others_visible,
            "decisions": list(selectors.decisions_visible_to(user=request.user, item=item)),
            "can_vote": bool(assignment) and (is_open or own is None),
            "can_pass": bool(assignment) and assignment.status == Assignment.Status.ASSIGNED,
        }
        return Response(ItemSerializer(data).data)


def _voting_item(item_id: int) -> ReviewItem:
    return get_object_or_404(ReviewItem, pk=item_id, workflow__in=VOTING_WORKFLOWS)


class ItemDecisionView(APIView):
    """Submit (or change, while the item is open) the requester's keep / reject vote. 201 when this request
    recorded their first decision, 200 for a change or a repeat (a repeat changes nothing: one decision per
    expert and item). The answer carries the item's outcome and, now that the requester has voted, all votes."""

    permission_classes = [api_role_permission(EXPERT)]

    @extend_schema(request=DecisionInputSerializer,
                   responses={201: DecisionResultSerializer, 200: DecisionResultSerializer, 400: ErrorSerializer,
                              403: ErrorSerializer, 404: ErrorSerializer,
                              409: OpenApiResponse(ErrorSerializer, description=(
                                  "The item is decided and the requester's vote can no longer change."))})
    def post(self, request, item_id: int):
        item = _voting_item(item_id)
        assignment = _panel_assignment(request.user, item)
        if assignment is None:
            raise PermissionDenied("This item is not on your panel.")
        given = DecisionInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        existed = Decision.objects.filter(item=item, expert=request.user).exists()
        try:
            result = services.decision_submit(
                item=item, expert=request.user, value=given.validated_data["value"],
                comment=given.validated_data["comment"].strip(), request_id=getattr(request, "request_id", ""))
        except ValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        created = result.changed and not existed
        data = {
            "item": item.pk, "decision": result.decision, "created": created, "changed": result.changed,
            "outcome": result.outcome,
            "decisions": list(selectors.decisions_visible_to(user=request.user, item=item)),
            "next_item": _next_item(request.user, item.workflow, after_position=assignment.position),
        }
        return Response(DecisionResultSerializer(data).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ItemPassView(APIView):
    """"Outside my expertise": the item leaves the requester's queue and is reassigned to the least-loaded expert
    not yet asked. Only for an item still waiting for the requester's vote (403 otherwise)."""

    permission_classes = [api_role_permission(EXPERT)]

    @extend_schema(request=PassInputSerializer,
                   responses={200: PassResultSerializer, 403: ErrorSerializer, 404: ErrorSerializer})
    def post(self, request, item_id: int):
        item = _voting_item(item_id)
        assignment = _panel_assignment(request.user, item)
        if assignment is None:
            raise PermissionDenied("This item is not on your panel.")
        given = PassInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        replacement = services.assignment_pass(item=item, expert=request.user,
                                               rationale=given.validated_data["rationale"].strip(),
                                               request_id=getattr(request, "request_id", ""))
        data = {"item": item.pk, "passed": True, "reassigned": replacement is not None,
                "next_item": _next_item(request.user, item.workflow, after_position=assignment.position)}
        return Response(PassResultSerializer(data).data)


class AutoAssignView(APIView):
    """Admins: fill every open item's panel of the workflow with the least-loaded experts not yet on it."""

    permission_classes = [api_role_permission(ADMIN)]

    @extend_schema(request=None, responses={200: AutoAssignResultSerializer, 403: ErrorSerializer})
    def post(self, request, workflow: str):
        _workflow_or_404(workflow)
        made = services.panel_auto_assign(workflow=workflow, assigned_by=request.user,
                                          request_id=getattr(request, "request_id", ""))
        return Response(AutoAssignResultSerializer({"workflow": workflow, "assignments": made}).data)

