"""Celery tasks for candidate tasks and rubric drafts: thin wrappers around ``rubrics.candidates``.

They belong on the "llm" queue. Celery 5.7 deprecates the ``queue`` task attribute, so the queue is not set here:
``rubrics.candidates`` sends them with ``queue="llm"`` explicitly (``candidates_queue_generation``,
``rubric_draft_queue``), and ``CELERY_TASK_ROUTES`` should route both names to "llm" for any other sender.

Both are idempotent (the services claim their work in the database), so late acknowledgement (the project default)
and re-delivery after a lost worker are safe.
"""
import logging

from celery import shared_task

from microverse_site.llm import LLMError
from rubrics import candidates

logger = logging.getLogger(__name__)


@shared_task(name="rubrics.generate_candidate", bind=True)
def generate_candidate(self, candidate_id: int) -> str:
    """Write a candidate's prompt and level with the LLM; it ends in task voting or FAILED with the reason."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return str(candidates.candidate_generate(candidate_id=candidate_id, reclaim=redelivered))


@shared_task(name="rubrics.draft_rubric")
def draft_rubric(task_id: int) -> str:
    """Draft the rubric of an accepted task that has none ("llm-draft", version 1)."""
    try:
        version = candidates.candidate_draft_rubric(task_id=task_id)
    except LLMError as exc:
        logger.warning("task %s: no rubric draft: %s", task_id, exc.reason)
        return "failed"
    return "drafted" if version is not None else "skipped"
