"""Celery tasks of the data pipeline: thin wrappers around ``datasets.pipeline`` (all the logic, idempotence and
crash safety live there).

Names are ``datasets.tasks.<stage>`` so that the settings' route ``"datasets.tasks.*" -> queue "cpu"`` applies; one
video's stages run as a chain (``enqueue_stages``). ``acks_late``: a message is acknowledged after its stage ends.

Re-delivery after a crash. A worker killed mid-stage leaves its StageRun RUNNING with a heartbeat that stops. The
filesystem broker has no visibility timeout (the message is gone once taken) and Redis re-delivers only after its
visibility timeout (an hour here), so the pipeline does not rely on either: when a worker starts (``worker_ready``)
it calls ``pipeline.pipeline_recover``, which re-queues every RUNNING run whose heartbeat is older than
``STALE_AFTER_SECONDS``; runs whose heartbeat is still fresh are looked at again by ``recover_stale_runs`` once
they would have turned stale. A re-delivered message that does arrive (Redis) is harmless: the claim in
``pipeline`` runs a stage only from QUEUED, or from RUNNING with a stale heartbeat.
"""
from __future__ import annotations

import logging

from celery import chain, shared_task
from celery.signals import worker_ready

from datasets import classifier_tasks  # noqa: F401  (registers the training task with the worker)
from datasets import pipeline

logger = logging.getLogger(__name__)


@shared_task(name="datasets.tasks.split", acks_late=True)
def split(video_id: int) -> None:
    pipeline.stage_split(video_id=video_id)


@shared_task(name="datasets.tasks.classify", acks_late=True)
def classify(video_id: int) -> None:
    pipeline.stage_classify(video_id=video_id)


@shared_task(name="datasets.tasks.borders", acks_late=True)
def borders(video_id: int) -> None:
    pipeline.stage_borders(video_id=video_id)


@shared_task(name="datasets.tasks.text", acks_late=True)
def text(video_id: int) -> None:
    pipeline.stage_text(video_id=video_id)


STAGE_TASKS = {"split": split, "classify": classify, "borders": borders, "text": text}


def stage_chain(video_id: int, stages: list[str]):
    """The signature of one video's stages, in order (immutable: no stage receives another's return value)."""
    return chain(*(STAGE_TASKS[stage].si(video_id) for stage in stages))


def enqueue_stages(video_id: int, stages: list[str], **options) -> None:
    stage_chain(video_id, stages).apply_async(**options)


@shared_task(name="datasets.tasks.recover_stale_runs", acks_late=True)
def recover_stale_runs() -> int:
    """Re-queue stage runs whose worker is gone; look again later for runs whose heartbeat is still fresh."""
    requeued, next_check = pipeline.pipeline_recover()
    if next_check is not None:
        recover_stale_runs.apply_async(countdown=next_check + 1)
    return len(requeued)


@worker_ready.connect
def recover_on_worker_start(sender=None, **kwargs) -> None:
    """A worker starting may be the replacement of one that died mid-stage: re-queue what it left RUNNING."""
    try:
        count = recover_stale_runs()
        if count:
            logger.warning("re-queued %d pipeline stage run(s) left running by a stopped worker", count)
    except Exception:  # noqa: BLE001 - never keep a worker from starting; the next start tries again
        logger.exception("could not look for pipeline stage runs left running by a stopped worker")
