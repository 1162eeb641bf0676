"""Models under test, their generated videos, judge runs and judgements, and human evaluation."""
from django.conf import settings
from django.db import models

from rubrics.models import BenchmarkTask, Criterion, Dimension, RubricVersion


class ModelUnderTest(models.Model):
    """A video generation model whose videos are judged (e.g. "Wan2.1-T2V-1.3B", "MicroVerse-1.3B")."""

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class GeneratedVideo(models.Model):
    """One model's video for one benchmark task (`<ModelName>/<index>.mp4`)."""

    class Status(models.TextChoices):
        OK = "ok"
        MISSING = "missing"
        UNREADABLE = "unreadable"

    model = models.ForeignKey(ModelUnderTest, on_delete=models.CASCADE, related_name="videos")
    task = models.ForeignKey(BenchmarkTask, on_delete=models.PROTECT, related_name="generated_videos")
    file = models.FileField(upload_to="generated/", max_length=300, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OK, db_index=True)
    reason = models.TextField(blank=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    fps = models.FloatField(default=0)
    frame_count = models.PositiveIntegerField(default=0)
    frames = models.JSONField(default=list, blank=True, help_text="Storage names of the extracted judge frames.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_id", "task__index"]
        constraints = [models.UniqueConstraint(fields=["model", "task"], name="generated_video_unique")]


class JudgeRun(models.Model):
    """A model under test judged on a set of rubric versions by one judge model at one endpoint."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        CANCELLED = "cancelled"
        FAILED = "failed"

    model = models.ForeignKey(ModelUnderTest, on_delete=models.CASCADE, related_name="judge_runs")
    rubric_label = models.CharField(max_length=40, default="released",
                                    help_text='Which rubric version of each task: "released", "draft" or "current".')
    judge_model = models.CharField(max_length=120, help_text='The judge LLM ("imported" for a published file).')
    base_url = models.CharField(max_length=300, blank=True)
    frames_per_video = models.PositiveSmallIntegerField(default=8)
    concurrency = models.PositiveSmallIntegerField(default=4)
    prompt_version = models.CharField(max_length=40, default="v1")
    source_file = models.CharField(max_length=255, blank=True, help_text="For imported judgements.")
    published_entries = models.JSONField(
        default=dict, blank=True,
        help_text="Imported runs: per task index, the entry's video_path and its keys the published format does not "
                  "define, as the file had them (the export writes them back).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class Judgement(models.Model):
    """The judge's answer for one task and one dimension in one run: scored, flagged with a reason, or pending."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running", "being judged"
        SCORED = "scored"
        FLAGGED = "flagged"

    run = models.ForeignKey(JudgeRun, on_delete=models.CASCADE, related_name="judgements")
    video = models.ForeignKey(GeneratedVideo, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="judgements")
    task = models.ForeignKey(BenchmarkTask, on_delete=models.PROTECT, related_name="judgements")
    dimension = models.CharField(max_length=20, choices=Dimension.choices)
    rubric_version = models.ForeignKey(RubricVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    scores = models.JSONField(null=True, blank=True, help_text="The judge's score list as parsed (may be malformed).")
    reasoning = models.TextField(blank=True)
    raw_response = models.TextField(blank=True)
    published = models.JSONField(
        null=True, blank=True,
        help_text='Imported judgements: {"eval": the *_eval value exactly as the file had it} (the export writes it '
                  "back, so the round trip keeps keys the format does not define).")
    flag_reason = models.TextField(blank=True)
    llm_call = models.ForeignKey("microverse_site.LLMCall", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run_id", "task__index", "dimension"]
        constraints = [models.UniqueConstraint(fields=["run", "task", "dimension"], name="judgement_unique")]


class HumanScore(models.Model):
    """An expert's 0/1 on one criterion of one generated video (blind to the model's name)."""

    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="human_scores")
    video = models.ForeignKey(GeneratedVideo, on_delete=models.CASCADE, related_name="human_scores")
    criterion = models.ForeignKey(Criterion, on_delete=models.PROTECT, related_name="+")
    score = models.PositiveSmallIntegerField(choices=[(0, "0"), (1, "1")])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["expert", "video", "criterion"], name="human_score_unique")]


class PairwiseComparison(models.Model):
    """Two models' videos for one task, shown side by side in a random, hidden order."""

    task = models.ForeignKey(BenchmarkTask, on_delete=models.PROTECT, related_name="+")
    video_a = models.ForeignKey(GeneratedVideo, on_delete=models.CASCADE, related_name="+")
    video_b = models.ForeignKey(GeneratedVideo, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["video_a", "video_b"], name="pairwise_unique_pair")]


class PairwisePreference(models.Model):
    """An expert's blind choice: the video shown left, the one shown right, or a tie."""

    class Choice(models.TextChoices):
        A = "a", "video A"
        B = "b", "video B"
        TIE = "tie"

    comparison = models.ForeignKey(PairwiseComparison, on_delete=models.CASCADE, related_name="preferences")
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    a_shown_left = models.BooleanField(help_text="Which side video A was shown on (randomised per expert).")
    choice = models.CharField(max_length=4, choices=Choice.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["comparison", "expert"], name="pairwise_one_per_expert")]
