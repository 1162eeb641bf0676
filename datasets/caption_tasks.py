"""Celery task for captions: a thin wrapper around ``datasets.captions.caption_generate``.

It belongs on the "llm" queue: ``datasets.captions.captions_queue`` sends it there explicitly (Celery 5.7 deprecates
the ``queue`` task attribute), and ``CELERY_TASK_ROUTES`` should route ``datasets.caption_tasks.*`` to "llm" for any
other sender (the ``datasets.tasks.*`` route sends pipeline stages to "cpu" and does not match this name).

Rate limit: ``settings.CAPTION_RATE_LIMIT`` (Celery syntax, per worker; default "30/m"), read when the module is
imported. Retries with backoff (timeouts, 429 with Retry-After, 5xx, bodies that are not JSON) happen inside
``microverse_site.llm.chat``; a call that still fails is recorded with its reason and the task ends ("failed").

Idempotent (a clip with a caption being checked or approved is skipped, an identical earlier ok answer is reused), so
late acknowledgement and re-delivery after a lost worker are safe. The module is imported by ``datasets.apps``.
"""
import logging

from celery import shared_task
from django.conf import settings

from datasets import captions

logger = logging.getLogger(__name__)

RATE_LIMIT = getattr(settings, "CAPTION_RATE_LIMIT", None) or "30/m"


@shared_task(name="datasets.caption_tasks.generate_caption", rate_limit=RATE_LIMIT, acks_late=True)
def generate_caption(clip_id: int) -> str:
    """Write the next caption version of a verified clip; returns created / skipped / failed / not_verified /
    missing."""
    result = captions.caption_generate(clip_id=clip_id)
    logger.info("clip %s: caption %s%s", clip_id, result.status, f" ({result.reason})" if result.reason else "")
    return result.status
