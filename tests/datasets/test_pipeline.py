"""The pipeline's stages run in this process on real synthetic videos (datasets/pipeline.py): clips, measurements,
verdicts, idempotence, replacement, cancellation, failure and retry, recovery of runs whose worker died,
re-evaluation without decoding, the funnel counts and the run_pipeline command.

Helpers here (``composite_video``, ``ingest_video``, ``pipeline_settings``...) are imported by the worker and page
tests too."""
from __future__ import annotations

import io
import shutil
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from annotation.models import ActionLog
from datasets import pipeline, selectors, video_io
from datasets.models import Clip, SourceVideo, StageRun

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")

WIDTH, HEIGHT, FPS = 320, 180, 25
# (start, end, kind) of each shot of the composite video; the 20-frame shot is shorter than MIN_CLIP_SECONDS (2 s).
SHOTS = ((0, 75, "clean"), (75, 150, "letterbox"), (150, 225, "text"), (225, 245, "short"), (245, 320, "clean"))
EXPECTED_CLIPS = [(0, 75), (75, 150), (150, 225), (245, 320)]
BAR = 26  # letterbox bar height in pixels: 26/180 = 0.144 of the height, top and bottom
SUBTITLE = "SUBTITLE 42"


def _texture(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth random colour field, wider than the frame so the shot can pan across it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 230, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width + 60, height), interpolation=cv2.INTER_CUBIC)


def shots_draw(shots=SHOTS, seed: int = 1):
    """A ``make_test_video`` drawing: each shot a different texture panning slowly (so frames within a shot look
    alike and a hard cut separates shots); "letterbox" adds black bars, "text" a burned-in white subtitle."""
    textures = {}

    def draw(index: int, width: int, height: int) -> np.ndarray:
        number, (start, _, kind) = next((n, s) for n, s in enumerate(shots) if s[0] <= index < s[1])
        if number not in textures:
            textures[number] = _texture(seed * 100 + number, width, height)
        frame = textures[number][:, (index - start) // 2:(index - start) // 2 + width].copy()
        if kind == "letterbox":
            frame[:BAR] = 0
            frame[height - BAR:] = 0
        elif kind == "text":
            origin = (width // 8, height - 20)
            cv2.putText(frame, SUBTITLE, origin, cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 6, cv2.LINE_AA)
            cv2.putText(frame, SUBTITLE, origin, cv2.FONT_HERSHEY_SIMPLEX, 1.1, (255, 255, 255), 2, cv2.LINE_AA)
        return frame

    return draw


def composite_video(folder: Path, name: str = "composite.mp4", *, shots=SHOTS, seed: int = 1) -> Path:
    return video_io.make_test_video(folder / name, frames=shots[-1][1], size=(WIDTH, HEIGHT), fps=FPS,
                                    draw=shots_draw(shots, seed))


def clean_video(folder: Path, name: str = "clean.mp4", *, shots: int = 2, seed: int = 7) -> Path:
    """`shots` clean shots of 3 s each."""
    spec = tuple((i * 75, (i + 1) * 75, "clean") for i in range(shots))
    return composite_video(folder, name, shots=spec, seed=seed)


def ingest_video(path: Path, user=None, *, license: str = "CC BY 4.0", **metadata) -> SourceVideo:
    from datasets.ingest import video_ingest

    with open(path, "rb") as handle:
        return video_ingest(fileobj=handle, original_name=path.name, user=user,
                            metadata={"title": path.stem, "license": license, **metadata})


def pipeline_overrides(**extra) -> dict:
    """PIPELINE settings for small test videos: admit 180p, and no heartbeat thread in-process."""
    from microverse_site import settings as project_settings  # the settings as configured, not as overridden

    return {**project_settings.PIPELINE, "MIN_HEIGHT": 180, "HEARTBEAT_SECONDS": 0, **extra}


@pytest.fixture
def pipeline_settings(settings, tmp_path):
    """Media under tmp_path, 180p admitted, no heartbeat thread; returns the settings fixture."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    settings.PIPELINE = pipeline_overrides()
    return settings


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline-videos")
    return {"composite": composite_video(folder), "clean": clean_video(folder)}


def run_all(video: SourceVideo) -> dict[str, StageRun]:
    from django.db import transaction

    with transaction.atomic():
        pipeline.pipeline_prepare(video=video)
    for stage in pipeline.STAGE_ORDER:
        pipeline.STAGE_FUNCTIONS[stage](video_id=video.pk)
    return {r.stage: r for r in StageRun.objects.filter(video=video)}


def spans(video) -> list[tuple[int, int]]:
    return list(Clip.objects.filter(video=video).order_by("position").values_list("start_frame", "end_frame"))


# --------------------------------------------------------------------------------------------------- stages


@pytest.mark.django_db
def test_the_four_stages_cut_measure_and_judge_the_composite_video(pipeline_settings, videos, researcher):
    video = ingest_video(videos["composite"], researcher)
    runs = run_all(video)
    assert {s: r.status for s, r in runs.items()} == dict.fromkeys(pipeline.STAGE_ORDER, "done")
    assert spans(video) == EXPECTED_CLIPS
    assert (runs["split"].clips_in, runs["split"].clips_out) == (5, 4)  # the 20-frame shot is too short
    clips = list(Clip.objects.filter(video=video).order_by("position"))
    for clip in clips:
        assert default_storage.exists(clip.file.name) and default_storage.exists(clip.thumbnail.name)
        assert clip.file.name.startswith(pipeline.clip_prefix(video.pk, runs["split"].pk, 1))
        info = video_io.probe(clip.file.path)
        assert info.frame_count == clip.end_frame - clip.start_frame and info.codec in {"avc1", "h264"}
        assert clip.embedder == "colour-structure-v1"
        assert clip.micro_probability is None  # no classifier configured: unclassified, not dropped
    clean, letterbox, text, clean2 = clips
    assert letterbox.border_top == pytest.approx(BAR / HEIGHT, abs=0.02)
    assert letterbox.border_bottom == pytest.approx(BAR / HEIGHT, abs=0.02)
    assert (letterbox.verdict, letterbox.stopped_at_stage) == ("dropped", "borders")
    assert letterbox.text_area_fraction is None  # dropped at borders: never sent to the text stage
    assert clean.border_top == 0 and clean.text_area_fraction == 0
    assert (clean.verdict, clean2.verdict) == ("kept", "kept")
    assert text.border_bottom < 0.05
    assert text.text_area_fraction > 0.005 and "SUBTITLE" in text.text_found
    assert (text.verdict, text.stopped_at_stage) == ("dropped", "text")
    assert (runs["classify"].clips_in, runs["classify"].clips_out) == (4, 4)
    assert (runs["borders"].clips_in, runs["borders"].clips_out) == (4, 3)
    assert (runs["text"].clips_in, runs["text"].clips_out) == (3, 2)
    assert all(r.progress == 1.0 and r.attempts == 1 for r in runs.values())


@pytest.mark.django_db
def test_a_second_message_for_a_finished_stage_does_nothing(pipeline_settings, videos):
    video = ingest_video(videos["clean"])
    runs = run_all(video)
    before = list(Clip.objects.filter(video=video).values_list("pk", "file", "border_top", "verdict"))
    for stage in pipeline.STAGE_ORDER:  # re-delivered messages
        assert pipeline.STAGE_FUNCTIONS[stage](video_id=video.pk) is None
    assert list(Clip.objects.filter(video=video).values_list("pk", "file", "border_top", "verdict")) == before
    assert all(r.attempts == 1 for r in StageRun.objects.filter(video=video))
    assert runs["split"].clips_out == 2


@pytest.mark.django_db
def test_running_split_again_replaces_the_clips_and_their_files(pipeline_settings, videos,
                                                                 django_capture_on_commit_callbacks):
    video = ingest_video(videos["clean"])
    run_all(video)
    old_files = set(f for pair in Clip.objects.filter(video=video).values_list("file", "thumbnail") for f in pair)
    old_ids = set(Clip.objects.filter(video=video).values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):  # the old files go once the new rows are committed
        run_all(video)
    new = Clip.objects.filter(video=video)
    assert spans(video) == [(0, 75), (75, 150)]
    assert not old_ids & set(new.values_list("pk", flat=True))
    new_files = set(f for pair in new.values_list("file", "thumbnail") for f in pair)
    split = StageRun.objects.get(video=video, stage="split")
    assert split.attempts == 2
    assert all(name.startswith(pipeline.clip_prefix(video.pk, split.pk, 2)) for name in new_files)
    assert pipeline.stored_clip_files(video.pk) == sorted(new_files)  # the first run's files are gone
    assert not any(default_storage.exists(name) for name in old_files)


@pytest.mark.django_db
def test_a_run_left_running_by_a_dead_worker_is_redone_once_and_its_orphans_removed(pipeline_settings, videos):
    video = ingest_video(videos["clean"])
    from django.db import transaction

    with transaction.atomic():
        pipeline.pipeline_prepare(video=video)
    split = StageRun.objects.get(video=video, stage="split")
    # What a worker killed mid-split leaves: the run RUNNING (attempt 1, heartbeat long ago), files, no rows.
    stale = timezone.now() - timedelta(seconds=pipeline.stale_after_seconds() + 5)
    StageRun.objects.filter(pk=split.pk).update(status="running", attempts=1, updated_at=stale)
    orphan = pipeline.clip_prefix(video.pk, split.pk, 1) + "0000_0-75.mp4"
    default_storage.save(orphan, ContentFile(b"half a clip"))
    assert pipeline.stage_split(video_id=video.pk).status == "done"
    split.refresh_from_db()
    assert split.attempts == 2
    assert spans(video) == [(0, 75), (75, 150)]
    assert not default_storage.exists(orphan)
    names = set(f for pair in Clip.objects.filter(video=video).values_list("file", "thumbnail") for f in pair)
    assert pipeline.stored_clip_files(video.pk) == sorted(names)


@pytest.mark.django_db
def test_a_running_stage_with_a_fresh_heartbeat_belongs_to_a_live_worker(pipeline_settings, videos):
    video = ingest_video(videos["clean"])
    from django.db import transaction

    with transaction.atomic():
        pipeline.pipeline_prepare(video=video)
    StageRun.objects.filter(video=video, stage="split").update(status="running", attempts=1,
                                                               updated_at=timezone.now())
    assert pipeline.stage_split(video_id=video.pk) is None
    assert not Clip.objects.filter(video=video).exists()
    assert pipeline.stage_classify(video_id=video.pk) is None  # split is not done: classify waits for its chain
    assert StageRun.objects.get(video=video, stage="classify").status == "queued"


@pytest.mark.django_db
def test_recover_requeues_stale_runs_with_their_later_stages(pipeline_settings, videos, monkeypatch,
                                                             django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(pipeline, "_enqueue", lambda video_id, stages: sent.append((video_id, stages)))
    stale_video, live_video = ingest_video(videos["clean"]), ingest_video(videos["composite"])
    from django.db import transaction

    for video in (stale_video, live_video):
        with transaction.atomic():
            pipeline.pipeline_prepare(video=video)
    long_ago = timezone.now() - timedelta(seconds=pipeline.stale_after_seconds() + 1)
    StageRun.objects.filter(video=stale_video, stage="split").update(status="running", attempts=1,
                                                                     updated_at=long_ago)
    StageRun.objects.filter(video=live_video, stage="split").update(status="running", attempts=1,
                                                                    updated_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        requeued, next_check = pipeline.pipeline_recover()
    assert [r.video_id for r in requeued] == [stale_video.pk]
    assert sent == [(stale_video.pk, ["split", "classify", "borders", "text"])]
    assert 0 < next_check <= pipeline.stale_after_seconds()
    assert StageRun.objects.get(video=stale_video, stage="split").status == "queued"
    assert StageRun.objects.get(video=live_video, stage="split").status == "running"
    assert ActionLog.objects.filter(verb="pipeline_requeue", target_id=str(stale_video.pk)).count() == 1


@pytest.mark.django_db
def test_cancel_between_clips_stops_split_cleanly(pipeline_settings, videos, monkeypatch, researcher):
    video = ingest_video(videos["composite"])
    from django.db import transaction

    with transaction.atomic():
        pipeline.pipeline_prepare(video=video)
    real_write = video_io.write_thumbnail  # written once per clip, while the clip is written
    written = []

    def write_then_cancel(*args, **kwargs):
        result = real_write(*args, **kwargs)
        written.append(args)
        if len(written) == 2:
            pipeline.pipeline_cancel(video=video, user=researcher)
        return result

    monkeypatch.setattr(video_io, "write_thumbnail", write_then_cancel)
    pipeline.stage_split(video_id=video.pk)
    assert len(written) == 2  # it stopped at the next clip
    assert {r.stage: r.status for r in StageRun.objects.filter(video=video)} == dict.fromkeys(
        pipeline.STAGE_ORDER, "cancelled")
    assert not Clip.objects.filter(video=video).exists()
    assert pipeline.stored_clip_files(video.pk) == []
    assert ActionLog.objects.filter(verb="pipeline_cancel", actor=researcher).count() == 1


@pytest.mark.django_db
def test_a_failing_stage_is_recorded_later_stages_are_skipped_and_retry_requeues_them(
        pipeline_settings, videos, monkeypatch, researcher, django_capture_on_commit_callbacks):
    video = ingest_video(videos["clean"])
    from datasets import borders

    def broken(frames, **kwargs):
        raise RuntimeError("the border detector broke")

    monkeypatch.setattr(borders, "measure_borders", broken)
    from django.db import transaction

    with transaction.atomic():
        pipeline.pipeline_prepare(video=video)
    pipeline.stage_split(video_id=video.pk)
    pipeline.stage_classify(video_id=video.pk)
    with pytest.raises(RuntimeError, match="border detector broke"):
        pipeline.stage_borders(video_id=video.pk)
    runs = {r.stage: r for r in StageRun.objects.filter(video=video)}
    assert runs["borders"].status == "failed" and "border detector broke" in runs["borders"].error
    assert runs["text"].status == "cancelled" and "borders stage failed" in runs["text"].error
    assert pipeline.stage_text(video_id=video.pk) is None
    sent = []
    monkeypatch.setattr(pipeline, "_enqueue", lambda video_id, stages: sent.append((video_id, stages)))
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.pipeline_retry(video=video, user=researcher)
    assert sent == [(video.pk, ["borders", "text"])]
    assert {r.stage: r.status for r in StageRun.objects.filter(video=video)} == {
        "split": "done", "classify": "done", "borders": "queued", "text": "queued"}
    monkeypatch.undo()
    pipeline.stage_borders(video_id=video.pk)
    pipeline.stage_text(video_id=video.pk)
    assert list(Clip.objects.filter(video=video).values_list("verdict", flat=True)) == ["kept", "kept"]
    assert ActionLog.objects.filter(verb="pipeline_retry", actor=researcher).count() == 1
    with pytest.raises(pipeline.PipelineError, match="no failed or cancelled stage"):
        pipeline.pipeline_retry(video=video, user=researcher)


@pytest.mark.django_db
def test_a_clip_the_classifier_drops_goes_to_no_later_stage(pipeline_settings, videos, monkeypatch):
    from datasets import classifier

    class Fake:
        version = "fake-videomae@1"

        def predict(self, frames):
            # the letterboxed shot (dark first rows) is "not micro", the others are
            return 0.1 if frames[0][:5].mean() < 5 else 0.95

    monkeypatch.setattr(classifier, "classifier_from_settings", lambda model_dir: Fake())
    pipeline_settings.PIPELINE = pipeline_overrides(CLASSIFIER_DIR="/models/fake")
    video = ingest_video(videos["composite"])
    runs = run_all(video)
    letterbox = Clip.objects.get(video=video, start_frame=75)
    assert (letterbox.micro_probability, letterbox.classifier_version) == (0.1, "fake-videomae@1")
    assert (letterbox.verdict, letterbox.stopped_at_stage) == ("dropped", "classify")
    assert letterbox.border_top is None and letterbox.text_area_fraction is None
    assert (runs["classify"].clips_in, runs["classify"].clips_out) == (4, 3)
    assert runs["borders"].clips_in == 3


@pytest.mark.django_db
def test_reevaluation_uses_current_thresholds_and_decodes_nothing(pipeline_settings, videos, monkeypatch):
    video = ingest_video(videos["composite"])
    run_all(video)
    assert Clip.objects.get(video=video, start_frame=75).verdict == "dropped"
    calls = []
    for name in ("read_frames", "iter_frames", "write_clip", "probe"):
        real = getattr(video_io, name)
        monkeypatch.setattr(video_io, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(
            *a, **k))
    pipeline_settings.PIPELINE = pipeline_overrides(BORDER_MAX_FRACTION=0.2)
    counts = pipeline.reevaluate_verdicts(video=video)
    assert calls == []
    letterbox = Clip.objects.get(video=video, start_frame=75)
    # It now passes borders, but it never went to the text stage: pending, saying so, not kept blind.
    assert (letterbox.verdict, letterbox.stopped_at_stage) == ("pending", "")
    assert "text" in letterbox.stop_reason
    assert counts["clips"] == 4 and counts["changed"] == 1
    pipeline_settings.PIPELINE = pipeline_overrides(BORDER_MAX_FRACTION=0.2, TEXT_MAX_AREA_FRACTION=0.9)
    pipeline.reevaluate_verdicts()
    assert Clip.objects.get(video=video, start_frame=150).verdict == "kept"
    pipeline_settings.PIPELINE = pipeline_overrides()
    pipeline.reevaluate_verdicts()
    assert list(Clip.objects.filter(video=video).values_list("verdict", "stopped_at_stage")) == [
        ("kept", ""), ("dropped", "borders"), ("dropped", "text"), ("kept", "")]
    assert calls == []


# --------------------------------------------------------------------------------------------- start/refuse


@pytest.mark.django_db
def test_start_queues_every_stage_and_enqueues_on_commit(pipeline_settings, videos, researcher, monkeypatch,
                                                         django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(pipeline, "_enqueue", lambda video_id, stages: sent.append((video_id, stages)))
    video = ingest_video(videos["clean"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        runs = pipeline.pipeline_start(video=video, user=researcher)
        assert sent == []  # nothing is sent before the commit
    for callback in callbacks:
        callback()
    assert [r.stage for r in runs] == list(pipeline.STAGE_ORDER) and {r.status for r in runs} == {"queued"}
    assert sent == [(video.pk, list(pipeline.STAGE_ORDER))]
    log = ActionLog.objects.get(verb="pipeline_start")
    assert (log.actor, log.target_id, log.after) == (researcher, str(video.pk), {"stages": list(pipeline.STAGE_ORDER)})
    with pytest.raises(pipeline.PipelineError, match="still queued or running"):
        pipeline.pipeline_start(video=video, user=researcher)


@pytest.mark.django_db
def test_refused_videos_and_unfinished_earlier_stages_are_refused(pipeline_settings, videos, researcher):
    refused = ingest_video(videos["clean"], license="All rights reserved")
    assert refused.admission == "refused"
    with pytest.raises(pipeline.PipelineError, match="refused at admission"):
        pipeline.pipeline_start(video=refused, user=researcher)
    assert not StageRun.objects.exists()
    video = ingest_video(videos["composite"])
    with pytest.raises(pipeline.PipelineError, match="split stage .* has not finished"):
        pipeline.pipeline_start(video=video, user=researcher, stages=["borders"])
    with pytest.raises(pipeline.PipelineError, match="unknown stage"):
        pipeline.pipeline_start(video=video, user=researcher, stages=["colour"])
    with pytest.raises(pipeline.PipelineError, match="no queued or running"):
        pipeline.pipeline_cancel(video=video, user=researcher)


def test_sample_indices_are_evenly_spaced_inside_the_clip():
    assert pipeline.sample_indices(0, 80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert pipeline.sample_indices(10, 13, 8) == [10, 11, 12]
    assert all(100 <= i < 175 for i in pipeline.sample_indices(100, 175, 8))


# ----------------------------------------------------------------------------------------------------- funnel


@pytest.mark.django_db
def test_funnel_counts_each_step_with_grouped_reasons(pipeline_settings, videos, tmp_path):
    run_all(ingest_video(videos["composite"]))
    run_all(ingest_video(videos["clean"]))
    ingest_video(composite_video(tmp_path, "refused.mp4", seed=3), license="")  # refused: no license
    waiting = ingest_video(clean_video(tmp_path, "waiting.mp4", seed=11))  # admitted, never started
    assert waiting.admission == "admitted"
    funnel = selectors.funnel()
    steps = {s["key"]: s for s in funnel["steps"]}
    assert (steps["admission"]["entered"], steps["admission"]["removed"], steps["admission"]["remained"]) == (4, 1, 3)
    assert steps["admission"]["reasons"] == [("license does not permit reuse", 1)]
    assert (steps["split"]["entered"], steps["split"]["removed"], steps["split"]["remained"]) == (7, 1, 6)
    assert steps["split"]["waiting"] == 1  # the admitted video never started
    assert (steps["classify"]["entered"], steps["classify"]["removed"], steps["classify"]["remained"]) == (6, 0, 6)
    assert (steps["borders"]["entered"], steps["borders"]["removed"], steps["borders"]["remained"]) == (6, 1, 5)
    assert (steps["text"]["entered"], steps["text"]["removed"], steps["text"]["remained"]) == (5, 1, 4)
    assert sum(n for _, n in steps["borders"]["reasons"]) == 1 and sum(n for _, n in steps["text"]["reasons"]) == 1
    assert funnel["chart"]["values"] == [4, 3, 6, 6, 5, 4]
    assert funnel["clips"]["kept"] == 4
    stats = selectors.dataset_statistics()
    assert stats["videos"] == 3 and sum(stats["resolution"]["values"]) == 3
    assert stats["resolution"]["values"][0] == 3  # 180p is below 720p
    assert sum(stats["clip_duration"]["values"]) == 6 and sum(stats["clip_duration"]["kept"]) == 4


def test_reason_groups_drop_the_particulars():
    assert selectors.reason_group("top border 0.144 > 0.05") == selectors.reason_group("top border 0.31 > 0.05")
    assert selectors.reason_group("") == "no reason given"


# ---------------------------------------------------------------------------------------------------- command


@pytest.mark.django_db
def test_run_pipeline_command_prints_progress_and_fails_with_status_1(pipeline_settings, videos, monkeypatch):
    video = ingest_video(videos["clean"])
    out, err = io.StringIO(), io.StringIO()
    call_command("run_pipeline", "--video", str(video.pk), stdout=out, stderr=err)
    text = out.getvalue()
    for stage in pipeline.STAGE_ORDER:
        assert f"{stage}: 100%" in text and f"{stage}: done" in text
    assert "1 of 1 videos finished." in text
    assert list(Clip.objects.filter(video=video).values_list("verdict", flat=True)) == ["kept", "kept"]

    from datasets import ocr

    monkeypatch.setattr(ocr, "measure_texts", lambda frame_lists, **kw: 1 / 0)
    with pytest.raises(CommandError, match="1 video\\(s\\) failed"):
        call_command("run_pipeline", "--all", "--stage", "text", stdout=io.StringIO(), stderr=err)
    assert "text: FAILED: ZeroDivisionError" in err.getvalue()
    assert StageRun.objects.get(video=video, stage="text").status == "failed"
    assert StageRun.objects.get(video=video, stage="borders").attempts == 1  # --stage text re-ran text only
    with pytest.raises(CommandError, match="no video with id 999"):
        call_command("run_pipeline", "--video", "999")
