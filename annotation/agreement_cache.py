"""Precomputed agreement reports: computed by a Celery task when a workflow's decisions change, read by the admin
agreement page, so that the page answers at once however many decisions there are.

* **When**: a Decision saved or deleted schedules, once its transaction commits, a recompute of its workflow
  (:func:`schedule_recompute`). It is debounced: the first change in a quiet workflow sets a "pending" mark in the
  store and enqueues :func:`agreement_recompute` ``DEBOUNCE_SECONDS`` later, or ``COST_FACTOR`` times the last
  recompute's duration when that is longer (:func:`recompute_delay`; trailing edge: the recompute sees every
  change of the window); further changes while the mark is set enqueue nothing. The task clears the mark before it
  reads the decisions, so a change during a recompute schedules the next one.
* **What**: the report of :func:`annotation.agreement_data.workflow_agreement` with the default bootstrap count and
  seed (the numbers of the API and of ``manage.py agreement --json``), with the decisions' fingerprint it was computed
  from and when.
* **Where**: :func:`microverse_site.shared_cache.shared_store`, a cache that every process sees (the web workers and
  the Celery worker), under keys that carry the database's name.
* **Reading** (:func:`page_report`): a workflow with at most ``INLINE_MAX_DECISIONS`` decisions is computed inline
  as before (fingerprint-cached, well under a second). A larger one is served from the store: fresh when its
  fingerprint is the decisions' current one; otherwise stale, shown with the time it was computed and "recompute
  pending" (one is scheduled if none is). With nothing stored yet (a new deployment, a flushed cache) the page computes
  it on demand once and stores it: the database is the fallback.
"""
from __future__ import annotations

import logging
import time
from functools import partial

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from annotation import agreement, agreement_data, services
from annotation.models import Decision, ReviewItem, Workflow
from microverse_site.shared_cache import db_key, shared_store

logger = logging.getLogger(__name__)

DEBOUNCE_SECONDS = float(getattr(settings, "AGREEMENT_RECOMPUTE_DEBOUNCE_SECONDS", 10.0))
# A workflow whose last recompute took t seconds waits at least COST_FACTOR x t before the next one, so that steady
# voting keeps the worker busy with one workflow's report at most 1 / (1 + COST_FACTOR) of the time (5 s of every
# 25 s for task voting at full scale, rather than one recompute after another).
COST_FACTOR = float(getattr(settings, "AGREEMENT_RECOMPUTE_COST_FACTOR", 4.0))
INLINE_MAX_DECISIONS = int(getattr(settings, "AGREEMENT_INLINE_MAX_DECISIONS", 1000))
PENDING_TIMEOUT = 15 * 60  # a pending mark whose task never ran (a lost message) expires, and the next change retries
RUNNING_TIMEOUT = 15 * 60
TASK_NAME = "annotation.agreement_recompute"

def store():
    """The cache the reports live in (see the module docstring)."""
    return shared_store()


def _key(kind: str, workflow: str) -> str:
    return db_key("agreement-cache:v1", kind, workflow)


def report_key(workflow: str) -> str:
    return _key("report", workflow)


def pending_key(workflow: str) -> str:
    return _key("pending", workflow)


def running_key(workflow: str) -> str:
    return _key("running", workflow)


# ---------------------------------------------------------------------------------------------------- scheduling


def schedule_recompute(workflow: str) -> bool:
    """Enqueue one recompute of `workflow` in :func:`recompute_delay` seconds unless one is pending already. True if
    enqueued.

    Never raises: a broker that is down leaves the decision saved and the report stale; the next change (or the
    page, which schedules one for a stale report) tries again."""
    try:
        if not store().add(pending_key(workflow), {"requested_at": timezone.now().isoformat()}, PENDING_TIMEOUT):
            return False
    except Exception:  # noqa: BLE001 - the store is an optimisation, never a reason to fail a request
        logger.warning("agreement cache: cannot mark a recompute of %s pending", workflow, exc_info=True)
        return False
    try:
        agreement_recompute.apply_async((workflow,), countdown=recompute_delay(workflow), retry=False)
    except Exception:  # noqa: BLE001 - broker down: log, and let the next change try again
        logger.warning("agreement cache: cannot enqueue a recompute of %s", workflow, exc_info=True)
        try:
            store().delete(pending_key(workflow))
        except Exception:  # noqa: BLE001
            pass
        return False
    return True


def _schedule_for_item(item_id: int, workflow: str | None) -> None:
    if workflow is None:
        workflow = ReviewItem.objects.filter(pk=item_id).values_list("workflow", flat=True).first()
    if workflow:
        schedule_recompute(workflow)


def _on_decision_change(instance: Decision) -> None:
    item = Decision.item.field.get_cached_value(instance, default=None)
    workflow = item.workflow if item is not None else None
    transaction.on_commit(partial(_schedule_for_item, instance.item_id, workflow), robust=True)


@receiver(post_save, sender=Decision, dispatch_uid="annotation.agreement_cache.saved")
def _decision_saved(sender, instance, **kwargs):
    _on_decision_change(instance)


@receiver(post_delete, sender=Decision, dispatch_uid="annotation.agreement_cache.deleted")
def _decision_deleted(sender, instance, **kwargs):
    _on_decision_change(instance)


# -------------------------------------------------------------------------------------------------- computing


def recompute(workflow: str) -> dict:
    """Compute `workflow`'s report now (the default bootstrap and seed) and store it. Returns the stored entry."""
    fingerprint = agreement_data.decisions_fingerprint(workflow)  # read first: a later change makes it stale
    panel_size = services.workflow_rule(workflow).panel_size
    started = time.perf_counter()
    report = agreement.agreement_report(agreement_data.decision_triples(workflow),
                                        panel_size=panel_size if panel_size >= 2 else None,
                                        bootstrap=agreement_data.DEFAULT_BOOTSTRAP, seed=agreement_data.DEFAULT_SEED)
    entry = {
        "report": {"workflow": workflow, "panel_size": panel_size, **report},
        "fingerprint": fingerprint,
        "panel_size": panel_size,
        "computed_at": timezone.now().isoformat(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    store().set(report_key(workflow), entry, None)
    return entry


@shared_task(name=TASK_NAME, ignore_result=True)
def agreement_recompute(workflow: str) -> None:
    """The debounced recompute (see the module docstring). Idempotent."""
    if workflow not in Workflow.values:
        return
    store().delete(pending_key(workflow))  # changes from now on schedule the next recompute
    store().set(running_key(workflow), timezone.now().isoformat(), RUNNING_TIMEOUT)
    try:
        entry = recompute(workflow)
        logger.info("agreement cache: %s recomputed in %.2f s", workflow, entry["seconds"])
    finally:
        store().delete(running_key(workflow))


def recompute_delay(workflow: str) -> float:
    """Seconds from the first change of a quiet workflow to its recompute: DEBOUNCE_SECONDS, or COST_FACTOR times
    the last recompute's duration when that is longer."""
    last = (stored(workflow) or {}).get("seconds") or 0.0
    return max(DEBOUNCE_SECONDS, COST_FACTOR * float(last))


# ---------------------------------------------------------------------------------------------------- reading


def stored(workflow: str) -> dict | None:
    try:
        return store().get(report_key(workflow))
    except Exception:  # noqa: BLE001 - an unreadable entry counts as none
        logger.warning("agreement cache: cannot read the report of %s", workflow, exc_info=True)
        return None


def page_report(workflow: str) -> tuple[dict, dict]:
    """(report, status) for the admin page. ``status``: ``source`` ("inline", "precomputed" or "computed now"),
    ``computed_at`` (ISO text or None), ``stale`` (the decisions changed since), ``pending`` (a recompute is
    scheduled or running), ``seconds`` (what the computation took)."""
    fingerprint = agreement_data.decisions_fingerprint(workflow)
    n_decisions = int(fingerprint.split(":", 1)[0])
    if n_decisions <= INLINE_MAX_DECISIONS:
        report = agreement_data.workflow_agreement(workflow)
        return report, {"source": "inline", "computed_at": None, "stale": False, "pending": False, "seconds": None}
    panel_size = services.workflow_rule(workflow).panel_size
    entry = stored(workflow)
    if entry is None:
        entry = recompute(workflow)  # nothing stored yet: compute on demand, once
        source = "computed now"
    else:
        source = "precomputed"
    stale = entry["fingerprint"] != fingerprint or entry["panel_size"] != panel_size
    pending = False
    if stale:
        try:
            pending = bool(store().get(pending_key(workflow)) or store().get(running_key(workflow)))
        except Exception:  # noqa: BLE001
            pending = False
        if not pending:
            pending = schedule_recompute(workflow)
    status = {"source": source, "computed_at": entry["computed_at"], "stale": stale, "pending": pending,
              "seconds": entry.get("seconds")}
    return entry["report"], status


def clear(workflow: str | None = None) -> None:
    """Forget the stored reports and marks (of one workflow, or all)."""
    for value in ([workflow] if workflow else Workflow.values):
        store().delete_many([report_key(value), pending_key(value), running_key(value)])
