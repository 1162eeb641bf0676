from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.response import Response

from microverse_site.roles import ADMIN, RESEARCHER, api_role_permission
from rubrics import selectors, services
from rubrics.models import BenchmarkExport, Level
from rubrics.serializers import (
    BenchmarkExportSerializer,
    BenchmarkTaskSerializer,
    RubricVersionSerializer,
    RubricVersionSummarySerializer,
)


class BenchmarkTaskViewSet(viewsets.ReadOnlyModelViewSet):
    """Benchmark tasks; filter with `level` and search prompt and requirement with `q`."""

    serializer_class = BenchmarkTaskSerializer
    lookup_field = "index"

    def get_queryset(self):
        level = self.request.query_params.get("level", "")
        return selectors.task_list(
            level=level if level in Level.values else "", query=self.request.query_params.get("q", "")[:200]
        ).select_related("current_rubric")

    @extend_schema(parameters=[
        OpenApiParameter("level", str, enum=Level.values), OpenApiParameter("q", str, description="Search text"),
    ])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class RubricVersionViewSet(viewsets.ViewSet):
    """The rubric versions of one task, oldest first; each version with its criteria."""

    lookup_field = "number"

    @extend_schema(responses=RubricVersionSummarySerializer(many=True))
    def list(self, request, task_index=None):
        task = get_object_or_404(selectors.task_list(), index=task_index)
        return Response(RubricVersionSummarySerializer(selectors.rubric_versions(task=task), many=True).data)

    @extend_schema(responses=RubricVersionSerializer)
    def retrieve(self, request, task_index=None, number=None):
        task = get_object_or_404(selectors.task_list(), index=task_index)
        version = get_object_or_404(task.rubric_versions.prefetch_related("criteria"), number=number)
        return Response(RubricVersionSerializer(version).data)


class BenchmarkExportViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin, mixins.ListModelMixin,
                             viewsets.GenericViewSet):
    """Rubric files in the published format, written by a worker. POST {"style": "released"|"draft"}."""

    serializer_class = BenchmarkExportSerializer
    permission_classes = [api_role_permission(ADMIN, RESEARCHER)]
    queryset = BenchmarkExport.objects.all()

    def perform_create(self, serializer):
        serializer.instance = services.benchmark_export_request(
            style=serializer.validated_data["style"], user=self.request.user
        )
