"""Reads for the training job pages: progress and ETA, the loss curve, the launch form's choices."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from training_jobs.models import BaseModelWeights, MetricPoint, TrainingJob

ETA_WINDOW = 20  # the last N step times estimate the time per step


@dataclass
class Progress:
    step: int
    total: int
    percent: float | None
    seconds_per_step: float | None
    eta: timedelta | None
    gpu_hours: float


def job_list(*, limit: int = 200):
    return TrainingJob.objects.select_related("base_model", "created_by")[:limit]


def weights_list():
    return BaseModelWeights.objects.order_by("name")


def job_progress(job: TrainingJob) -> Progress:
    """step / total, and an ETA from the recent steps' times (the trainer's per-step "seconds"), falling back to the
    wall clock since the job started."""
    total = job.total_steps
    percent = min(100.0, 100.0 * job.step / total) if total else None
    seconds = [s for s in MetricPoint.objects.filter(job=job, seconds__isnull=False)
               .order_by("-step").values_list("seconds", flat=True)[:ETA_WINDOW] if s is not None and s >= 0]
    per_step = sum(seconds) / len(seconds) if seconds else None
    if per_step is None and job.started_at and job.step:
        per_step = (timezone.now() - job.started_at).total_seconds() / job.step
    eta = None
    if per_step is not None and total and not job.is_final and job.step < total:
        eta = timedelta(seconds=round(per_step * (total - job.step)))
    return Progress(step=job.step, total=total, percent=percent, seconds_per_step=per_step, eta=eta,
                    gpu_hours=job.gpu_seconds / 3600.0)


def loss_curve(job: TrainingJob, max_points: int = 2000) -> dict:
    """{"steps": [...], "loss": [...]} for the chart (evenly thinned to at most `max_points`)."""
    rows = list(MetricPoint.objects.filter(job=job, loss__isnull=False).order_by("step").values_list("step", "loss"))
    if len(rows) > max_points:
        stride = len(rows) / max_points
        rows = [rows[int(i * stride)] for i in range(max_points)] + [rows[-1]]
    return {"steps": [s for s, _ in rows], "loss": [loss for _, loss in rows]}


def job_timeline(job: TrainingJob):
    return job.state_changes.order_by("at", "id")
