"""Judge runs: a model under test's videos judged by an MLLM, one call per task and rubric dimension (services).

* :func:`judge_run_create` - a run (model under test, rubric label, judge model, endpoint, frames per video,
  concurrency, prompt version) and its :class:`~judging.models.Judgement` rows: PENDING for every (task with an ``ok``
  video, dimension), FLAGGED "no video: ..." for tasks whose video is missing or unreadable (so they show as not
  judged). Idempotent: calling it again with the same parameters returns the same run and only adds what is missing
  (a video registered since then turns its "no video" rows back into PENDING ones). ``new=True`` starts a fresh run.
* :func:`judge_one` - claims one PENDING judgement, builds the prompt (:mod:`judging.prompts`), calls the judge through
  :func:`microverse_site.llm.chat` OUTSIDE any transaction (retries, Retry-After, ``shrink=halve_images`` on 413, one
  repair turn for a malformed answer) and records the outcome: SCORED with scores, reasoning, raw answer and the
  LLMCall, or FLAGGED with the reason (never dropped, never scored when malformed). An identical request already
  answered (same model, messages and parameters: :func:`microverse_site.llm.request_hash`) is not paid again: its
  recorded ok answer is reused, so a rerun after a crash costs nothing for what was already answered.
* :func:`judge_run_start` - queues one Celery task (``judging.tasks.judge_one``, queue "llm") per PENDING judgement;
  :func:`judge_run_execute` judges them in this process (the ``judge_videos`` command), with the same claims, calls
  and records, pipelined so that the endpoint's slots never wait on this process's own work (see "in-process
  runner" below); :func:`judge_run_cancel`, :func:`judge_run_progress`. A run is DONE when nothing is pending or
  running.

Claim and concurrency limit per endpoint
----------------------------------------
A judgement is claimed by moving it PENDING -> ``running`` (:data:`RUNNING`) in one short transaction that also
enforces the endpoint's limit: it takes an endpoint lock (PostgreSQL: ``pg_advisory_xact_lock`` on a hash of the base
URL; SQLite: the site's ``IMMEDIATE`` transactions already serialise writers), counts the judgements in state
``running`` on that base URL whose claim is younger than the lease (:func:`lease_seconds`), and claims only while that
count is below ``run.concurrency``. The database is shared by every worker process and node, so this bounds the calls
in flight per endpoint across all of them; no Redis is needed, and nothing leaks when a worker dies: a claim older
than the lease no longer counts and is taken back (:func:`judge_run_start`, or the re-delivered task). Runs that
share an endpoint share its slots; each claims up to its own ``concurrency``. The parallelism itself comes from the
worker (``celery -A microverse_site worker -Q llm --pool threads -c 16``; the embedded filesystem broker with one
solo worker runs one call at a time) or from :func:`judge_run_execute`'s threads (``--concurrency N``). A task
that finds no free slot waits a few seconds, then re-queues itself with a countdown. :func:`judge_run_execute` also
hands a slot's count from one of its claims to its next one (:class:`_Slot`): the count of live claims stays the
same, so the limit holds without counting again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from datasets.video_io import UnreadableVideo
from judging import prompts
from judging.models import GeneratedVideo, JudgeRun, Judgement, ModelUnderTest
from judging.videos import frames_extract, frames_read
from microverse_site import llm
from microverse_site.models import LLMCall
from rubrics.models import BenchmarkTask, Criterion, Dimension, RubricVersion

logger = logging.getLogger(__name__)

LLM_QUEUE = "llm"
PURPOSE = "judge"
#: The claimed state of a judgement while its call is in flight. Not (yet) one of ``Judgement.Status``'s choices:
#: the column is a plain CharField, so the value needs no migration; see the module docstring.
RUNNING = "running"
PENDING, SCORED, FLAGGED = Judgement.Status.PENDING, Judgement.Status.SCORED, Judgement.Status.FLAGGED
ACTIVE = (PENDING, RUNNING)
NO_VIDEO = "no video"
DIMENSIONS = tuple(Dimension.values)
#: How long to sleep between two tries for a free endpoint slot.
SLOT_POLL_SECONDS = 0.05
#: judge_run_execute's work that can wait (writing a result, preparing the next batch) waits until no request has
#: taken a slot for this long, and at most QUIET_WAIT_MAX seconds: see "in-process runner" below.
QUIET_SECONDS = 0.005
QUIET_WAIT_MAX = 0.05


class JudgeRunError(ValueError):
    """A run cannot be created or started as asked; the message says why."""


# ------------------------------------------------------------------------------------------------- settings


def _config(run: JudgeRun) -> llm.LLMSettings:
    config = llm.LLMSettings.from_settings()
    if run.base_url:
        config = dataclasses.replace(config, base_url=run.base_url)
    return config


def lease_seconds(config: llm.LLMSettings | None = None) -> float:
    """How long a claim counts as alive: the longest a judge call can legitimately take (every attempt timing out,
    the longest waits between them, for the first request and its repair), plus a minute. ``JUDGE_LEASE_SECONDS``
    (settings or environment) overrides it."""
    override = getattr(settings, "JUDGE_LEASE_SECONDS", None)
    if override is None:
        import os

        override = os.environ.get("JUDGE_LEASE_SECONDS") or None
    if override is not None:
        return float(override)
    config = config or llm.LLMSettings.from_settings()
    per_request = (config.max_attempts * config.timeout
                   + (config.max_attempts - 1) * max(config.backoff_max, config.retry_after_max))
    return 2 * per_request + 60.0


# ------------------------------------------------------------------------------------------------- creating


def _versions_for(label: str) -> dict[int, int]:
    """task id -> the id of its rubric version called `label` ("current": the task's current version)."""
    if label == "current":
        return dict(BenchmarkTask.objects.exclude(current_rubric=None).values_list("id", "current_rubric_id"))
    return dict(RubricVersion.objects.filter(label=label).values_list("task_id", "id"))


def _no_video_reason(video: GeneratedVideo | None) -> str:
    if video is None:
        return f"{NO_VIDEO}: no video is registered for this task"
    return f"{NO_VIDEO}: {video.status}" + (f" ({video.reason})" if video.reason else "")


def judge_run_create(*, model: ModelUnderTest, judge_model: str, base_url: str = "", rubric_label: str = "released",
                     frames_per_video: int = 8, concurrency: int = 4, user=None, new: bool = False) -> JudgeRun:
    """The run for these parameters with its judgements (see the module docstring)."""
    judge_model = (judge_model or "").strip()
    if not judge_model or judge_model == "imported":
        raise JudgeRunError("name the judge model (\"imported\" is reserved for imported results)")
    if not 1 <= int(frames_per_video) <= 64:
        raise JudgeRunError("frames per video must be between 1 and 64")
    if not 1 <= int(concurrency) <= 256:
        raise JudgeRunError("concurrency must be between 1 and 256")
    base_url = (base_url or getattr(settings, "OPENAI_BASE_URL", "") or "").strip()
    versions = _versions_for(rubric_label)
    if not versions:
        raise JudgeRunError(f"no task has a rubric version called {rubric_label!r}")
    with transaction.atomic():
        run = None
        if not new:
            run = (JudgeRun.objects.select_for_update()
                   .filter(model=model, judge_model=judge_model, base_url=base_url, rubric_label=rubric_label,
                           frames_per_video=frames_per_video, prompt_version=prompts.PROMPT_VERSION, source_file="")
                   .order_by("-created_at", "-id").first())
        if run is None:
            run = JudgeRun.objects.create(model=model, judge_model=judge_model, base_url=base_url,
                                          rubric_label=rubric_label, frames_per_video=frames_per_video,
                                          concurrency=concurrency, prompt_version=prompts.PROMPT_VERSION,
                                          created_by=user)
        elif run.concurrency != concurrency:
            run.concurrency = concurrency
            run.save(update_fields=["concurrency"])
        _populate(run, versions)
        if Judgement.objects.filter(run=run, status__in=ACTIVE).exists():
            JudgeRun.objects.filter(pk=run.pk, status=JudgeRun.Status.DONE).update(
                status=JudgeRun.Status.QUEUED, finished_at=None)
        else:
            _finish_if_done(run.pk)
    run.refresh_from_db()
    return run


def _populate(run: JudgeRun, versions: dict[int, int]) -> None:
    videos = {v.task_id: v for v in GeneratedVideo.objects.filter(model=run.model)}
    existing = {(t, d): (pk, status, reason) for pk, t, d, status, reason in
                Judgement.objects.filter(run=run).values_list("pk", "task_id", "dimension", "status", "flag_reason")}
    new_rows = []
    now = timezone.now()
    for task_id, version_id in versions.items():
        video = videos.get(task_id)
        ok = video is not None and video.status == GeneratedVideo.Status.OK
        for dim in DIMENSIONS:
            found = existing.get((task_id, dim))
            if found is None:
                new_rows.append(Judgement(
                    run=run, task_id=task_id, dimension=dim, rubric_version_id=version_id, video=video,
                    status=PENDING if ok else FLAGGED, flag_reason="" if ok else _no_video_reason(video)))
            elif ok and found[1] == FLAGGED and found[2].startswith(NO_VIDEO):
                Judgement.objects.filter(pk=found[0], status=FLAGGED).update(
                    status=PENDING, flag_reason="", video=video, updated_at=now)
    Judgement.objects.bulk_create(new_rows, batch_size=1000, ignore_conflicts=True)


# ------------------------------------------------------------------------------------------------- progress


def judge_run_progress(run: JudgeRun) -> dict:
    """Counts of the run's judgements by status (``pending``, ``running``, ``scored``, ``flagged``, ``no_video`` of
    the flagged), ``total``, ``finished`` (scored + flagged) and ``percent`` of the total finished."""
    counts = dict(Judgement.objects.filter(run=run).values_list("status").annotate(n=Count("id")).order_by())
    no_video = Judgement.objects.filter(run=run, status=FLAGGED, flag_reason__startswith=NO_VIDEO).count()
    result = {"pending": counts.get(PENDING, 0), "running": counts.get(RUNNING, 0), "scored": counts.get(SCORED, 0),
              "flagged": counts.get(FLAGGED, 0), "no_video": no_video}
    result["total"] = sum(counts.values())
    result["finished"] = result["scored"] + result["flagged"]
    result["percent"] = round(100.0 * result["finished"] / result["total"], 1) if result["total"] else 100.0
    return result


def _finish_if_done(run_id: int) -> bool:
    if Judgement.objects.filter(run_id=run_id, status__in=ACTIVE).exists():
        return False
    return bool(JudgeRun.objects.filter(pk=run_id, status__in=[JudgeRun.Status.QUEUED, JudgeRun.Status.RUNNING])
                .update(status=JudgeRun.Status.DONE, finished_at=timezone.now()))


def _reclaim(run: JudgeRun, *, older_than: float | None) -> int:
    """Claims of `run` that no process holds any more go back to PENDING: those older than `older_than` seconds
    (None: all of them, when the caller knows no one else works on the run)."""
    rows = Judgement.objects.filter(run=run, status=RUNNING)
    if older_than is not None:
        rows = rows.filter(updated_at__lt=timezone.now() - timedelta(seconds=older_than))
    return rows.update(status=PENDING, updated_at=timezone.now())


# ------------------------------------------------------------------------------------------ start / cancel


def judge_run_start(*, run: JudgeRun) -> int:
    """Queue one ``judging.tasks.judge_one`` per PENDING judgement on the "llm" queue (sent when the transaction
    commits). Stale claims are taken back first. Returns how many were queued; a run with nothing left is DONE."""
    from judging.tasks import judge_one as judge_one_task

    _reclaim(run, older_than=lease_seconds(_config(run)))
    with transaction.atomic():
        JudgeRun.objects.filter(pk=run.pk).exclude(status=JudgeRun.Status.RUNNING).update(
            status=JudgeRun.Status.RUNNING, finished_at=None, error="")
        JudgeRun.objects.filter(pk=run.pk, started_at=None).update(started_at=timezone.now())
        ids = list(Judgement.objects.filter(run=run, status=PENDING).order_by("task__index", "dimension")
                   .values_list("pk", flat=True))
        if ids:
            transaction.on_commit(lambda: [judge_one_task.apply_async(args=[pk], queue=LLM_QUEUE) for pk in ids])
    if not ids:
        _finish_if_done(run.pk)
    run.refresh_from_db()
    return len(ids)


def judge_run_cancel(*, run: JudgeRun) -> bool:
    """Stop a run: queued tasks find it cancelled and do nothing; calls already in flight finish and are recorded.
    Pending judgements stay pending (not judged); :func:`judge_run_start` resumes the run. False if it was over."""
    updated = JudgeRun.objects.filter(pk=run.pk, status__in=[JudgeRun.Status.QUEUED, JudgeRun.Status.RUNNING]).update(
        status=JudgeRun.Status.CANCELLED, finished_at=timezone.now())
    run.refresh_from_db()
    return bool(updated)


# -------------------------------------------------------------------------------------------------- claiming


def _endpoint_lock(base_url: str) -> None:
    if connection.vendor == "postgresql":
        key = int.from_bytes(hashlib.sha256(("judge:" + base_url).encode()).digest()[:8], "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
    # SQLite: this site opens every transaction IMMEDIATE (settings), so writers are already serialised.


#: How far past the lease a claim that holds no endpoint slot is dated. Not just the lease: another process that read
#: its clock a moment before this claim was written would still count it as live (seen once in CI: 4 live claims on an
#: endpoint of 2). Any claim this old is stale to every reader, whatever its clock read.
UNCOUNTED_MARGIN_SECONDS = 60.0


def _uncounted(now, lease: float):
    """The `updated_at` of a claim that holds no endpoint slot."""
    return now - timedelta(seconds=lease + UNCOUNTED_MARGIN_SECONDS)


def _live_claims(run: JudgeRun, now, lease: float):
    """The claims that count a slot on `run`'s endpoint (any run's): RUNNING, and dated within the lease."""
    return Judgement.objects.filter(status=RUNNING, run__base_url=run.base_url,
                                    updated_at__gte=now - timedelta(seconds=lease))


def _try_claim(judgement_id: int, run: JudgeRun, *, lease: float, reclaim: bool, slots: bool = True) -> str:
    """"claimed", "busy" (no free slot on the endpoint) or "gone" (not claimable: done, or claimed by another).
    ``slots=False`` claims without taking an endpoint slot (nothing will be sent)."""
    statuses = [PENDING, RUNNING] if reclaim else [PENDING]
    now = timezone.now()
    if not slots:
        return "claimed" if Judgement.objects.filter(pk=judgement_id, status__in=statuses).update(
            status=RUNNING, updated_at=_uncounted(now, lease)) else "gone"
    with _unflushed_transaction():
        _endpoint_lock(run.base_url)
        busy = _live_claims(run, now, lease).exclude(pk=judgement_id).count()
        if busy >= max(1, run.concurrency):
            # No slot; but say "gone" rather than "busy" for a judgement nobody needs to wait for.
            gone = not Judgement.objects.filter(pk=judgement_id, status__in=statuses).exists()
            return "gone" if gone else "busy"
        claimed = Judgement.objects.filter(pk=judgement_id, status__in=statuses).update(
            status=RUNNING, updated_at=now)
    return "claimed" if claimed else "gone"


def _claim(judgement_id: int, run: JudgeRun, *, lease: float, reclaim: bool, wait: float | None,
           stop: threading.Event | None = None, slots: bool = True) -> str:
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        outcome = _try_claim(judgement_id, run, lease=lease, reclaim=reclaim, slots=slots)
        if outcome != "busy":
            return outcome
        if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()):
            return "busy"
        time.sleep(SLOT_POLL_SECONDS * (1 + random.random()))


# ---------------------------------------------------------------------------------------------------- judging


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # scored / flagged / busy / gone / cancelled / missing
    reason: str = ""
    cached: bool = False


@functools.lru_cache(maxsize=4096)
def _criteria(version_id: int, dimension: str, created_at: object = None) -> tuple:
    """A rubric version's criteria for one dimension (versions are immutable, so they are cached; the creation time
    is part of the key so that a test database reusing an id never gets another version's criteria)."""
    return tuple(Criterion.objects.filter(version_id=version_id, dimension=dimension).order_by("position")
                 .values_list("description", "polarity", "weight"))


def _frames_for(judgement: Judgement) -> list[bytes]:
    """The JPEG bytes of the judgement's video's judge frames (extracted the first time)."""
    video = judgement.video
    if video is None or video.status != GeneratedVideo.Status.OK:
        raise UnreadableVideo("the task has no readable video")
    return frames_read(frames_extract(video=video, n=judgement.run.frames_per_video))


def _messages(judgement: Judgement, criteria: tuple, frames: list[bytes]) -> list[dict]:
    return prompts.judge_messages(
        prompt=judgement.task.prompt, requirement=judgement.task.requirement, dimension=judgement.dimension,
        criteria=[prompts.PromptCriterion(description=d, polarity=p, weight=w) for d, p, w in criteria],
        frames=frames)


def _no_criteria(judgement: Judgement) -> JudgeRunError:
    return JudgeRunError(f"the rubric has no {judgement.dimension} criteria")


def judge_messages_for(judgement: Judgement) -> tuple[list[dict], int]:
    """The chat messages for a judgement (extracting its video's frames if needed) and its number of criteria."""
    criteria = _criteria(judgement.rubric_version_id, judgement.dimension, judgement.rubric_version.created_at)
    if not criteria:
        raise _no_criteria(judgement)
    return _messages(judgement, criteria, _frames_for(judgement)), len(criteria)


def _validator(n_criteria: int) -> Callable:
    return partial(prompts.validate_judgement, n_criteria=n_criteria)


def _cached_call(model: str, messages: list[dict], validate: Callable) -> tuple[LLMCall, tuple] | None:
    """An earlier ok answer to exactly this request that still validates (the row and its value), or None."""
    hash_ = llm.request_hash(model, messages, {})
    rows = LLMCall.objects.filter(purpose=PURPOSE, request_hash=hash_, status="ok").order_by("-created_at", "-id")
    for row in rows[:3]:
        try:
            return row, validate(row.response_text)
        except ValueError:
            continue
    return None


def _scored(value: tuple, text: str, call_id: int | None) -> dict:
    scores, reasoning = value
    return dict(status=SCORED, scores=scores, reasoning=reasoning, raw_response=text, flag_reason="",
                llm_call_id=call_id)


def _flagged(reason: str, **fields) -> dict:
    return dict(status=FLAGGED, flag_reason=reason[:2000], scores=None, **fields)


def _unreadable(exc: UnreadableVideo) -> dict:
    return _flagged(f"{NO_VIDEO}: the video's frames cannot be read ({exc.reason})")


def _internal_error(judgement_id: int, exc: Exception) -> dict:
    """A bug or an unexpected failure: flagged with the reason, never left claimed."""
    logger.error("judgement %s: internal error", judgement_id, exc_info=exc)
    return _flagged(f"internal error: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _unflushed_transaction():
    """A transaction for claims and results that, on PostgreSQL, does not wait for its log flush (synchronous_commit
    off for this transaction only: a wave's commits no longer queue behind each other's disk writes). Only a crash of
    the database server itself can lose such a commit, never one of this process; and a lost claim or result costs
    nothing: the judgement is claimed again and answered from its recorded call (LLMCall rows keep the default)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def _record(judgement_id: int, *, claimed: bool = True, count_to: int | None = None, **fields) -> bool:
    """Write the outcome if the judgement is still claimed (a stale claim taken over by another does not write);
    ``claimed=False``: if it is still PENDING (an outcome known without a call is written in one statement).
    `count_to`: the claimed judgement that takes over this one's endpoint slot in the same transaction (see
    :class:`_Slot`)."""
    with _unflushed_transaction():
        return _write_outcome(judgement_id, claimed=claimed, count_to=count_to, **fields)


def _write_outcome(judgement_id: int, *, claimed: bool = True, count_to: int | None = None, **fields) -> bool:
    """:func:`_record` inside the caller's transaction."""
    fields["updated_at"] = timezone.now()
    written = Judgement.objects.filter(pk=judgement_id, status=RUNNING if claimed else PENDING).update(**fields)
    if count_to is not None:
        Judgement.objects.filter(pk=count_to, status=RUNNING).update(updated_at=fields["updated_at"])
    return bool(written)


def judge_one(*, judgement_id: int, wait: float | None = 0.0, reclaim: bool = False,
              stop: threading.Event | None = None, finish_run: bool = True) -> Outcome:
    """Judge one judgement (see the module docstring). `wait`: seconds to wait for a free endpoint slot (None: as long
    as it takes); `reclaim`: also take over a judgement already claimed (a re-delivered task whose worker died);
    `finish_run`: mark the run DONE when this was its last judgement (a caller that checks at the end says False).

    The prompt is built and the recorded answers are looked up before the slot is claimed: a slot is held only for
    the call itself."""
    judgement = (Judgement.objects.select_related("run", "task", "video", "rubric_version")
                 .filter(pk=judgement_id).first())
    if judgement is None:
        return Outcome("missing")
    run = judgement.run
    if run.status == JudgeRun.Status.CANCELLED:
        return Outcome("cancelled")
    if run.source_file or run.judge_model == IMPORTED:
        return Outcome("gone", "imported runs are not judged")
    if judgement.status not in ([PENDING, RUNNING] if reclaim else [PENDING]):
        return Outcome("gone")
    config = _config(run)
    lease = lease_seconds(config)
    claimed = False
    try:
        try:
            messages, n_criteria = judge_messages_for(judgement)
        except UnreadableVideo as exc:
            claimed = _claim(judgement_id, run, lease=lease, reclaim=reclaim, wait=wait, stop=stop,
                             slots=False) == "claimed"
            if not claimed:
                return Outcome("gone")
            fields = _unreadable(exc)
            _record(judgement_id, **fields)
            return Outcome(FLAGGED, fields["flag_reason"])
        validate = _validator(n_criteria)
        cached = _cached_call(run.judge_model, messages, validate)
        if cached is not None:  # nothing to pay: no endpoint slot needed
            claimed = _claim(judgement_id, run, lease=lease, reclaim=reclaim, wait=wait, stop=stop,
                             slots=False) == "claimed"
            if not claimed:
                return Outcome("gone")
            row, value = cached
            _record(judgement_id, **_scored(value, row.response_text, row.pk))
            return Outcome(SCORED, cached=True)
        outcome = _claim(judgement_id, run, lease=lease, reclaim=reclaim, wait=wait, stop=stop)
        if outcome != "claimed":
            return Outcome(outcome)
        claimed = True
        fields, _ = _ask(run, config, messages, validate)
        _record(judgement_id, **fields)
        return Outcome(fields["status"], fields["flag_reason"])
    except Exception as exc:  # noqa: BLE001 - flagged with the reason, never left claimed
        fields = _internal_error(judgement_id, exc)
        if not claimed:
            claimed = _claim(judgement_id, run, lease=lease, reclaim=reclaim, wait=0.0, slots=False) == "claimed"
        if claimed:
            _record(judgement_id, **fields)
        return Outcome(FLAGGED if claimed else "gone", fields["flag_reason"])
    finally:
        if finish_run and claimed:
            _finish_if_done(run.pk)


def _ask(run: JudgeRun, config: llm.LLMSettings, messages: list[dict], validate: Callable, *,
         request_hash_: str | None = None, defer_record: bool = False) -> tuple[dict, LLMCall | None]:
    """Call the judge (retries, 413 shrinking, one repair turn: :func:`microverse_site.llm.chat`, which writes the
    LLMCall row, or with `defer_record` returns an ok answer's row unsaved); the judgement's fields for the outcome,
    scored or flagged with the reason, and the unsaved row (None when written or when there is none)."""
    try:
        result = llm.chat(purpose=PURPOSE, messages=messages, validate=validate, max_repairs=1,
                          shrink=llm.halve_images, model=run.judge_model, config=config,
                          request_hash_=request_hash_, defer_record=defer_record)
    except llm.LLMError as exc:
        raw = ""
        if exc.call_id:
            raw = LLMCall.objects.filter(pk=exc.call_id).values_list("response_text", flat=True).first() or ""
        return _flagged(exc.reason, reasoning="", raw_response=raw, llm_call_id=exc.call_id), None
    return _scored(result.value, result.text, result.call_id), result.unsaved_call


# ------------------------------------------------------------------------------------------ in-process runner
#
# judge_run_execute keeps `size` requests in flight and keeps every other piece of work off the path from one answer
# arriving to the next request leaving. That path is what costs: on a small machine the calls of a wave end together
# and their threads compete for the GIL, so each millisecond spent there is paid once per wave. What is left on it is
# what a plain thread pool does too (the SDK's work, and taking the next request from a queue) plus validating the
# answer.
#
# * One preparer thread builds the requests ahead, in order: the run's judgements with their tasks and videos, and
#   the criteria, are read in two queries up front; a video's frames are read once for its three dimensions; each
#   request's hash is computed once; the recorded answers of a batch are looked up in one query. A judgement answered
#   before (same request hash), or whose video has no readable frames, is written at once and takes no slot.
#   The preparer also claims each batch before handing it on, in one transaction (:func:`_claim_ahead`): a request
#   is owned by this process before it is due, so no claim is written when it leaves. The first batch's claims also
#   count on the endpoint (as many as it has free slots), so the run's first wave leaves without a claim each.
# * `size` caller threads, each with one slot, take the prepared requests and call the judge, as a thread pool's
#   workers do. An answer that validates comes back from ``llm.chat(defer_record=True)`` with its LLMCall row
#   unsaved, and the caller hands it to the writer and takes its next request at once.
# * One writer thread writes the answers in batches, once no request has begun leaving for a few milliseconds (so
#   that the writes take the GIL between waves, not during one): the batch's LLMCall rows in one durable
#   transaction, then the judgements' outcomes in one more. The preparer waits for such a quiet moment too.
# * The database side of a slot (the endpoint's limit across processes) travels with it (:class:`_Slot`): the live
#   claim that counts a slot stays the previous request's until that request's result is written, and that same
#   transaction moves the count to the request now using the slot. The number of counted claims on the endpoint never
#   grows and no lock, count or write is needed when a request leaves. A slot that no live claim counts (first use,
#   or the holder's result was written while the slot was free) makes a counted claim under the endpoint lock
#   (:func:`_try_claim`), as every claim did before.
#
# Crash safety: claims stay RUNNING until their results are written; a killed process leaves them RUNNING, never
# counted as done, and the next judge_run_execute takes them back and reuses their recorded ok answers without paying.
# An answer not yet written when the process dies (at most the last wave's, for a few milliseconds) is asked again.
# Claimed requests never sent (a stopped or cancelled run) go back to PENDING when the runner ends.


@dataclasses.dataclass
class _Request:
    """A judgement ready to be judged: its messages and validator; or `fields`, its outcome, known without a call."""

    judgement_id: int
    messages: list[dict] | None = None
    validate: Callable | None = None
    fields: dict | None = None
    counted: bool = False  # its claim already counts on the endpoint (see _claim_ahead)
    hash: str = ""  # llm.request_hash of the request


class _Slot:
    """One of the runner's permits to have a request in flight.

    `holder` is the judgement whose live claim counts this slot on the endpoint in the database (None: no claim
    counts for it); `current` the judgement whose request uses the slot now. They differ from the moment a slot is
    handed on until the holder's result is written: that write moves the count to `current` in the same transaction
    (:func:`_record`'s ``count_to``), so the endpoint's count stays the same while the slot is in use and no write
    stands between one answer and the next request."""

    __slots__ = ("holder", "current", "lock")

    def __init__(self) -> None:
        self.holder: int | None = None
        self.current: int | None = None
        self.lock = threading.Lock()

    def hand_to(self, judgement_id: int) -> bool:
        """Use the slot for `judgement_id`; True if a live claim already counts it (nothing to claim)."""
        with self.lock:
            self.current = judgement_id
            return self.holder is not None

    def counted(self, judgement_id: int | None) -> None:
        """`judgement_id`'s own claim now counts the slot (None: the claim failed, the slot is unused)."""
        with self.lock:
            self.holder = self.current = judgement_id

    def finish(self, judgement_id: int) -> int | None:
        """`judgement_id`'s result is about to be written: the judgement that takes over its count (None: none)."""
        with self.lock:
            if self.current == judgement_id:
                self.current = None
            if self.holder != judgement_id:
                return None
            self.holder = self.current
            return self.holder


def _claim_ahead(judgement_ids: list[int], run: JudgeRun, *, lease: float, count: int = 0) -> tuple[list, set]:
    """Claim those of `judgement_ids` that are PENDING, in one transaction: the runner owns them before their requests
    are due. The first `count` of them (at most the endpoint's free slots, counted under the endpoint lock) also count
    on the endpoint, so a run's first requests leave without a claim each; the others are dated past the lease
    (:func:`_uncounted`), as a claim that holds no slot is. Returns (the ones claimed, in order; the ones counted)."""
    now = timezone.now()
    with _unflushed_transaction():
        free = set(Judgement.objects.filter(pk__in=judgement_ids, status=PENDING)
                   .select_for_update(skip_locked=True).values_list("pk", flat=True))
        claimed = [pk for pk in judgement_ids if pk in free]
        counted: list[int] = []
        if count > 0 and claimed:
            _endpoint_lock(run.base_url)
            busy = _live_claims(run, now, lease).count()
            counted = claimed[:max(0, min(count, max(1, run.concurrency) - busy))]
            Judgement.objects.filter(pk__in=counted, status=PENDING).update(status=RUNNING, updated_at=now)
        Judgement.objects.filter(pk__in=claimed[len(counted):], status=PENDING).update(
            status=RUNNING, updated_at=_uncounted(now, lease))
    return claimed, set(counted)


def _use_slot(slot: _Slot, judgement_id: int, run: JudgeRun, *, lease: float, counted: bool = False) -> str:
    """Count `judgement_id` (claimed by :func:`_claim_ahead`) in `slot`: "claimed" at once when a live claim already
    counts the slot (if the judgement was `counted` too, the endpoint over-counts by one until the holder's result
    moves its count: cautious, never over the limit) or the judgement was `counted`; else a counted claim under the
    endpoint lock: "claimed", "busy" or "gone"."""
    if slot.hand_to(judgement_id):
        return "claimed"
    if counted:
        slot.counted(judgement_id)
        return "claimed"
    outcome = _try_claim(judgement_id, run, lease=lease, reclaim=True)
    slot.counted(judgement_id if outcome == "claimed" else None)
    return outcome


def _criteria_of_versions(versions) -> dict[tuple[int, str], tuple]:
    """(rubric version id, dimension) -> its criteria in order, for these rubric versions, in one query."""
    criteria: dict[tuple[int, str], list] = {}
    for version_id, dimension, *criterion in (Criterion.objects.filter(version_id__in=versions)
                                              .order_by("version_id", "dimension", "position")
                                              .values_list("version_id", "dimension", "description", "polarity",
                                                           "weight")):
        criteria.setdefault((version_id, dimension), []).append(tuple(criterion))
    return {key: tuple(value) for key, value in criteria.items()}


class _Runner:
    """One :func:`judge_run_execute` (see the comment above)."""

    def __init__(self, run: JudgeRun, *, size: int, progress: Callable[[dict], None] | None,
                 stop: threading.Event):
        self.run, self.size, self.progress, self.stop = run, size, progress, stop
        self.config = _config(run)
        self.lease = lease_seconds(self.config)
        self.counts = judge_run_progress(run)
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.ready: queue.Queue = queue.Queue(maxsize=2 * size)  # prepared requests: enough for a wave and the next
        self.answered: queue.SimpleQueue = queue.SimpleQueue()  # (request, slot, fields, unsaved LLMCall) to write
        self.unsent: set[int] = set()  # claimed by the preparer, not yet taken by a caller
        self.last_sent = 0.0  # when a caller last began sending a request (time.monotonic())

    def execute(self) -> None:
        callers = min(self.counts["pending"], self.size)
        if not callers:
            return
        threads = [threading.Thread(target=self._thread, args=(self.prepare_all, callers),
                                    name=f"judge-run-{self.run.pk}-prepare", daemon=True)]
        threads += [threading.Thread(target=self._thread, args=(self.call_all, _Slot()),
                                     name=f"judge-run-{self.run.pk}-{i}", daemon=True) for i in range(callers)]
        writer = threading.Thread(target=self._thread, args=(self.write_all,), name=f"judge-run-{self.run.pk}-write",
                                  daemon=True)
        for thread in [*threads, writer]:
            thread.start()
        try:
            self._watch(threads)
        except BaseException:
            self.stop.set()
            for thread in threads:
                thread.join()
            raise
        finally:
            self.answered.put(None)  # the callers are done: every answer they got is written, even when stopped
            writer.join()
            self._unclaim_unsent()
        if self.errors:
            raise self.errors[0]

    def _thread(self, target: Callable, *args) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by execute()
            self.errors.append(exc)
            self.stop.set()
        finally:
            connection.close()  # each thread has its own connection

    def _watch(self, threads: list[threading.Thread]) -> None:
        """Wait for the threads; a cancelled run stops them (requests in flight finish and are recorded)."""
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
                if not self.stop.is_set() and JudgeRun.objects.filter(
                        pk=self.run.pk, status=JudgeRun.Status.CANCELLED).exists():
                    self.stop.set()

    def _unclaim_unsent(self) -> None:
        """Claimed requests that were never sent (a stopped run) go back to PENDING: not judged."""
        with self.lock:
            unsent, self.unsent = list(self.unsent), set()
        if unsent:
            Judgement.objects.filter(pk__in=unsent, status=RUNNING).update(status=PENDING, updated_at=timezone.now())

    def _finished(self, status: str) -> None:
        with self.lock:
            if status in (SCORED, FLAGGED):
                counts = self.counts
                counts["pending"] -= 1
                counts[status] += 1
                counts["finished"] += 1
                counts["percent"] = round(100.0 * counts["finished"] / counts["total"], 1) if counts["total"] else 100
            if self.progress is not None:
                self.progress(dict(self.counts))

    def _wait_for_quiet(self) -> None:
        """Let the requests about to leave have the GIL first: wait until no caller has begun sending for
        QUIET_SECONDS, at most QUIET_WAIT_MAX."""
        deadline = time.monotonic() + QUIET_WAIT_MAX
        while True:
            now = time.monotonic()
            left = min(self.last_sent + QUIET_SECONDS, deadline) - now
            if left <= 0:
                return
            time.sleep(left)

    # ------------------------------------------------------------------------------------ the preparer thread

    def prepare_all(self, callers: int) -> None:
        """The run's PENDING judgements are read a batch at a time with their tasks and videos (the first batch
        leaves without waiting for the rest), and their rubric versions' criteria as new versions come up."""
        ids = list(Judgement.objects.filter(run=self.run, status=PENDING).order_by("task__index", "dimension")
                   .values_list("pk", flat=True))
        frames: dict[int | None, list[bytes]] = {}  # the current video's frames (rows come task by task)
        criteria: dict[tuple[int, str], tuple] = {}
        loaded: set[int] = set()
        first = True
        for start in range(0, len(ids), self.size):
            if self.stop.is_set():
                return
            self._wait_for_quiet()
            chunk_ids = ids[start:start + self.size]
            found = Judgement.objects.select_related("task", "video").in_bulk(chunk_ids)
            chunk = [found[pk] for pk in chunk_ids if pk in found]
            new_versions = {row.rubric_version_id for row in chunk} - loaded
            if new_versions:
                criteria.update(_criteria_of_versions(new_versions))
                loaded |= new_versions
            for row in chunk:
                row.run = self.run
            batch = [self._prepare(row, criteria, frames) for row in chunk]
            self._look_up_answers(batch)
            for request in batch:
                if request.fields is not None:  # known without a call: written now, no slot taken
                    ok = _record(request.judgement_id, claimed=False, **request.fields)
                    self._finished(request.fields["status"] if ok else "gone")
            to_call = [request for request in batch if request.fields is None]
            with self.lock:  # claimed and listed as unsent together: a stop in between cannot strand a claim
                claimed, counted = _claim_ahead([request.judgement_id for request in to_call], self.run,
                                                lease=self.lease, count=self.size if first else 0)
                first = False
                self.unsent.update(claimed)
            claimed = set(claimed)
            for request in to_call:
                request.counted = request.judgement_id in counted
                if request.judgement_id not in claimed:
                    self._finished("gone")
                elif not self._put(request):
                    return
        for _ in range(callers):
            self._put(None)

    def _prepare(self, row: Judgement, criteria: dict, frames: dict) -> _Request:
        try:
            found = criteria.get((row.rubric_version_id, row.dimension))
            if not found:
                raise _no_criteria(row)
            if row.video_id not in frames:
                frames.clear()
                frames[row.video_id] = _frames_for(row)
            messages = _messages(row, found, frames[row.video_id])
            return _Request(row.pk, messages=messages, validate=_validator(len(found)),
                            hash=llm.request_hash(self.run.judge_model, messages, {}))
        except UnreadableVideo as exc:
            return _Request(row.pk, fields=_unreadable(exc))
        except Exception as exc:  # noqa: BLE001 - flagged with the reason, as judge_one does
            return _Request(row.pk, fields=_internal_error(row.pk, exc))

    def _look_up_answers(self, batch: list[_Request]) -> None:
        """Recorded ok answers to exactly these requests (the latest 3 per request that still validate, as
        :func:`_cached_call`), in one query: such a judgement is scored from it, without a call."""
        asked: dict[str, list[_Request]] = {}
        for request in batch:
            if request.fields is None:
                asked.setdefault(request.hash, []).append(request)
        if not asked:
            return
        tried: dict[str, int] = {}
        for pk, hash_, text in (LLMCall.objects.filter(purpose=PURPOSE, status="ok", request_hash__in=list(asked))
                                .order_by("-created_at", "-id").values_list("pk", "request_hash", "response_text")):
            tried[hash_] = tried.get(hash_, 0) + 1
            if tried[hash_] > 3:
                continue
            for request in asked[hash_]:
                if request.fields is None:
                    with contextlib.suppress(ValueError):
                        request.fields = _scored(request.validate(text), text, pk)

    def _put(self, request: _Request | None) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(request, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    # ------------------------------------------------------------------------------------- the caller threads

    def call_all(self, slot: _Slot) -> None:
        while not self.stop.is_set():
            try:
                request = self.ready.get(timeout=0.2)
            except queue.Empty:
                continue
            if request is None:
                return
            self._judge(request, slot)

    def _judge(self, request: _Request, slot: _Slot) -> None:
        """Count, call and hand the answer to the writer; a request never sent stays listed as unsent."""
        outcome = self._claim(slot, request)
        if outcome == "busy":  # stopped while waiting, never sent: back to PENDING at the end
            return
        with self.lock:
            self.unsent.discard(request.judgement_id)
        if outcome == "gone":
            self._finished("gone")
            return
        self.last_sent = time.monotonic()
        try:
            fields, unsaved = _ask(self.run, self.config, request.messages, request.validate,
                                   request_hash_=request.hash, defer_record=True)
        except Exception as exc:  # noqa: BLE001 - flagged with the reason, never left claimed
            fields, unsaved = _internal_error(request.judgement_id, exc), None
        self.answered.put((request, slot, fields, unsaved))

    def _claim(self, slot: _Slot, request: _Request) -> str:
        """Count `request` in `slot`, waiting while the endpoint has no free slot (other processes use it too)."""
        while True:
            outcome = _use_slot(slot, request.judgement_id, self.run, lease=self.lease, counted=request.counted)
            if outcome != "busy" or self.stop.is_set():
                return outcome
            time.sleep(SLOT_POLL_SECONDS * (1 + random.random()))

    # -------------------------------------------------------------------------------------- the writer thread

    def write_all(self) -> None:
        """Write the answers in batches, each once the requests about to leave have left: the batch's LLMCall rows in
        one transaction (durable), then its judgements' outcomes in one more (each moving its slot's count on)."""
        done = False
        while not done:
            batch = [self.answered.get()]
            self._wait_for_quiet()
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self.answered.get_nowait())
            done = batch[-1] is None
            batch = [item for item in batch if item is not None]
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple]) -> None:
        calls = [unsaved for _, _, _, unsaved in batch if unsaved is not None]
        if calls:
            with transaction.atomic():
                for call in calls:
                    call.save()
        written = []
        with _unflushed_transaction():
            for request, slot, fields, unsaved in batch:
                if unsaved is not None:
                    fields["llm_call_id"] = unsaved.pk
                ok = _write_outcome(request.judgement_id, count_to=slot.finish(request.judgement_id), **fields)
                written.append(fields["status"] if ok else "gone")
        for status in written:
            self._finished(status)


def judge_run_execute(*, run: JudgeRun, workers: int | None = None,
                      progress: Callable[[dict], None] | None = None, stop: threading.Event | None = None) -> dict:
    """Judge every PENDING judgement of `run` in this process, at most `workers` (default ``run.concurrency``) calls
    in flight, each also bounded by the endpoint's slots in the database (see the comment above). Claims of this run
    left by a process that died are taken back first (nothing else is assumed to work on the run meanwhile).

    `progress` is called with :func:`judge_run_progress`-style counts after each judgement; `stop` (an Event) ends
    it early, and so does cancelling the run (:func:`judge_run_cancel`, seen within half a second): calls in flight
    finish and are recorded, the rest stays PENDING. Returns the final progress."""
    _reclaim(run, older_than=None)
    JudgeRun.objects.filter(pk=run.pk).update(status=JudgeRun.Status.RUNNING, finished_at=None, error="")
    JudgeRun.objects.filter(pk=run.pk, started_at=None).update(started_at=timezone.now())
    stop = stop or threading.Event()
    # The objects that exist now (the process's modules, Django, the SDK) are set aside from garbage collection for
    # the run: a full collection over all of them takes about 0.1 s, every waiting request waits for it, and none of
    # them become garbage meanwhile. They go back to the oldest generation afterwards.
    gc.freeze()
    try:
        _Runner(run, size=max(1, int(workers or run.concurrency)), progress=progress, stop=stop).execute()
    finally:
        gc.unfreeze()
    if not _finish_if_done(run.pk) and stop.is_set():
        JudgeRun.objects.filter(pk=run.pk, status=JudgeRun.Status.RUNNING).update(status=JudgeRun.Status.QUEUED)
    run.refresh_from_db()
    return judge_run_progress(run)


# ------------------------------------------------------------------------------- published results files

IMPORTED = "imported"
#: flag_reason of an imported dimension whose ``parsed_result`` was null (kept so the export writes null again).
PARSED_NULL = "parsed_result is null (the judge's answer had no usable JSON)"


def _positional(criteria: list[tuple[int, float]]) -> list:
    from rubrics.scoring import Criterion as ScoringCriterion

    return [ScoringCriterion(polarity=p, weight=w) for p, w in criteria]


def judge_run_import(*, model: ModelUnderTest, entries, source_file: str, rubric_label: str = "released",
                     user=None) -> JudgeRun:
    """A DONE run with judge model "imported" holding a published results file's judgements as they are.

    All or nothing. Every entry must name a benchmark task with a rubric version called `rubric_label`. Each
    ``*_eval`` present becomes a Judgement: SCORED when its score list is well formed (one 0/1 per criterion),
    else FLAGGED with the problems; the raw score list is stored either way, so the published calculation applies to
    malformed entries exactly as it did. A null ``parsed_result`` is FLAGGED (:data:`PARSED_NULL`) without scores; a
    missing ``*_eval`` has no row. The entry's ``video_path`` is kept on the model's GeneratedVideo for the task
    (created as ``missing`` with that name when the model has none registered)."""
    from rubrics.scoring import judgement_problems

    entries = list(entries)
    versions = _versions_for(rubric_label)
    tasks = dict(BenchmarkTask.objects.values_list("index", "id"))
    unknown = sorted(e.index for e in entries if e.index not in tasks)
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise JudgeRunError(f"{len(unknown)} entries name tasks that are not in the benchmark: {shown}")
    unversioned = sorted(e.index for e in entries if tasks[e.index] not in versions)
    if unversioned:
        raise JudgeRunError(f"tasks without a {rubric_label!r} rubric version: "
                            f"{', '.join(map(str, unversioned[:10]))}")
    criteria: dict[tuple[int, str], list] = {}
    for version_id, dim, polarity, weight in (Criterion.objects.filter(version_id__in=set(versions.values()))
                                              .order_by("position")
                                              .values_list("version_id", "dimension", "polarity", "weight")):
        criteria.setdefault((version_id, dim), []).append((polarity, weight))
    now = timezone.now()
    with transaction.atomic():
        run = JudgeRun.objects.create(model=model, judge_model=IMPORTED, rubric_label=rubric_label,
                                      source_file=str(source_file)[:255], prompt_version="published",
                                      status=JudgeRun.Status.DONE, started_at=now, finished_at=now, created_by=user,
                                      concurrency=1, published_entries={
                                          str(e.index): {"video_path": e.video_path, "extra": e.extra}
                                          for e in entries})
        videos = {v.task_id: v for v in GeneratedVideo.objects.filter(model=model)}
        rows = []
        for entry in entries:
            task_id = tasks[entry.index]
            video = videos.get(task_id)
            if video is None:
                path = entry.video_path if isinstance(entry.video_path, str) else ""
                video = GeneratedVideo.objects.create(
                    model=model, task_id=task_id, status=GeneratedVideo.Status.MISSING, file=path[:300],
                    reason=f"not registered here; {source_file} names it {path!r}")
                videos[task_id] = video
            version_id = versions[task_id]
            for dim in DIMENSIONS:
                if dim not in entry.evals:
                    continue
                parsed = entry.parsed_result(dim)
                row = Judgement(run=run, task_id=task_id, dimension=dim, rubric_version_id=version_id, video=video,
                                raw_response=entry.raw_response(dim), reasoning=entry.reasoning(dim),
                                published={"eval": entry.evals[dim]})
                if parsed is None:
                    row.status, row.flag_reason, row.scores = FLAGGED, PARSED_NULL, None
                else:
                    row.scores = entry.scores(dim)
                    problems = judgement_problems(_positional(criteria.get((version_id, dim), [])), row.scores)
                    row.status = FLAGGED if problems else SCORED
                    row.flag_reason = "; ".join(problems)
                rows.append(row)
        Judgement.objects.bulk_create(rows, batch_size=1000)
    return run


def judge_run_export(*, run: JudgeRun) -> list:
    """The run's judgements as published-format entries (:class:`judging.published.PublishedEntry`), one per task
    with at least one answered dimension; pending and "no video" dimensions are left out, a flagged live judgement
    is written with ``"parsed_result": null``. An imported run's file comes back equal, keys the format does not
    define included: each ``*_eval`` value, each entry's ``video_path`` and other keys are written as the file had
    them (entries without any ``*_eval`` too)."""
    from judging.published import PublishedEntry, make_eval

    imported = run.judge_model == IMPORTED
    by_task: dict[int, dict] = {}
    rows = (Judgement.objects.filter(run=run).select_related("task", "video").order_by("task__index", "dimension"))
    for j in rows:
        if j.status in ACTIVE or (j.status == FLAGGED and j.flag_reason.startswith(NO_VIDEO)):
            continue
        entry = by_task.setdefault(j.task.index, {"video": j.video, "evals": {}})
        if j.published is not None:  # imported: the value as the file had it
            entry["evals"][j.dimension] = j.published["eval"]
            continue
        if imported:
            parsed = not (j.status == FLAGGED and j.flag_reason == PARSED_NULL)
        else:
            parsed = j.status == SCORED
        entry["evals"][j.dimension] = make_eval(raw_response=j.raw_response, scores=j.scores,
                                                reasoning=j.reasoning, parsed=parsed)
    kept = run.published_entries or {}
    for index in kept:
        by_task.setdefault(int(index), {"video": None, "evals": {}})
    entries = []
    for index, data in sorted(by_task.items()):
        video, original = data["video"], kept.get(str(index))
        path = video.file.name if video is not None and video.file else ""
        evals = {dim: data["evals"][dim] for dim in DIMENSIONS if dim in data["evals"]}
        if original is not None:
            path, extra = original["video_path"], original["extra"]
        else:
            extra = {}
        entries.append(PublishedEntry(index=index, video_path=path, evals=evals, extra=extra))
    return entries
