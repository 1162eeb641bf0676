"""Celery task of classifier training: a thin wrapper around ``datasets.classifier_versions``.

Queue "gpu": fine-tuning VideoMAE (about 86 M parameters at 16 x 224 x 224 for the published base) over thousands
of clips is GPU work, like the other training jobs (``training_jobs.tasks.* -> gpu``); on the "cpu" queue it would
hold a pipeline worker for hours and slow the stages down. ``train_classifier`` picks CUDA when the worker has it
and falls back to the CPU otherwise, so the embedded single worker (which consumes every queue) still runs it.

:func:`enqueue` sends it to :data:`QUEUE` explicitly (the name is outside the ``datasets.tasks.*`` route, which goes
to "cpu"; Celery's per-task ``queue`` attribute is deprecated). Idempotent: the version's status decides (only a
version still ``training`` is trained; a re-delivered message for a killed run trains again from scratch into the
same directory).
"""
from __future__ import annotations

from celery import shared_task

from datasets import classifier_versions

QUEUE = "gpu"


@shared_task(name="datasets.classifier_tasks.train_classifier", acks_late=True)
def train_classifier(version_id: int) -> str:
    return classifier_versions.classifier_train_run(version_id=version_id).status


def enqueue(version_id: int) -> None:
    train_classifier.apply_async(args=(version_id,), queue=QUEUE)
