"""The split's clip files: copied from an H.264 MP4 source without re-encoding (datasets/clip_copy.py), re-encoded
with x264 from any other source; either way each file holds exactly its clip's frames."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from django.db import transaction

from datasets import pipeline, video_io
from datasets.models import Clip
from tests.datasets.test_pipeline import (EXPECTED_CLIPS, FPS, HEIGHT, SHOTS, WIDTH, composite_video,  # noqa: F401
                                          ingest_video, pipeline_settings, shots_draw, spans, videos)

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")


def count_encoders(monkeypatch) -> list:
    started = []
    real = video_io.H264Writer

    class Counting(real):
        def __init__(self, *args, **kwargs):
            started.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(video_io, "H264Writer", Counting)
    return started


def split(video) -> None:
    with transaction.atomic():
        pipeline.pipeline_prepare(video=video, stages=["split"])
    assert pipeline.stage_split(video_id=video.pk).status == "done"


def assert_clip_files_hold_their_frames(video, source) -> None:
    frames = [frame for _, frame in video_io.iter_frames(source)]
    for clip in Clip.objects.filter(video=video).order_by("position"):
        got = [frame for _, frame in video_io.iter_frames(clip.file.path)]
        assert len(got) == clip.end_frame - clip.start_frame
        assert video_io.probe(clip.file.path).frame_count == len(got)
        # The source's frames: identical when copied; within x264's loss (CRF 18) when re-encoded.
        error = max(np.abs(g.astype(int) - frames[clip.start_frame + k]).mean() for k, g in enumerate(got))
        yield clip, error


@pytest.mark.django_db
def test_an_h264_source_is_cut_by_copying_packets_with_no_encoder(pipeline_settings, videos, monkeypatch):
    encoders = count_encoders(monkeypatch)
    video = ingest_video(videos["composite"])
    split(video)
    assert spans(video) == EXPECTED_CLIPS  # 245 is 20 frames after a keyframe: its clip starts mid-GOP
    assert encoders == []
    errors = [error for _, error in assert_clip_files_hold_their_frames(video, videos["composite"])]
    assert errors == [0.0] * len(EXPECTED_CLIPS)  # bit-identical
    for clip in Clip.objects.filter(video=video):
        thumbnail = video_io.read_frames(clip.thumbnail.path, [0])[0]  # the middle sampled frame, as a JPEG
        assert thumbnail.shape[1] == WIDTH


@pytest.mark.django_db
def test_another_codec_is_re_encoded_frame_exact(pipeline_settings, tmp_path, monkeypatch):
    source = video_io.make_test_video(tmp_path / "mpeg4.mp4", frames=SHOTS[-1][1], size=(WIDTH, HEIGHT), fps=FPS,
                                      draw=shots_draw(), codec="mp4v")
    encoders = count_encoders(monkeypatch)
    video = ingest_video(source)
    split(video)
    assert spans(video) == EXPECTED_CLIPS
    assert len(encoders) == len(EXPECTED_CLIPS)
    errors = [error for _, error in assert_clip_files_hold_their_frames(video, source)]
    assert all(0 < error < 4 for error in errors), errors


@pytest.mark.django_db
def test_a_clip_with_no_sampled_frames_gets_its_thumbnail_from_its_file(pipeline_settings, videos, monkeypatch):
    from tests.datasets.test_pipeline import pipeline_overrides

    pipeline_settings.PIPELINE = pipeline_overrides(FRAMES_PER_CLIP=0)
    video = ingest_video(videos["composite"])
    split(video)
    source = [frame for _, frame in video_io.iter_frames(videos["composite"])]
    for clip in Clip.objects.filter(video=video):
        assert not clip.sample_frames
        thumbnail = video_io.read_frames(clip.thumbnail.path, [0])[0]
        middle = source[(clip.start_frame + clip.end_frame - 1) // 2]
        assert np.abs(thumbnail.astype(int) - middle).mean() < 6  # JPEG of the exact middle frame


@pytest.mark.django_db
def test_copying_can_be_turned_off(pipeline_settings, videos, monkeypatch):
    from tests.datasets.test_pipeline import pipeline_overrides

    pipeline_settings.PIPELINE = pipeline_overrides(COPY_CLIPS=False)
    encoders = count_encoders(monkeypatch)
    video = ingest_video(videos["composite"])
    split(video)
    assert spans(video) == EXPECTED_CLIPS and len(encoders) == len(EXPECTED_CLIPS)
    errors = [error for _, error in assert_clip_files_hold_their_frames(video, videos["composite"])]
    assert all(0 < error < 4 for error in errors), errors
