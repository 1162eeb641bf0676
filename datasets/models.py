"""Source videos, the clips the pipeline cuts from them, and each pipeline stage's run per video."""
from django.conf import settings
from django.db import models


class SourceVideo(models.Model):
    """An ingested source video with its metadata (the paper's MicroSim-10K sources)."""

    class Admission(models.TextChoices):
        ADMITTED = "admitted"
        REFUSED = "refused", "refused by a rule"

    title = models.TextField()
    description = models.TextField(blank=True)
    license = models.CharField(max_length=120, blank=True)
    source_url = models.URLField(max_length=500, blank=True)
    views = models.BigIntegerField(null=True, blank=True)
    likes = models.BigIntegerField(null=True, blank=True)
    comments = models.BigIntegerField(null=True, blank=True)
    file = models.FileField(upload_to="videos/", max_length=300)
    original_name = models.CharField(max_length=255, blank=True, help_text="As uploaded; never used as a path.")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, unique=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    fps = models.FloatField(default=0)
    frame_count = models.PositiveIntegerField(default=0)
    duration = models.FloatField(default=0, help_text="Seconds.")
    codec = models.CharField(max_length=16, blank=True)
    admission = models.CharField(max_length=10, choices=Admission.choices, default=Admission.ADMITTED,
                                 db_index=True)
    admission_reason = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.title[:80]


class StageRun(models.Model):
    """One pipeline stage on one video: its state, timing and counts (the funnel is built from these)."""

    class Stage(models.TextChoices):
        SPLIT = "split"
        CLASSIFY = "classify"
        BORDERS = "borders"
        TEXT = "text"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    video = models.ForeignKey(SourceVideo, on_delete=models.CASCADE, related_name="stage_runs")
    stage = models.CharField(max_length=10, choices=Stage.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0, help_text="0..1 within the stage.")
    clips_in = models.PositiveIntegerField(default=0)
    clips_out = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["video", "stage"], name="stage_run_unique")]


class Clip(models.Model):
    """A clip cut from a source video, with every stage's raw measurement and the verdict under current thresholds.

    Measurements (probability, border fractions, text area) are kept raw, so changing a threshold re-evaluates the
    verdict without decoding the video again.
    """

    class Verdict(models.TextChoices):
        PENDING = "pending"
        KEPT = "kept"
        DROPPED = "dropped"

    video = models.ForeignKey(SourceVideo, on_delete=models.CASCADE, related_name="clips")
    position = models.PositiveIntegerField(help_text="Order within the video, from 0.")
    start_frame = models.PositiveIntegerField()
    end_frame = models.PositiveIntegerField(help_text="Exclusive.")
    fps = models.FloatField()
    file = models.FileField(upload_to="clips/", max_length=300, blank=True)
    thumbnail = models.FileField(upload_to="clips/", max_length=300, blank=True)
    sample_frames = models.FileField(
        upload_to="clip-samples/", max_length=300, blank=True,
        help_text="The clip's sampled frames kept by the split pass (lossless, at most 640 pixels wide), read by "
                  "the classify, borders and text stages instead of decoding the video again; empty: decode.")
    embedder = models.CharField(max_length=80, help_text="The frame embedder that placed the cuts.")
    micro_probability = models.FloatField(null=True, blank=True, help_text="Classifier output; empty: unclassified.")
    classifier_version = models.CharField(max_length=80, blank=True)
    border_top = models.FloatField(null=True, blank=True)
    border_bottom = models.FloatField(null=True, blank=True)
    border_left = models.FloatField(null=True, blank=True)
    border_right = models.FloatField(null=True, blank=True)
    text_area_fraction = models.FloatField(null=True, blank=True)
    text_found = models.TextField(blank=True)
    verdict = models.CharField(max_length=10, choices=Verdict.choices, default=Verdict.PENDING, db_index=True)
    stopped_at_stage = models.CharField(max_length=10, blank=True)
    stop_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["video_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["video", "start_frame"], name="clip_unique_start"),
            models.CheckConstraint(condition=models.Q(end_frame__gt=models.F("start_frame")), name="clip_nonempty"),
        ]

    @property
    def duration(self) -> float:
        return (self.end_frame - self.start_frame) / self.fps if self.fps else 0.0


class Caption(models.Model):
    """One version of a kept clip's caption: written by the LLM or edited by an expert; every version is kept."""

    class Source(models.TextChoices):
        LLM = "llm"
        EXPERT = "expert", "expert edit"

    class Status(models.TextChoices):
        CHECKING = "checking", "waiting for caption checking"
        APPROVED = "approved"
        REJECTED = "rejected"
        SUPERSEDED = "superseded"

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="captions")
    version = models.PositiveIntegerField()
    text = models.TextField()
    source = models.CharField(max_length=10, choices=Source.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CHECKING, db_index=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    reject_reason = models.TextField(blank=True)
    llm_call = models.ForeignKey("microverse_site.LLMCall", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["clip_id", "version"]
        constraints = [models.UniqueConstraint(fields=["clip", "version"], name="caption_unique_version")]


class ClassifierVersion(models.Model):
    """A micro / non-micro classifier trained from expert labels; the active one serves the classify stage."""

    class Status(models.TextChoices):
        TRAINING = "training"
        READY = "ready"
        FAILED = "failed"

    version = models.CharField(max_length=80, unique=True)
    path = models.CharField(max_length=500, help_text="Local model directory.")
    base_dir = models.CharField(max_length=500, help_text="The base model it was fine-tuned from.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.TRAINING)
    is_active = models.BooleanField(default=False)
    config = models.JSONField(default=dict, blank=True, help_text="lr, epochs, seed, split.")
    metrics = models.JSONField(default=dict, blank=True,
                               help_text="accuracy, precision, recall, f1, confusion matrix on the test split.")
    train_count = models.PositiveIntegerField(default=0)
    test_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True),
                                               name="one_active_classifier")]


class DatasetSnapshot(models.Model):
    """A frozen set of verified clips with approved captions: what a fine-tuning job trains on."""

    name = models.SlugField(max_length=120, unique=True)
    content_hash = models.CharField(max_length=64)
    clip_count = models.PositiveIntegerField(default=0)
    statistics = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class SnapshotItem(models.Model):
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="items")
    clip = models.ForeignKey(Clip, on_delete=models.PROTECT, related_name="+")
    caption = models.ForeignKey(Caption, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["snapshot_id", "position"]
        constraints = [models.UniqueConstraint(fields=["snapshot", "clip"], name="snapshot_item_unique_clip")]
