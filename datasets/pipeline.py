"""The data pipeline's stages (split, classify, borders, text) per source video, and starting, cancelling, retrying
and re-evaluating them.

Each stage is a plain function of a video id, run by a thin Celery task (``datasets.tasks``) or in-process by
``manage.py run_pipeline``. Every stage is idempotent and safe to kill:

* **Claim.** A stage works only after moving its :class:`StageRun` QUEUED -> RUNNING with a conditional ``update()``
  (``attempts`` + 1). A message for a run that is DONE, FAILED or CANCELLED does nothing. A run found RUNNING is
  taken over (re-run from scratch, ``attempts`` + 1) only when its heartbeat is stale, i.e. its worker is gone; a
  RUNNING run whose heartbeat is fresh belongs to a live worker and the duplicate message does nothing.
* **Heartbeat.** While a stage runs, a thread touches ``StageRun.updated_at`` every ``HEARTBEAT_SECONDS``; a RUNNING
  run not touched for ``STALE_AFTER_SECONDS`` has lost its worker. :func:`pipeline_recover` (called when a worker
  starts, see ``datasets.tasks``) re-queues such runs: that is what "re-delivered" means here, on every broker (the
  filesystem broker has no visibility timeout, Redis's is an hour).
* **Ownership.** Progress writes, cancellation checks and the final commit are conditional on the run still being
  RUNNING with this attempt's number: a cancelled or taken-over attempt stops without writing results.
* **Replace, never append.** Split writes every clip file of an attempt under ``clips/<video>/<run>-<attempt>/``
  (and its sampled frames under ``clip-samples/<video>/<run>-<attempt>/``), then deletes the old clips and creates
  all new rows in one transaction; files of killed attempts (any file under ``clips/<video>/`` or
  ``clip-samples/<video>/`` that no clip row points to) are deleted when the next split starts. The measuring
  stages clear their own (and later stages') measurements before measuring.

Decoding, the costly part, happens once per video, in the split: ``scenes.detect_scenes`` decodes it to find the
cuts and hands over each kept clip's FRAMES_PER_CLIP evenly spaced sampled frames, which are stored once per clip
(``datasets.sample_frames``: lossless, at most 640 pixels wide, ``Clip.sample_frames``); the middle one
is the clip's thumbnail. The clip files are then cut without decoding: an H.264 MP4 source's packets are copied
(``datasets.clip_copy``: frame-exact by an edit list, the source's own pixels). Any other source (another codec,
10-bit, a WebM...) is re-encoded instead: :func:`_write_clips` writes every clip file and its middle-frame
thumbnail in one more forward decoding pass, through x264. The classify, borders and text stages read the stored
frames and decode nothing (a clip without stored frames, e.g. split before they were kept, is decoded as before),
and the text stage reads all of a video's clips with one Tesseract run (``ocr.measure_texts``).

Stages run in order; starting (or retrying) a stage also re-runs every later stage, whose input it changes. A clip
dropped by one stage is not sent to later ones. Measurements are stored raw; verdicts come from
``datasets.evaluation`` and the thresholds in ``settings.PIPELINE`` at the time they are computed, and
:func:`reevaluate_verdicts` recomputes them from stored measurements without decoding anything.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from annotation.services import log_action
from datasets.classifier_versions import active_classifier_dir
from datasets.models import Clip, SourceVideo, StageRun
from datasets.sample_frames import SAMPLE_MAX_WIDTH, decode_samples, encode_samples

logger = logging.getLogger(__name__)

Stage = StageRun.Stage
Status = StageRun.Status
STAGE_ORDER: tuple[str, ...] = (Stage.SPLIT, Stage.CLASSIFY, Stage.BORDERS, Stage.TEXT)
FINAL_STATUSES = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})
ACTIVE_STATUSES = frozenset({Status.QUEUED, Status.RUNNING})
PROGRESS_STEP = 0.05  # progress is written when it has moved by at least this much (bounded writes)
FRAME_BUFFER_BYTES = 256 * 1024 * 1024  # decoded frames held at once by a measuring stage
CLIP_ROOT = "clips"
SAMPLE_ROOT = "clip-samples"  # each clip's sampled frames, kept by the split for the measuring stages
SAMPLES_SUFFIX = ".samples.npz"
CLIP_FILE_FIELDS = ("file", "thumbnail", "sample_frames")

# The measurement fields each measuring stage writes.
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    Stage.CLASSIFY: ("micro_probability", "classifier_version"),
    Stage.BORDERS: ("border_top", "border_bottom", "border_left", "border_right"),
    Stage.TEXT: ("text_area_fraction", "text_found"),
}
VERDICT_FIELDS = ("verdict", "stopped_at_stage", "stop_reason")
_FIELD_EMPTY = {"classifier_version": "", "text_found": ""}


class PipelineError(ValueError):
    """A request the pipeline refuses (a refused video, a stage already running, nothing to retry...)."""


class StageStopped(Exception):
    """Raised inside a stage when its run was cancelled or taken over: stop without writing results."""


# ------------------------------------------------------------------------------------------------ settings


def conf(key: str, default, cast: Callable = float):
    """A pipeline setting: ``settings.PIPELINE[key]``; if the key is absent there, the environment variable
    ``PIPELINE_<key>``; else `default`."""
    pipeline = getattr(settings, "PIPELINE", {}) or {}
    if key in pipeline and pipeline[key] not in (None, ""):
        return cast(pipeline[key])
    raw = os.environ.get(f"PIPELINE_{key}", "")
    return cast(raw) if raw != "" else default


def heartbeat_seconds() -> float:
    return conf("HEARTBEAT_SECONDS", 10.0)


def stale_after_seconds() -> float:
    return conf("STALE_AFTER_SECONDS", 120.0)


def stages_from(stage: str) -> list[str]:
    if stage not in STAGE_ORDER:
        raise PipelineError(f"unknown stage {stage!r}: choose one of {', '.join(STAGE_ORDER)}")
    return list(STAGE_ORDER[STAGE_ORDER.index(stage):])


# ---------------------------------------------------------------------------------------- start/cancel/retry


def _reset_runs(video: SourceVideo, stages: list[str]) -> list[StageRun]:
    runs = []
    now = timezone.now()
    for stage in stages:
        run, _ = StageRun.objects.get_or_create(video=video, stage=stage)
        StageRun.objects.filter(pk=run.pk).update(
            status=Status.QUEUED, progress=0, clips_in=0, clips_out=0, error="", started_at=None, finished_at=None,
            updated_at=now)
        run.refresh_from_db()
        runs.append(run)
    return runs


def pipeline_prepare(*, video: SourceVideo, stages: Iterable[str] | None = None) -> list[StageRun]:
    """Validate a start request and reset the runs to QUEUED (without enqueueing anything). `stages`: the stages
    asked for; the run starts at the earliest of them and goes on through every later stage. Call inside a
    transaction."""
    if video.admission != SourceVideo.Admission.ADMITTED:
        raise PipelineError(f"video {video.pk} was refused at admission ({video.admission_reason or 'no reason'}); "
                            "the pipeline runs only on admitted videos")
    wanted = list(stages) if stages else [STAGE_ORDER[0]]
    unknown = [s for s in wanted if s not in STAGE_ORDER]
    if unknown:
        raise PipelineError(f"unknown stage {unknown[0]!r}: choose from {', '.join(STAGE_ORDER)}")
    first = min(STAGE_ORDER.index(s) for s in wanted)
    runs = {r.stage: r for r in StageRun.objects.select_for_update().filter(video=video)}
    busy = [r.stage for r in runs.values() if r.status in ACTIVE_STATUSES]
    if busy:
        raise PipelineError(f"the {', '.join(busy)} stage of video {video.pk} is still queued or running: "
                            "wait for it or cancel it first")
    for earlier in STAGE_ORDER[:first]:
        if earlier not in runs or runs[earlier].status != Status.DONE:
            raise PipelineError(f"the {earlier} stage of video {video.pk} has not finished: start from it instead")
    return _reset_runs(video, list(STAGE_ORDER[first:]))


def _enqueue(video_id: int, stages: list[str]) -> None:
    from datasets.tasks import enqueue_stages

    enqueue_stages(video_id, stages)


def pipeline_start(*, video: SourceVideo, user, stages: Iterable[str] | None = None,
                   request_id: str = "") -> list[StageRun]:
    """Queue the pipeline for an admitted video: its StageRuns are (re)set QUEUED and the chain of stage tasks is
    sent when the transaction commits. Starting a stage re-runs every later stage too."""
    with transaction.atomic():
        runs = pipeline_prepare(video=video, stages=stages)
        names = [r.stage for r in runs]
        log_action(actor=user, verb="pipeline_start", workflow="pipeline", target=video, after={"stages": names},
                   request_id=request_id)
        transaction.on_commit(lambda: _enqueue(video.pk, names))
    return runs


def pipeline_cancel(*, video: SourceVideo, user, request_id: str = "") -> int:
    """Mark the video's queued and running stages CANCELLED; a running stage notices between clips and stops
    without writing results. Returns how many runs were cancelled."""
    with transaction.atomic():
        active = list(StageRun.objects.select_for_update().filter(video=video, status__in=ACTIVE_STATUSES)
                      .values_list("stage", flat=True))
        if not active:
            raise PipelineError(f"video {video.pk} has no queued or running stage to cancel")
        now = timezone.now()
        count = StageRun.objects.filter(video=video, status__in=ACTIVE_STATUSES).update(
            status=Status.CANCELLED, finished_at=now, updated_at=now, error="cancelled by " + _who(user))
        log_action(actor=user, verb="pipeline_cancel", workflow="pipeline", target=video,
                   after={"stages": sorted(active, key=STAGE_ORDER.index)}, request_id=request_id)
    return count


def pipeline_retry(*, video: SourceVideo, user, request_id: str = "") -> list[StageRun]:
    """Re-queue from the first failed or cancelled stage (and every stage after it)."""
    with transaction.atomic():
        runs = {r.stage: r for r in StageRun.objects.select_for_update().filter(video=video)}
        if any(r.status in ACTIVE_STATUSES for r in runs.values()):
            raise PipelineError(f"video {video.pk} still has a queued or running stage")
        first = next((s for s in STAGE_ORDER if s in runs and runs[s].status in (Status.FAILED, Status.CANCELLED)),
                     None)
        if first is None:
            raise PipelineError(f"video {video.pk} has no failed or cancelled stage to retry")
        reset = pipeline_prepare(video=video, stages=[first])
        names = [r.stage for r in reset]
        log_action(actor=user, verb="pipeline_retry", workflow="pipeline", target=video,
                   before={s: runs[s].status for s in names if s in runs}, after={"stages": names},
                   request_id=request_id)
        transaction.on_commit(lambda: _enqueue(video.pk, names))
    return reset


def _who(user) -> str:
    return getattr(user, "username", "") or "the system"


def pipeline_recover(*, stale_after: float | None = None) -> tuple[list[StageRun], float | None]:
    """Re-queue RUNNING stage runs whose worker is gone (no heartbeat for `stale_after` seconds), with every later
    stage of their video that is still queued. Returns the re-queued runs and, when RUNNING runs with a fresh
    heartbeat remain, how many seconds until the oldest of them would turn stale (so the caller can look again),
    else None."""
    stale_after = stale_after_seconds() if stale_after is None else stale_after
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_after)
    requeued, next_check = [], None
    for run in StageRun.objects.filter(status=Status.RUNNING).order_by("pk"):
        if run.updated_at >= cutoff:
            wait = (run.updated_at - cutoff).total_seconds()
            next_check = wait if next_check is None else min(next_check, wait)
            continue
        with transaction.atomic():
            taken = StageRun.objects.filter(pk=run.pk, status=Status.RUNNING, updated_at=run.updated_at).update(
                status=Status.QUEUED, progress=0, updated_at=now,
                error=f"re-queued: attempt {run.attempts} lost its worker (no heartbeat for {stale_after:.0f} s)")
            if not taken:
                continue
            later = list(StageRun.objects.filter(video_id=run.video_id, status=Status.QUEUED,
                                                 stage__in=STAGE_ORDER[STAGE_ORDER.index(run.stage) + 1:])
                         .values_list("stage", flat=True))
            names = [run.stage] + sorted(later, key=STAGE_ORDER.index)
            log_action(actor=None, verb="pipeline_requeue", workflow="pipeline",
                       target=SourceVideo(pk=run.video_id),
                       before={"stage": run.stage, "attempt": run.attempts}, after={"stages": names})
            transaction.on_commit(lambda v=run.video_id, n=names: _enqueue(v, n))
        logger.warning("re-queued the %s stage of video %s: attempt %s lost its worker", run.stage, run.video_id,
                       run.attempts)
        requeued.append(run)
    return requeued, next_check


# ------------------------------------------------------------------------------------------ claim, heartbeat


def _previous_done(video_id: int, stage: str) -> bool:
    index = STAGE_ORDER.index(stage)
    if index == 0:
        return True
    earlier = dict(StageRun.objects.filter(video_id=video_id, stage__in=STAGE_ORDER[:index])
                   .values_list("stage", "status"))
    return all(earlier.get(s) == Status.DONE for s in STAGE_ORDER[:index])


def _claim(video_id: int, stage: str) -> StageRun | None:
    """Move the run QUEUED -> RUNNING (or take over a RUNNING one whose worker is gone); None: nothing to do."""
    if not _previous_done(video_id, stage):
        # An earlier stage is still being worked on (a duplicate message overtook it) or failed: the chain that
        # owns the earlier stage runs this one after it.
        logger.info("%s stage of video %s: an earlier stage is not done; nothing to do", stage, video_id)
        return None
    now = timezone.now()
    run = StageRun.objects.filter(video_id=video_id, stage=stage).first()
    if run is None:
        return None
    fields = {"status": Status.RUNNING, "started_at": now, "finished_at": None, "updated_at": now, "progress": 0,
              "error": ""}
    if run.status == Status.QUEUED:
        taken = StageRun.objects.filter(pk=run.pk, status=Status.QUEUED, attempts=run.attempts).update(
            attempts=run.attempts + 1, **fields)
    elif run.status == Status.RUNNING and run.updated_at < now - timedelta(seconds=stale_after_seconds()):
        # Re-delivered after its worker died mid-run: redo it from scratch as a new attempt.
        taken = StageRun.objects.filter(pk=run.pk, status=Status.RUNNING, attempts=run.attempts,
                                        updated_at=run.updated_at).update(attempts=run.attempts + 1, **fields)
        if taken:
            logger.warning("taking over the %s stage of video %s from attempt %s (its worker is gone)", stage,
                           video_id, run.attempts)
    else:
        return None
    if not taken:
        return None
    return StageRun.objects.get(pk=run.pk)


class _Heartbeat:
    """Touches the run's updated_at every HEARTBEAT_SECONDS from a thread, while this attempt owns it."""

    def __init__(self, run: StageRun):
        self.run_id, self.attempt = run.pk, run.attempts
        self.interval = heartbeat_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"stage-heartbeat-{run.pk}", daemon=True)

    def _loop(self):
        try:
            while not self._stop.wait(self.interval):
                try:
                    StageRun.objects.filter(pk=self.run_id, status=Status.RUNNING, attempts=self.attempt).update(
                        updated_at=timezone.now())
                except Exception:  # noqa: BLE001 - a missed beat is retried; the stage itself reports errors
                    logger.exception("heartbeat of stage run %s failed", self.run_id)
                    close_old_connections()
        finally:
            connection.close()

    def __enter__(self):
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 30)
        return False


_progress_listeners: list[Callable[[StageRun, float], None]] = []


@contextmanager
def progress_listener(callback: Callable[[StageRun, float], None]) -> Iterator[None]:
    """Call ``callback(run, progress)`` after every progress write of stages run in this process (the
    ``run_pipeline`` command prints them)."""
    _progress_listeners.append(callback)
    try:
        yield
    finally:
        _progress_listeners.remove(callback)


class _Attempt:
    """This attempt's view of its run: ownership checks, bounded progress writes."""

    def __init__(self, run: StageRun):
        self.run = run
        self.pk, self.number = run.pk, run.attempts
        self.written_progress = 0.0

    def _mine(self):
        return StageRun.objects.filter(pk=self.pk, status=Status.RUNNING, attempts=self.number)

    def check(self) -> None:
        """Raise StageStopped if the run was cancelled or taken over."""
        if not self._mine().exists():
            raise StageStopped()

    def progress(self, value: float, *, force: bool = False, **counts) -> None:
        value = max(0.0, min(1.0, value))
        if not force and not counts and value - self.written_progress < PROGRESS_STEP:
            return
        if not self._mine().update(progress=value, updated_at=timezone.now(), **counts):
            raise StageStopped()
        self.written_progress = value
        for callback in list(_progress_listeners):
            callback(self.run, value)

    def finish(self, **fields) -> None:
        """Mark DONE inside the caller's transaction; StageStopped if no longer this attempt's run."""
        locked = StageRun.objects.select_for_update().filter(pk=self.pk, status=Status.RUNNING,
                                                             attempts=self.number)
        if not locked.exists():
            raise StageStopped()
        now = timezone.now()
        locked.update(status=Status.DONE, progress=1.0, finished_at=now, updated_at=now, **fields)
        for callback in list(_progress_listeners):
            callback(self.run, 1.0)


@contextmanager
def _running(run: StageRun) -> Iterator[_Attempt]:
    """Heartbeat while the stage runs; record FAILED (and skip the later queued stages) if it raises."""
    attempt = _Attempt(run)
    with _Heartbeat(run):
        try:
            yield attempt
        except StageStopped:
            logger.info("%s stage of video %s (attempt %s) stopped: cancelled or taken over", run.stage,
                        run.video_id, attempt.number)
        except Exception as exc:
            _record_failure(attempt, exc)
            raise


def _record_failure(attempt: _Attempt, exc: Exception) -> None:
    run = attempt.run
    message = f"{type(exc).__name__}: {exc}"[:4000]
    now = timezone.now()
    with transaction.atomic():
        if attempt._mine().update(status=Status.FAILED, error=message, finished_at=now, updated_at=now):
            later = STAGE_ORDER[STAGE_ORDER.index(run.stage) + 1:]
            StageRun.objects.filter(video_id=run.video_id, stage__in=later, status=Status.QUEUED).update(
                status=Status.CANCELLED, finished_at=now, updated_at=now,
                error=f"not run: the {run.stage} stage failed")


# ------------------------------------------------------------------------------------------------- storage


@contextmanager
def local_video_path(fieldfile) -> Iterator[str]:
    """A local filesystem path of a stored file: the file itself on local storage, else a temporary copy."""
    try:
        path = fieldfile.path
    except (NotImplementedError, AttributeError):
        path = None
    if path:
        yield path
        return
    suffix = Path(fieldfile.name).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as copy:
        with fieldfile.open("rb") as source:
            shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.flush()
        yield copy.name


def clip_prefix(video_id: int, run_id: int, attempt: int) -> str:
    return f"{CLIP_ROOT}/{video_id}/{run_id}-{attempt}/"


def sample_prefix(video_id: int, run_id: int, attempt: int) -> str:
    return f"{SAMPLE_ROOT}/{video_id}/{run_id}-{attempt}/"


def _storage_walk(prefix: str) -> list[str]:
    """Every file name under `prefix` (a folder name ending in "/") in the default storage."""
    try:
        folders, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [prefix + f for f in files]
    for folder in folders:
        names.extend(_storage_walk(f"{prefix}{folder}/"))
    return names


def stored_clip_files(video_id: int) -> list[str]:
    """Every file stored under the video's clip folder (``clips/<video>/``)."""
    return sorted(_storage_walk(f"{CLIP_ROOT}/{video_id}/"))


def stored_sample_files(video_id: int) -> list[str]:
    """Every file stored under the video's sampled-frames folder (``clip-samples/<video>/``)."""
    return sorted(_storage_walk(f"{SAMPLE_ROOT}/{video_id}/"))


def _delete_files(names: Iterable[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except FileNotFoundError:
            pass
    _remove_empty_local_folders()


def _remove_empty_local_folders() -> None:
    root = getattr(default_storage, "location", None)
    if not root:
        return
    for base in (Path(root) / CLIP_ROOT, Path(root) / SAMPLE_ROOT):
        if not base.is_dir():
            continue
        for folder in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass


def _remove_orphan_clip_files(video_id: int, keep: Iterable[str] = ()) -> list[str]:
    """Delete files under ``clips/<video>/`` and ``clip-samples/<video>/`` that no clip row of the video points to
    (a killed attempt's)."""
    referenced = set(keep)
    for names in Clip.objects.filter(video_id=video_id).values_list(*CLIP_FILE_FIELDS):
        referenced.update(n for n in names if n)
    orphans = [name for name in stored_clip_files(video_id) + stored_sample_files(video_id)
               if name not in referenced]
    if orphans:
        logger.info("deleting %d clip files of video %s left by an unfinished attempt", len(orphans), video_id)
        _delete_files(orphans)
    return orphans


# ------------------------------------------------------------------------------------------------- verdicts


def current_thresholds():
    from datasets import evaluation

    return evaluation.Thresholds.from_settings()


def _borders_of(clip: Clip):
    from datasets.borders import BorderResult

    if clip.border_top is None:
        return None
    return BorderResult(top=clip.border_top, bottom=clip.border_bottom, left=clip.border_left,
                        right=clip.border_right)


def clip_verdict(clip: Clip, thresholds, *, final: bool) -> tuple[str, str, str]:
    """(verdict, stopped_at_stage, stop_reason) of a clip from its stored measurements (``evaluation.verdict``).
    `final`: the video's last stage is done, so a clip still missing a measurement was never sent to that stage
    (it was dropped earlier under other thresholds) and the reason says to run the pipeline again from there."""
    from datasets import evaluation

    verdict, stage, reason = evaluation.verdict(
        micro_probability=clip.micro_probability, borders=_borders_of(clip),
        text_area_fraction=clip.text_area_fraction, thresholds=thresholds, text_found=clip.text_found)
    if verdict == Clip.Verdict.PENDING and final:
        missing = next(s for s, field in ((Stage.BORDERS, "border_top"), (Stage.TEXT, "text_area_fraction"))
                       if getattr(clip, field) is None)
        reason = (f"not measured by the {missing} stage (the clip was dropped before it under other thresholds): "
                  f"run the pipeline again from {missing}")
    return verdict, stage, reason


def _apply_verdict(clip: Clip, thresholds, *, final: bool) -> bool:
    """Set the clip's verdict fields; True if they changed."""
    new = clip_verdict(clip, thresholds, final=final)
    old = (clip.verdict, clip.stopped_at_stage, clip.stop_reason)
    clip.verdict, clip.stopped_at_stage, clip.stop_reason = new
    return new != old


def reevaluate_verdicts(*, video: SourceVideo | None = None, thresholds=None) -> dict[str, int]:
    """Recompute every clip's verdict (of `video`, or all videos) from stored measurements and the current
    thresholds; nothing is decoded. Returns counts: clips, changed, kept, dropped, pending."""
    thresholds = thresholds or current_thresholds()
    clips = Clip.objects.all() if video is None else Clip.objects.filter(video=video)
    final_videos = set(StageRun.objects.filter(stage=STAGE_ORDER[-1], status=Status.DONE)
                       .values_list("video_id", flat=True))
    counts = {"clips": 0, "changed": 0, "kept": 0, "dropped": 0, "pending": 0}
    batch = []
    with transaction.atomic():
        for clip in clips.order_by("pk").iterator(chunk_size=2000):
            counts["clips"] += 1
            if _apply_verdict(clip, thresholds, final=clip.video_id in final_videos):
                counts["changed"] += 1
                batch.append(clip)
            counts[clip.verdict] += 1
            if len(batch) >= 500:
                Clip.objects.bulk_update(batch, VERDICT_FIELDS)
                batch = []
        if batch:
            Clip.objects.bulk_update(batch, VERDICT_FIELDS)
        if counts["changed"]:
            from datasets.overview_cache import note_verdicts_changed  # it reads this module's stage names

            note_verdicts_changed()
    return counts


def pipeline_reevaluate(*, user, video: SourceVideo | None = None, request_id: str = "") -> dict[str, int]:
    """:func:`reevaluate_verdicts` with its action-log row."""
    with transaction.atomic():
        counts = reevaluate_verdicts(video=video)
        log_action(actor=user, verb="pipeline_reevaluate", workflow="pipeline", target=video,
                   after={**counts, "thresholds": _thresholds_dict()}, request_id=request_id)
    return counts


def _thresholds_dict() -> dict:
    keys = ("CLASSIFIER_THRESHOLD", "BORDER_MAX_FRACTION", "TEXT_MAX_AREA_FRACTION")
    return {k: settings.PIPELINE.get(k) for k in keys}


# ------------------------------------------------------------------------------------------------- stages


def _refuse_resplit_of_reviewed_clips(video: SourceVideo) -> None:
    """A re-split replaces every clip; refuse it once experts have decided on a clip or a snapshot froze one."""
    from django.contrib.contenttypes.models import ContentType

    from annotation.models import Decision
    from datasets.models import SnapshotItem

    clip_ids = list(Clip.objects.filter(video=video).values_list("pk", flat=True))
    if not clip_ids:
        return
    in_snapshots = sorted(set(SnapshotItem.objects.filter(clip_id__in=clip_ids)
                              .values_list("snapshot__name", flat=True)))
    if in_snapshots:
        raise ValueError(f"clips of this video are frozen in snapshot(s) {', '.join(in_snapshots)}; "
                         "a re-split would replace them")
    reviewed = Decision.objects.filter(item__content_type=ContentType.objects.get_for_model(Clip),
                                       item__object_id__in=clip_ids).count()
    if reviewed:
        raise ValueError(f"experts have made {reviewed} decision(s) on this video's clips; a re-split would "
                         "discard them")


def stage_split(*, video_id: int) -> StageRun | None:
    """Cut the video into clips where adjacent sampled frames' embeddings differ (``datasets.scenes``), store each
    clip's sampled frames, write each clip (H.264 MP4: copied packets, or re-encoded) and a thumbnail, then
    replace the video's clips in one transaction."""
    run = _claim(video_id, Stage.SPLIT)
    if run is None:
        return None
    with _running(run) as attempt:
        _split(attempt, SourceVideo.objects.get(pk=video_id))
    return StageRun.objects.get(pk=run.pk)


def _split(attempt: _Attempt, video: SourceVideo) -> None:
    from datasets import clip_copy, embedders, scenes, video_io

    pipeline = settings.PIPELINE
    _refuse_resplit_of_reviewed_clips(video)
    _remove_orphan_clip_files(video.pk)
    prefix = clip_prefix(video.pk, attempt.pk, attempt.number)
    samples_prefix = sample_prefix(video.pk, attempt.pk, attempt.number)
    sleep_per_clip = conf("TEST_SLEEP_PER_CLIP", 0.0)
    per_clip = int(pipeline["FRAMES_PER_CLIP"])
    written: list[str] = []
    try:
        with local_video_path(video.file) as source, tempfile.TemporaryDirectory(prefix="split-") as work:
            embedder = embedders.embedder_from_settings(pipeline["OPENCLIP_WEIGHTS"], pipeline["OPENCLIP_MODEL"])
            copy_refusal = (clip_copy.copy_refusal(source) if pipeline["COPY_CLIPS"]
                            else "clip copying is off (PIPELINE_COPY_CLIPS)")
            total_frames = max(1, video.frame_count)
            samples: dict[int, str] = {}  # start frame of a kept clip -> its stored sample frames
            thumbnails: dict[int, Path] = {}  # start frame of a kept clip -> its thumbnail (copied clips)
            kept = [0]  # kept clips so far: the next one's position

            def decoded(frames: int) -> None:  # after each batch of samples: progress, and stop if cancelled
                attempt.check()
                attempt.progress(0.3 * min(1.0, frames / total_frames))

            def keep_samples(segment, frames) -> None:  # each kept clip's frames, stored for the later stages
                if segment.too_short:
                    return
                attempt.check()
                kept[0] += 1
                if not frames:  # none sampled (a clip shorter than the sampling interval): decoded when measured
                    return
                name = f"{kept[0] - 1:04d}_{segment.start_frame}-{segment.end_frame}"
                samples[segment.start_frame] = _save_bytes(samples_prefix + name + SAMPLES_SUFFIX,
                                                           encode_samples(frames), written)
                if not copy_refusal:  # copying decodes nothing: the middle sampled frame is the thumbnail
                    thumbnails[segment.start_frame] = Path(work) / f"{name}.jpg"
                    video_io.write_thumbnail(frames[len(frames) // 2], thumbnails[segment.start_frame])

            result = scenes.detect_scenes(source, embedder=embedder, sample_fps=pipeline["SAMPLE_FPS"],
                                          threshold=pipeline["SPLIT_THRESHOLD"],
                                          min_clip_seconds=pipeline["MIN_CLIP_SECONDS"],
                                          frames_per_segment=per_clip if per_clip > 0 else 0,
                                          on_segment=keep_samples if per_clip > 0 else None,
                                          on_progress=decoded, sample_max_width=SAMPLE_MAX_WIDTH)
            spans = [(int(s), int(e)) for s, e in result.clips]
            attempt.progress(0.3, force=True, clips_in=len(result.segments))
            fps = float(result.fps or video.fps)
            rows = []
            clip_files = _clip_files(video, source, spans, fps, Path(work), result.frame_count, copy_refusal,
                                     thumbnails)
            for position, (start, end), local_clip, local_thumb in clip_files:
                attempt.check()
                clip_name = _save(prefix + local_clip.name, local_clip, written)
                thumb_name = _save(prefix + local_thumb.name, local_thumb, written)
                rows.append(Clip(video=video, position=position, start_frame=start, end_frame=end, fps=fps,
                                 file=clip_name, thumbnail=thumb_name, sample_frames=samples.get(start, ""),
                                 embedder=result.embedder))
                if sleep_per_clip:
                    time.sleep(sleep_per_clip)
                attempt.progress(0.3 + 0.65 * (position + 1) / max(1, len(spans)))
        old_files: list[str] = []
        with transaction.atomic():
            attempt.check()
            for names in Clip.objects.filter(video=video).values_list(*CLIP_FILE_FIELDS):
                old_files.extend(n for n in names if n)
            attempt.finish(clips_out=len(rows))
            Clip.objects.filter(video=video).delete()
            Clip.objects.bulk_create(rows)
            transaction.on_commit(lambda: _delete_files(
                n for n in old_files if not (n.startswith(prefix) or n.startswith(samples_prefix))))
    except BaseException:
        # Cancelled, taken over or failed before the rows were committed: this attempt's files are orphans.
        if not Clip.objects.filter(video=video, file__startswith=prefix).exists():
            _delete_files(written)
        raise


def _clip_files(video: SourceVideo, source: str, spans: list[tuple[int, int]], fps: float, folder: Path,
                frame_count: int, copy_refusal: str | None,
                thumbnails: dict[int, Path]) -> Iterator[tuple[int, tuple[int, int], Path, Path]]:
    """The clip files and thumbnails: copied (:func:`_copy_clips`) when the source allows it, else re-encoded
    (:func:`_write_clips`)."""
    from datasets import clip_copy

    index = plans = None
    if not copy_refusal:
        try:
            index = clip_copy.packet_index(source)
            if index.frame_count != frame_count:
                raise clip_copy.CannotCopy(f"the file has {index.frame_count} frames' packets but {frame_count} "
                                           "frames decode")
            plans = clip_copy.plan_clips(index, spans)
        except clip_copy.CannotCopy as refusal:
            copy_refusal = str(refusal)
    if copy_refusal:
        logger.info("video %s: clips are re-encoded: %s", video.pk, copy_refusal)
        return _write_clips(source, spans, fps, folder)
    return _copy_clips(source, spans, folder, thumbnails, index, plans)


def _copy_clips(source: str, spans: list[tuple[int, int]], folder: Path, thumbnails: dict[int, Path],
                index, plans) -> Iterator[tuple[int, tuple[int, int], Path, Path]]:
    """Each span ``[start, end)`` as an MP4 of the source's own H.264 packets (``clip_copy``: nothing decoded or
    re-encoded, frame-exact), with the thumbnail the split made from the clip's middle sampled frame (a clip with
    none: its middle frame, decoded from the clip file). Yields what :func:`_write_clips` yields."""
    from datasets import clip_copy, video_io

    for position, copied in clip_copy.copy_clips(source, spans, folder / "copied", index=index, plans=plans):
        start, end = spans[position]
        stem = f"{position:04d}_{start}-{end}"
        clip = copied.rename(folder / f"{stem}.mp4")
        thumbnail = thumbnails.get(start)
        if thumbnail is None:
            thumbnail = folder / f"{stem}.jpg"
            video_io.write_thumbnail(video_io.read_frames(clip, [(end - start - 1) // 2])[0], thumbnail)
        yield position, (start, end), clip, thumbnail


def _write_clips(source: str, spans: list[tuple[int, int]], fps: float,
                 folder: Path) -> Iterator[tuple[int, tuple[int, int], Path, Path]]:
    """Write each span ``[start, end)`` of the video as an H.264 MP4 (exactly those frames, as
    ``video_io.write_clip`` does) and its middle frame ``(start + end - 1) // 2`` as a JPEG thumbnail, in ONE
    forward decoding pass over the video (``video_io.iter_frames``); yields ``(position, span, clip, thumbnail)``
    as each clip is complete. A clip file is written under a temporary name and renamed when whole; closing the
    generator early stops its encoder and removes the partial file. Raises ``UnreadableVideo`` if the video ends
    before the last span does."""
    from datasets import video_io

    if not spans:
        return
    order = sorted(range(len(spans)), key=lambda k: spans[k][0])
    pipe = temp = None
    at = 0  # the index in `order` of the clip being written
    written = 0
    frames = video_io.iter_frames(source, start=spans[order[0]][0], end=max(e for _, e in spans))
    try:
        for index, frame in frames:
            if at >= len(order):
                break
            position = order[at]
            start, end = spans[position]
            if index < start:
                continue  # a gap between clips: a segment too short to keep
            stem = f"{position:04d}_{start}-{end}"
            if pipe is None:
                temp = video_io._temp_beside(folder / f"{stem}.mp4", ".mp4")
                pipe = video_io.H264Writer(temp, width=frame.shape[1], height=frame.shape[0], fps=fps)
                written = 0
            pipe.write(frame)
            written += 1
            if index == (start + end - 1) // 2:
                video_io.write_thumbnail(frame, folder / f"{stem}.jpg")
            if index == end - 1:
                if written != end - start:
                    raise video_io.UnreadableVideo(
                        f"Frames {start}..{end - 1} cannot all be decoded: only {written} were.")
                pipe.close()
                pipe = None
                os.replace(temp, folder / f"{stem}.mp4")
                temp = None
                at += 1
                yield position, (start, end), folder / f"{stem}.mp4", folder / f"{stem}.jpg"
        if at < len(order):
            start, end = spans[order[at]]
            raise video_io.UnreadableVideo(f"Frames {start}..{end - 1} cannot all be decoded: the video ends first.")
    finally:
        frames.close()
        if pipe is not None:
            pipe.abort()
        if temp is not None:
            temp.unlink(missing_ok=True)


def _save(name: str, local: Path, written: list[str]) -> str:
    with open(local, "rb") as handle:
        saved = default_storage.save(name, File(handle, name=local.name))
    written.append(saved)
    local.unlink(missing_ok=True)
    return saved


def _save_bytes(name: str, data: bytes, written: list[str]) -> str:
    saved = default_storage.save(name, ContentFile(data, name=Path(name).name))
    written.append(saved)
    return saved


# ---------------------------------------------------------------------------------------- sampled frames


def read_samples(clip: Clip) -> list[np.ndarray]:
    with default_storage.open(clip.sample_frames.name, "rb") as handle:
        return decode_samples(handle.read())


def sample_indices(start: int, end: int, count: int) -> list[int]:
    """`count` evenly spaced frame numbers in [start, end) (the middle of `count` equal parts); fewer if the clip
    is shorter."""
    length = end - start
    n = max(0, min(count, length))
    return [start + int((i + 0.5) * length / n) for i in range(n)]


def _frames_per_clip(clips: list[Clip], source: str, width: int, height: int) -> Iterator[tuple[Clip, list]]:
    """Each clip with its FRAMES_PER_CLIP sampled frames, decoded in order in one forward pass over the video,
    holding at most FRAME_BUFFER_BYTES of frames at once."""
    from datasets import video_io

    per_clip = settings.PIPELINE["FRAMES_PER_CLIP"]
    frame_bytes = max(1, width * height * 3)
    budget = max(per_clip, FRAME_BUFFER_BYTES // frame_bytes)
    chunk: list[tuple[Clip, list[int]]] = []
    count = 0

    def flush():
        indices = [i for _, wanted in chunk for i in wanted]
        frames = video_io.read_frames(source, indices)
        at = 0
        for clip, wanted in chunk:
            yield clip, frames[at:at + len(wanted)]
            at += len(wanted)

    for clip in sorted(clips, key=lambda c: c.start_frame):
        wanted = sample_indices(clip.start_frame, clip.end_frame, per_clip)
        if chunk and count + len(wanted) > budget:
            yield from flush()
            chunk, count = [], 0
        chunk.append((clip, wanted))
        count += len(wanted)
    if chunk:
        yield from flush()


def _clip_frames(clips: list[Clip], video: SourceVideo) -> Iterator[tuple[Clip, list]]:
    """Each clip with its sampled frames: the ones the split stored (no decoding), else (a clip split before
    frames were stored, or whose file is gone) FRAMES_PER_CLIP frames decoded from the video in one pass."""
    missing = []
    for clip in clips:
        frames = None
        if clip.sample_frames:
            try:
                frames = read_samples(clip)
            except (OSError, ValueError) as error:
                logger.warning("clip %s: stored sample frames unreadable (%s): decoding the video", clip.pk, error)
        if frames:
            yield clip, frames
        else:
            missing.append(clip)
    if missing:
        with local_video_path(video.file) as source:
            yield from _frames_per_clip(missing, source, video.width, video.height)


def _measure_classify(batch, tools) -> None:
    for frames, clip in batch:
        clip.micro_probability = float(tools.predict(frames))
        clip.classifier_version = tools.version[:80]


def _measure_borders(batch, tools) -> None:
    for frames, clip in batch:
        result = tools(frames)
        clip.border_top, clip.border_bottom = float(result.top), float(result.bottom)
        clip.border_left, clip.border_right = float(result.left), float(result.right)


def _measure_text(batch, tools) -> None:
    results = tools([frames for frames, _ in batch])  # one Tesseract run for the whole batch
    for (_, clip), result in zip(batch, results, strict=True):
        clip.text_area_fraction = float(result.area_fraction)
        clip.text_found = (result.text or "")[:10000]


def _stage_tools(stage: str):
    """The measuring function's model or function for a stage; None for classify without a configured model."""
    if stage == Stage.CLASSIFY:
        from datasets import classifier

        return classifier.classifier_from_settings(active_classifier_dir())
    if stage == Stage.BORDERS:
        from datasets.borders import measure_borders

        return measure_borders
    from datasets.ocr import measure_texts

    return measure_texts


MEASURE = {Stage.CLASSIFY: _measure_classify, Stage.BORDERS: _measure_borders, Stage.TEXT: _measure_text}
# Clips measured together: the text stage reads all the clips of a batch in one Tesseract run, so its batches are
# as large as FRAME_BUFFER_BYTES allows; the others measure clip by clip.
BATCHED_STAGES = frozenset({Stage.TEXT})


def _measure_stage(video_id: int, stage: str) -> StageRun | None:
    run = _claim(video_id, stage)
    if run is None:
        return None
    with _running(run) as attempt:
        _measure(attempt, SourceVideo.objects.get(pk=video_id), stage)
    return StageRun.objects.get(pk=run.pk)


def _measure(attempt: _Attempt, video: SourceVideo, stage: str) -> None:
    thresholds = current_thresholds()
    later = STAGE_ORDER[STAGE_ORDER.index(stage):]
    cleared = [f for s in later for f in STAGE_FIELDS.get(s, ())]
    clips = list(Clip.objects.filter(video=video).order_by("position"))
    for clip in clips:  # this stage's and later stages' old results go; verdicts from the earlier stages only
        for field in cleared:
            setattr(clip, field, _FIELD_EMPTY.get(field))
        _apply_verdict(clip, thresholds, final=False)
    sent = [c for c in clips if c.verdict != Clip.Verdict.DROPPED]
    attempt.progress(0.0, force=True, clips_in=len(sent))
    tools = _stage_tools(stage)
    if tools is None:
        # No classifier configured: the clips stay unclassified (micro_probability empty) for the experts.
        logger.info("no classifier configured (PIPELINE CLASSIFIER_DIR): clips of video %s stay unclassified",
                    video.pk)
    elif sent:
        # Results stay in memory until the final commit: a cancelled or killed attempt writes nothing.
        done, batch, held = 0, [], 0

        def measure(batch):
            attempt.check()
            MEASURE[stage](batch, tools)
            attempt.progress(0.95 * (done + len(batch)) / len(sent))
            return len(batch)

        for clip, frames in _clip_frames(sent, video):
            batch.append((frames, clip))
            held += sum(f.nbytes for f in frames)
            if stage not in BATCHED_STAGES or held >= FRAME_BUFFER_BYTES:
                done += measure(batch)
                batch, held = [], 0
        if batch:
            done += measure(batch)
    final = stage == STAGE_ORDER[-1]
    for clip in clips:
        _apply_verdict(clip, thresholds, final=final)
    survivors = sum(1 for c in sent if c.stopped_at_stage != stage)
    with transaction.atomic():
        attempt.finish(clips_out=survivors)
        Clip.objects.bulk_update(clips, [*cleared, *VERDICT_FIELDS], batch_size=500)


def stage_classify(*, video_id: int) -> StageRun | None:
    """p(micro) per clip from FRAMES_PER_CLIP frames (``datasets.classifier``); without a configured model the
    clips stay unclassified (micro_probability empty) and go on to the next stage."""
    return _measure_stage(video_id, Stage.CLASSIFY)


def stage_borders(*, video_id: int) -> StageRun | None:
    """Black border fractions per clip (``datasets.borders``)."""
    return _measure_stage(video_id, Stage.BORDERS)


def stage_text(*, video_id: int) -> StageRun | None:
    """Burned-in text area per clip (``datasets.ocr``); the last stage, so surviving clips become KEPT."""
    return _measure_stage(video_id, Stage.TEXT)


STAGE_FUNCTIONS: dict[str, Callable[..., StageRun | None]] = {
    Stage.SPLIT: stage_split, Stage.CLASSIFY: stage_classify, Stage.BORDERS: stage_borders, Stage.TEXT: stage_text,
}
