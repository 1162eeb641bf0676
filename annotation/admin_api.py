"""Admin API: the action log (GET only; the log is append-only) and the agreement report of a workflow.

``GET api/agreement/<workflow>/`` answers exactly what ``python manage.py agreement --workflow NAME --json`` prints
(same keys, same numbers; ``bootstrap`` and ``seed`` query parameters with the same defaults as the command's options).
"""
from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import agreement_data, selectors
from annotation.admin_views import ActionLogFilter
from annotation.models import ActionLog, Workflow
from microverse_site.roles import ADMIN, api_role_permission


class ActionLogSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)  # null: the system

    class Meta:
        model = ActionLog
        fields = ["id", "actor", "verb", "workflow", "item", "target_type", "target_id", "before", "after",
                  "rationale", "request_id", "created_at"]
        read_only_fields = fields


class ActionLogList(generics.ListAPIView):
    """The action log, newest first; filters `expert` (user id), `workflow`, `verb`, `since`, `until` (days)."""

    serializer_class = ActionLogSerializer
    permission_classes = [api_role_permission(ADMIN)]
    filterset_class = ActionLogFilter
    http_method_names = ["get", "head", "options"]

    def get_queryset(self):
        return selectors.action_log()


def _int_param(request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({name: "must be an integer"}) from None


class AgreementReport(APIView):
    """Inter-rater agreement of one workflow's decisions: pairwise Cohen's kappa (n, 95 % bootstrap CI, percent
    agreement), Fleiss' kappa over complete panels, Krippendorff's alpha, overall percent agreement."""

    permission_classes = [api_role_permission(ADMIN)]
    http_method_names = ["get", "head", "options"]

    @extend_schema(
        parameters=[
            OpenApiParameter("workflow", str, OpenApiParameter.PATH, enum=Workflow.values),
            OpenApiParameter("bootstrap", int, description=f"bootstrap resamples (default "
                                                           f"{agreement_data.DEFAULT_BOOTSTRAP}, at most "
                                                           f"{agreement_data.MAX_BOOTSTRAP})"),
            OpenApiParameter("seed", int, description=f"bootstrap seed (default {agreement_data.DEFAULT_SEED})"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, workflow: str):
        if workflow not in Workflow.values:
            raise Http404(f"Unknown workflow {workflow!r}.")
        bootstrap = _int_param(request, "bootstrap", agreement_data.DEFAULT_BOOTSTRAP)
        seed = _int_param(request, "seed", agreement_data.DEFAULT_SEED)
        try:
            report = agreement_data.workflow_agreement(workflow, bootstrap=bootstrap, seed=seed)
        except ValueError as error:
            raise ValidationError({"detail": str(error)}) from None
        return Response(report)
