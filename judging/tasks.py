"""Celery tasks for judge runs: thin wrappers around ``judging.runs`` (routed to the "llm" queue by the settings'
``judging.tasks.*`` route; ``judging.runs.judge_run_start`` also sends them with ``queue="llm"``).

``judging.tasks.judge_one`` is idempotent: only a PENDING judgement is claimed (a re-delivered message whose worker
died also takes back that judgement's claim), and an identical request already answered is not paid again. When the
endpoint has no free slot it waits a few seconds, then re-queues itself with a countdown (no retry limit: the run
can be cancelled).
"""
import logging
import random

from celery import shared_task

from judging import runs

logger = logging.getLogger(__name__)

#: Seconds a task waits in the worker for a free endpoint slot before re-queueing itself.
SLOT_WAIT_SECONDS = 5.0


@shared_task(name="judging.tasks.judge_one", bind=True, max_retries=None)
def judge_one(self, judgement_id: int) -> str:
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    outcome = runs.judge_one(judgement_id=judgement_id, wait=SLOT_WAIT_SECONDS, reclaim=redelivered)
    if outcome.status == "busy":
        raise self.retry(countdown=1.0 + 2.0 * random.random())
    if outcome.status == runs.FLAGGED:
        logger.info("judgement %s flagged: %s", judgement_id, outcome.reason)
    return outcome.status
