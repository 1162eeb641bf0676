from rest_framework import serializers

from rubrics.models import BenchmarkExport, BenchmarkTask, Criterion, RubricVersion


class CriterionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Criterion
        fields = ["dimension", "position", "key_number", "description", "polarity", "weight"]


class RubricVersionSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = RubricVersion
        fields = ["number", "label", "parent", "note", "created_at"]


class RubricVersionSerializer(serializers.ModelSerializer):
    task = serializers.IntegerField(source="task.index", read_only=True)
    criteria = CriterionSerializer(many=True, read_only=True)

    class Meta:
        model = RubricVersion
        fields = ["task", "number", "label", "parent", "note", "created_at", "criteria"]


class BenchmarkTaskSerializer(serializers.ModelSerializer):
    current_rubric = serializers.IntegerField(source="current_rubric.number", read_only=True, allow_null=True)

    class Meta:
        model = BenchmarkTask
        fields = ["index", "prompt", "requirement", "level", "source_id", "source_url", "source_title",
                  "classification_confidence", "current_rubric"]


class BenchmarkExportSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = BenchmarkExport
        fields = ["id", "style", "status", "sha256", "task_count", "criterion_count", "error", "created_at",
                  "finished_at", "download_url"]
        read_only_fields = ["id", "status", "sha256", "task_count", "criterion_count", "error", "created_at",
                            "finished_at", "download_url"]

    def get_download_url(self, obj) -> str | None:
        from django.urls import reverse

        return reverse("export-download", args=[obj.pk]) if obj.status == BenchmarkExport.Status.DONE else None
