"""The pipeline through REAL Celery workers: the chain of stage tasks on queue "cpu", and a worker SIGKILLed in the
middle of splitting a video, after which a new worker re-queues the dead worker's run and every clip exists
exactly once with no orphan file.

Runs on whichever broker the suite runs on (the filesystem broker by default; Redis with CELERY_BROKER_URL)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from annotation.models import ActionLog
from datasets import embedders, pipeline, scenes, selectors
from datasets.models import Clip, SourceVideo, StageRun
from tests.conftest import WORKER_QUEUES, CeleryWorker, _database_url, stop_celery_worker
from tests.datasets.test_pipeline import composite_video, ingest_video, pipeline_overrides

pytestmark = [pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")]


def wait_final(video: SourceVideo, timeout: float = 120.0) -> dict[str, StageRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {r.stage: r for r in StageRun.objects.filter(video=video)}
        if runs and all(r.status in pipeline.FINAL_STATUSES for r in runs.values()):
            return runs
        time.sleep(0.25)
    raise AssertionError(f"stages of video {video.pk} not final after {timeout} s: "
                         f"{[(r.stage, r.status, r.progress) for r in StageRun.objects.filter(video=video)]}")


def expected_clips(path) -> list[tuple[int, int]]:
    from django.conf import settings

    conf = settings.PIPELINE
    result = scenes.detect_scenes(path, embedder=embedders.embedder_from_settings("", conf["OPENCLIP_MODEL"]),
                                  sample_fps=conf["SAMPLE_FPS"], threshold=conf["SPLIT_THRESHOLD"],
                                  min_clip_seconds=conf["MIN_CLIP_SECONDS"])
    return [tuple(c) for c in result.clips]


def referenced_files(video) -> list[str]:
    return sorted(n for pair in Clip.objects.filter(video=video).values_list("file", "thumbnail") for n in pair)


@pytest.fixture
def remove_stored_files():
    """Deletes, after the test, the stored files of the videos it lists (the shared worker writes into the
    default MEDIA_ROOT, which the test cannot move)."""
    videos = []
    yield videos.append
    for video in videos:
        for name in pipeline.stored_clip_files(video.pk) + pipeline.stored_sample_files(video.pk):
            default_storage.delete(name)
        if video.file:
            default_storage.delete(video.file.name)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_the_stage_chain_and_the_funnel_counts_its_clips(celery_worker_process, settings, researcher,
                                                                     tmp_path, remove_stored_files):
    settings.PIPELINE = pipeline_overrides()  # admission here in the test process: 180p test videos
    path = composite_video(tmp_path, seed=21)
    video = ingest_video(path, researcher)
    refused = ingest_video(composite_video(tmp_path, "refused.mp4", seed=22), researcher, license="")
    remove_stored_files(video)
    remove_stored_files(refused)
    pipeline.pipeline_start(video=video, user=researcher)  # sent to the broker when the transaction commits
    runs = wait_final(video)
    assert {s: r.status for s, r in runs.items()} == dict.fromkeys(pipeline.STAGE_ORDER, "done"), {
        s: r.error for s, r in runs.items()}
    clips = list(Clip.objects.filter(video=video).order_by("position"))
    assert [(c.start_frame, c.end_frame) for c in clips] == expected_clips(path) == [
        (0, 75), (75, 150), (150, 225), (245, 320)]
    assert [(c.verdict, c.stopped_at_stage) for c in clips] == [
        ("kept", ""), ("dropped", "borders"), ("dropped", "text"), ("kept", "")]
    assert clips[1].border_top > 0.1 and "SUBTITLE" in clips[2].text_found
    assert all(default_storage.exists(c.file.name) and default_storage.exists(c.thumbnail.name) for c in clips)
    assert pipeline.stored_clip_files(video.pk) == referenced_files(video)
    log = celery_worker_process.log()
    for stage in pipeline.STAGE_ORDER:
        assert f"datasets.tasks.{stage}[" in log  # each stage ran as its own task in the worker
    steps = {s["key"]: (s["entered"], s["removed"], s["remained"]) for s in selectors.funnel()["steps"]}
    assert steps == {"admission": (2, 1, 1), "split": (5, 1, 4), "classify": (4, 0, 4), "borders": (4, 1, 3),
                     "text": (3, 1, 2)}


def test_stage_tasks_are_routed_to_the_cpu_queue():
    from microverse_site.celery import app
    from datasets import tasks

    for task in (*tasks.STAGE_TASKS.values(), tasks.recover_stale_runs):
        assert task.name.startswith("datasets.tasks.")
        assert app.amqp.router.route({}, task.name)["queue"].name == "cpu"
        assert task.acks_late


# ------------------------------------------------------------------------------------------------ the kill


def _isolated_broker(tmp_path: Path) -> tuple[str, dict, Path]:
    """A broker that only this test's workers use (the session's shared worker must not take these messages):
    a filesystem broker in tmp_path, or another Redis database on the suite's Redis server."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = tmp_path / "broker"
        options = {}
        for key, name in (("data_folder_in", "queue"), ("data_folder_out", "queue"),
                          ("processed_folder", "processed"), ("control_folder", "control")):
            (folder / name).mkdir(parents=True, exist_ok=True)
            options[key] = str(folder / name)
        options["store_processed"] = False
        return "filesystem://", options, folder
    base, _, _ = settings.CELERY_BROKER_URL.rpartition("/")
    url = f"{base}/{1 + os.getpid() % 15}"
    from kombu import Connection

    with Connection(url) as connection:  # leftovers of an earlier run name rows of a dropped database
        channel = connection.default_channel
        for queue in WORKER_QUEUES:
            channel.queue_purge(queue)
        channel.client.delete("unacked", "unacked_index", "unacked_mutex")
    return url, dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS), tmp_path / "broker-unused"


def _start_worker(database_url: str, broker_url: str, broker_dir: Path, log_path: Path, env: dict) -> CeleryWorker:
    """Like tests.conftest.start_celery_worker, but ready is judged from the log alone (a ping would go to the
    suite's broker, not this worker's)."""
    from django.conf import settings

    hostname = f"pytest-kill-{uuid.uuid4().hex[:6]}@localhost"
    environment = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url,
                   "CELERY_BROKER_DIR": str(broker_dir), "PYTHONUNBUFFERED": "1", **env}
    command = [sys.executable, "-m", "celery", "-A", "microverse_site", "worker", "--pool", "solo",
               "-Q", ",".join(WORKER_QUEUES), "--hostname", hostname, "--without-heartbeat", "--without-gossip",
               "--without-mingle", "--loglevel", "INFO"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=environment, stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker = CeleryWorker(process, hostname, log_path, database_url, broker_url)
    try:
        worker.wait_for_log(" ready.", timeout=60)
    except BaseException:
        stop_celery_worker(process)
        raise
    return worker


def _wait(condition, timeout: float, what: str, worker: CeleryWorker | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    log = worker.log()[-4000:] if worker else ""
    raise AssertionError(f"{what} did not happen within {timeout} s\n{log}")


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_split_is_replaced_and_every_clip_exists_exactly_once(settings, tmp_path, researcher,
                                                                                 monkeypatch):
    from django.db import connection

    from datasets import tasks

    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    settings.PIPELINE = pipeline_overrides()
    broker_url, transport_options, broker_dir = _isolated_broker(tmp_path)
    # PIPELINE_TEST_SLEEP_PER_CLIP makes the split slow enough to kill between clips; a short heartbeat and
    # staleness let the new worker see quickly that the first one is gone.
    knobs = {"DJANGO_MEDIA_ROOT": str(media), "PIPELINE_HEARTBEAT_SECONDS": "0.5",
             "PIPELINE_STALE_AFTER_SECONDS": "3", "PIPELINE_TEST_SLEEP_PER_CLIP": "1.5"}
    database_url = _database_url(connection.settings_dict)

    path = composite_video(tmp_path, seed=31)
    video = ingest_video(path, researcher)
    from kombu import Connection

    def send(video_id, stages):
        with Connection(broker_url, transport_options=transport_options) as broker:
            tasks.enqueue_stages(video_id, stages, connection=broker)

    monkeypatch.setattr(pipeline, "_enqueue", send)
    first = _start_worker(database_url, broker_url, broker_dir, tmp_path / "first.log", knobs)
    second = None
    try:
        pipeline.pipeline_start(video=video, user=researcher)
        split = StageRun.objects.get(video=video, stage="split")
        _wait(lambda: StageRun.objects.filter(pk=split.pk, status="running").exists()
              and len(pipeline.stored_clip_files(video.pk)) >= 2, 60, "the split writing its first clip", first)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        split.refresh_from_db()
        orphans = pipeline.stored_clip_files(video.pk)
        assert (split.status, split.attempts) == ("running", 1)
        assert not Clip.objects.filter(video=video).exists()  # no half set of clips
        assert orphans and all(n.startswith(pipeline.clip_prefix(video.pk, split.pk, 1)) for n in orphans)

        second = _start_worker(database_url, broker_url, broker_dir, tmp_path / "second.log",
                               {**knobs, "PIPELINE_TEST_SLEEP_PER_CLIP": "0"})
        runs = wait_final(video, timeout=120)
        assert {s: r.status for s, r in runs.items()} == dict.fromkeys(pipeline.STAGE_ORDER, "done"), (
            {s: r.error for s, r in runs.items()}, second.log()[-3000:])
        assert runs["split"].attempts == 2 and all(runs[s].attempts == 1 for s in pipeline.STAGE_ORDER[1:])
        assert "re-queued" in second.log()
        assert ActionLog.objects.filter(verb="pipeline_requeue", target_id=str(video.pk)).count() == 1
    finally:
        for worker in (first, second):
            if worker is not None:
                stop_celery_worker(worker.process)

    clips = list(Clip.objects.filter(video=video).order_by("position"))
    starts = [c.start_frame for c in clips]
    assert len(starts) == len(set(starts))  # no duplicate
    assert [(c.start_frame, c.end_frame) for c in clips] == expected_clips(path)  # none missing
    assert all(c.file.name.startswith(pipeline.clip_prefix(video.pk, runs["split"].pk, 2)) for c in clips)
    assert pipeline.stored_clip_files(video.pk) == referenced_files(video)  # no orphan file
    assert not any(default_storage.exists(name) for name in orphans)
    assert [c.verdict for c in clips] == ["kept", "dropped", "dropped", "kept"]
    # The dead worker's message, should the broker still deliver it, changes nothing.
    before = referenced_files(video)
    assert pipeline.stage_split(video_id=video.pk) is None
    assert referenced_files(video) == before
