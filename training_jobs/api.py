"""REST endpoints for training jobs (researchers and admins): list, create (validated, then queued), detail, cancel."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from microverse_site.roles import ADMIN, RESEARCHER, api_role_permission
from training_jobs import backends, selectors, services
from training_jobs.models import BaseModelWeights, TrainingJob

JobsPermission = api_role_permission(RESEARCHER, ADMIN)


class JobOutputSerializer(serializers.ModelSerializer):
    base_model = serializers.CharField(source="base_model.name")
    gpu_hours = serializers.SerializerMethodField()

    class Meta:
        model = TrainingJob
        fields = ["id", "name", "kind", "backend", "base_model", "snapshot_name", "manifest_path", "parent",
                  "checkpoint_path", "config", "scheduler_id", "state", "exit_code", "state_reason", "step",
                  "total_steps", "gpu_hours", "created_at", "submitted_at", "started_at", "finished_at"]

    def get_gpu_hours(self, job) -> float:
        return job.gpu_seconds / 3600.0


class JobInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingJob.Kind.choices, default=TrainingJob.Kind.FINETUNE)
    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    base_model = serializers.SlugRelatedField(slug_field="name", queryset=BaseModelWeights.objects.all())
    snapshot_name = serializers.CharField(required=False, allow_blank=True, default="")
    manifest_path = serializers.CharField(required=False, allow_blank=True, default="")
    backend = serializers.ChoiceField(choices=["slurm", "local"], default="slurm")
    params = serializers.DictField(required=False, default=dict)
    resources = serializers.DictField(required=False, default=dict)


class JobListCreate(APIView):
    permission_classes = [JobsPermission]

    @extend_schema(responses=JobOutputSerializer(many=True))
    def get(self, request):
        return Response(JobOutputSerializer(selectors.job_list(), many=True).data)

    @extend_schema(request=JobInputSerializer, responses={201: JobOutputSerializer})
    def post(self, request):
        data = JobInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        try:
            job = services.job_create(kind=d["kind"], base_model=d["base_model"], snapshot_name=d["snapshot_name"],
                                      manifest_path=d["manifest_path"], backend=d["backend"], name=d["name"],
                                      config={"params": d["params"], "resources": d["resources"]},
                                      user=request.user)
        except services.JobInvalid as exc:
            return Response({"errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        services.job_queue(job=job)
        return Response(JobOutputSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetail(APIView):
    permission_classes = [JobsPermission]

    @extend_schema(responses=JobOutputSerializer)
    def get(self, request, pk: int):
        return Response(JobOutputSerializer(get_object_or_404(TrainingJob, pk=pk)).data)


class JobCancel(APIView):
    permission_classes = [JobsPermission]

    @extend_schema(request=None, responses=JobOutputSerializer)
    def post(self, request, pk: int):
        job = get_object_or_404(TrainingJob, pk=pk)
        try:
            job = services.job_cancel(job=job, user=request.user)
        except backends.BackendError as exc:
            return Response({"errors": [str(exc)]}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(JobOutputSerializer(job).data)
