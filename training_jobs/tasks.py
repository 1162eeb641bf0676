"""Celery tasks of the training jobs: thin wrappers around ``training_jobs.services`` (idempotent there).

Names are ``training_jobs.tasks.<name>``, so the settings' route sends them to the "gpu" queue (a worker that can
reach the cluster's clients and the jobs' shared work folder). ``refresh_active_jobs`` runs from Celery beat
(``CELERY_BEAT_SCHEDULE``); it also re-queues submissions that no worker has picked up for a minute.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from training_jobs import backends, services
from training_jobs.models import TrainingJob

logger = logging.getLogger(__name__)
RESUBMIT_AFTER = timedelta(seconds=60)


@shared_task(name="training_jobs.tasks.submit_job", acks_late=True, autoretry_for=(backends.BackendUnavailable,),
             retry_backoff=5, retry_backoff_max=300, max_retries=8)
def submit_job(job_id: int) -> None:
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is not None:
        services.job_submit(job=job)


@shared_task(name="training_jobs.tasks.refresh_job", acks_late=True)
def refresh_job(job_id: int) -> None:
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is not None:
        services.job_refresh(job=job)


@shared_task(name="training_jobs.tasks.refresh_active_jobs", acks_late=True, ignore_result=True)
def refresh_active_jobs() -> int:
    """Refresh every submitted, unfinished job; returns how many were asked about."""
    count = 0
    stale = timezone.now() - RESUBMIT_AFTER
    for job in services.active_jobs():
        try:
            if job.state == TrainingJob.State.SUBMITTING and not job.scheduler_id:
                if job.updated_at < stale:
                    submit_job.delay(job.pk)
                continue
            services.job_refresh(job=job)
            count += 1
        except Exception:  # noqa: BLE001 - one job's trouble must not stop the others being followed
            logger.exception("refreshing training job %s failed", job.pk)
    return count
