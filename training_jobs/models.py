"""Wan2.1 fine-tuning and generation jobs, the weights they start from, and what they report back."""
from django.conf import settings
from django.db import models


class BaseModelWeights(models.Model):
    """A local Wan2.1 weights directory registered by an admin (nothing is downloaded at run time)."""

    name = models.CharField(max_length=120, unique=True, help_text='e.g. "Wan2.1-T2V-1.3B"')
    path = models.CharField(max_length=500, help_text="Directory on the cluster's shared filesystem.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class TrainingJob(models.Model):
    """A fine-tuning or generation job submitted to a cluster backend (Slurm or a local subprocess)."""

    class Kind(models.TextChoices):
        FINETUNE = "finetune", "Fine-tuning"
        GENERATE = "generate", "Benchmark video generation"

    class State(models.TextChoices):
        DRAFT = "draft"
        SUBMITTING = "submitting"
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        TIMEOUT = "timeout"
        LOST = "lost", "lost (the scheduler no longer knows it)"

    FINAL_STATES = {State.COMPLETED, State.FAILED, State.CANCELLED, State.TIMEOUT, State.LOST}

    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=120)
    backend = models.CharField(max_length=10, choices=[("slurm", "Slurm"), ("local", "Local subprocess")])
    base_model = models.ForeignKey(BaseModelWeights, on_delete=models.PROTECT, related_name="jobs")
    snapshot_name = models.CharField(max_length=120, blank=True, help_text="Dataset snapshot (fine-tuning).")
    manifest_path = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
                               help_text="The job whose checkpoint this one resumes or generates from.")
    checkpoint_path = models.CharField(max_length=500, blank=True, help_text="Checkpoint to start from.")
    config = models.JSONField(default=dict, help_text="Hyperparameters and resources as submitted.")
    work_dir = models.CharField(max_length=500, blank=True)
    scheduler_id = models.CharField(max_length=40, blank=True, db_index=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.DRAFT, db_index=True)
    exit_code = models.IntegerField(null=True, blank=True)
    state_reason = models.TextField(blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    gpu_seconds = models.FloatField(default=0)
    log_tail = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES


class JobStateChange(models.Model):
    """The state timeline of a job, as observed from the scheduler."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="state_changes")
    state = models.CharField(max_length=12, choices=TrainingJob.State.choices)
    detail = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]


class MetricPoint(models.Model):
    """One JSON metrics line of the trainer (step, loss, lr, seconds, GPU memory)."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    loss = models.FloatField(null=True, blank=True)
    lr = models.FloatField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    gpu_memory_mb = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="metric_point_unique_step")]


class Checkpoint(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job_id", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="checkpoint_unique_step")]
