"""The pipeline page's funnel and dataset statistics, cached under a fingerprint of the rows they count.

Counting them reads every clip (100,000 at the scale the site is built for); the fingerprint reads three indexed
aggregates, so the page answers from the cache until something it counts has changed:

* videos: their count, largest id and latest creation time (admission is decided once, at ingest; the time tells
  apart two databases that reuse ids after a rollback, as tests do);
* stage runs: their count and latest ``updated_at`` (every stage write sets it: start, progress, finish, failure);
* clips: their count, largest id and latest creation time (a split replaces a video's clips with new rows);
* a generation number in the shared store, bumped by writes that change clips without a stage run:
  :func:`note_verdicts_changed` (re-evaluating verdicts under new thresholds).
"""
from __future__ import annotations

import hashlib
import logging

from django.db import transaction
from django.db.models import Count, Max

from datasets import selectors
from datasets.models import Clip, SourceVideo, StageRun
from microverse_site.shared_cache import db_key, shared_store

logger = logging.getLogger(__name__)

TIMEOUT = 24 * 3600  # an entry no fingerprint points at any more ages out


def _generation_key() -> str:
    return db_key("pipeline-overview:v1", "generation")


def fingerprint() -> str:
    try:
        generation = shared_store().get(_generation_key(), 0)
    except Exception:  # noqa: BLE001 - a store that is down only costs a recount
        generation = None
    parts = [
        SourceVideo.objects.aggregate(n=Count("pk"), last=Max("pk"), at=Max("created_at")),
        StageRun.objects.aggregate(n=Count("pk"), last=Max("updated_at")),
        Clip.objects.aggregate(n=Count("pk"), last=Max("pk"), at=Max("created_at")),
        generation,
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def pipeline_overview() -> dict:
    """``{"funnel": selectors.funnel(), "stats": selectors.dataset_statistics()}``, from the cache when nothing
    they count has changed since they were computed. Three queries when cached, nine when not."""
    key = db_key("pipeline-overview:v1", "data", fingerprint())
    try:
        cached = shared_store().get(key)
    except Exception:  # noqa: BLE001
        logger.warning("pipeline overview: the shared cache cannot be read; counting", exc_info=True)
        cached = None
    if cached is not None:
        return cached
    overview = {"funnel": selectors.funnel(), "stats": selectors.dataset_statistics()}
    try:
        shared_store().set(key, overview, TIMEOUT)
    except Exception:  # noqa: BLE001
        logger.warning("pipeline overview: the shared cache cannot be written", exc_info=True)
    return overview


def note_verdicts_changed() -> None:
    """Clips changed without a stage run (verdicts re-evaluated): the next page view counts again."""
    def bump():
        store, key = shared_store(), _generation_key()
        try:
            if not store.add(key, 1, None):
                store.incr(key)
        except Exception:  # noqa: BLE001
            logger.warning("pipeline overview: cannot mark the cached funnel stale", exc_info=True)

    transaction.on_commit(bump)
