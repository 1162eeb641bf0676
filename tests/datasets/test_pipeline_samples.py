"""The split stage keeps each clip's sampled frames, and the classify, borders and text stages read them instead of
decoding the video again (datasets/pipeline.py); the text stage reads all of a video's clips with one Tesseract run
(``ocr.measure_texts``)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.db import transaction

from datasets import ocr, pipeline, video_io
from datasets.models import Clip, StageRun
from tests.datasets.test_pipeline import (BAR, EXPECTED_CLIPS, HEIGHT, SUBTITLE, WIDTH, composite_video,  # noqa: F401
                                          ingest_video, pipeline_overrides, pipeline_settings, run_all, shots_draw,
                                          spans, videos)

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")

DECODERS = ("read_frames", "iter_frames", "write_clip", "probe")


def count_decodes(monkeypatch) -> list[str]:
    """Record every call to video_io's decoding functions (they still run)."""
    calls: list[str] = []
    for name in DECODERS:
        real = getattr(video_io, name)
        monkeypatch.setattr(video_io, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(
            *a, **k))
    return calls


def prepare(video) -> None:
    with transaction.atomic():
        pipeline.pipeline_prepare(video=video)


def measurements(video) -> list[tuple]:
    return list(Clip.objects.filter(video=video).order_by("position").values_list(
        "start_frame", "micro_probability", "border_top", "border_bottom", "border_left", "border_right",
        "text_area_fraction", "text_found", "verdict", "stopped_at_stage"))


class FakeClassifier:
    version = "fake-videomae@1"

    def predict(self, frames):
        return 0.6 + float(np.mean([f.mean() for f in frames]) / 2550.0)  # above the threshold, not constant


@pytest.mark.django_db
def test_split_stores_each_clips_sampled_frames_once(pipeline_settings, videos):
    video = ingest_video(videos["composite"])
    prepare(video)
    pipeline.stage_split(video_id=video.pk)
    split = StageRun.objects.get(video=video, stage="split")
    clips = list(Clip.objects.filter(video=video).order_by("position"))
    assert [(c.start_frame, c.end_frame) for c in clips] == EXPECTED_CLIPS
    prefix = pipeline.sample_prefix(video.pk, split.pk, split.attempts)
    for clip in clips:
        assert clip.sample_frames.name.startswith(prefix) and clip.sample_frames.name.endswith(".samples.npz")
        frames = pipeline.read_samples(clip)
        assert len(frames) == pipeline_settings.PIPELINE["FRAMES_PER_CLIP"]
        assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in frames)
    # The too-short shot (225-245) has no clip and no stored frames.
    assert pipeline.stored_sample_files(video.pk) == sorted(c.sample_frames.name for c in clips)
    letterbox = pipeline.read_samples(clips[1])
    assert all(f[:BAR - 2].max() < 16 and f[BAR + 2:HEIGHT - BAR - 2].mean() > 40 for f in letterbox)


@pytest.mark.django_db
def test_later_stages_decode_nothing_and_match_the_decoding_fallback(pipeline_settings, videos, monkeypatch):
    from datasets import classifier

    monkeypatch.setattr(classifier, "classifier_from_settings", lambda model_dir: FakeClassifier())
    pipeline_settings.PIPELINE = pipeline_overrides(CLASSIFIER_DIR="/models/fake")
    video = ingest_video(videos["composite"])
    prepare(video)
    pipeline.stage_split(video_id=video.pk)
    calls = count_decodes(monkeypatch)
    for stage in pipeline.STAGE_ORDER[1:]:
        assert pipeline.STAGE_FUNCTIONS[stage](video_id=video.pk).status == "done"
    assert calls == []  # classify, borders and text read the stored frames only
    from_samples = measurements(video)
    clean, letterbox, text, clean2 = Clip.objects.filter(video=video).order_by("position")
    assert letterbox.border_top == pytest.approx(BAR / HEIGHT, abs=0.02)
    assert (letterbox.verdict, letterbox.stopped_at_stage) == ("dropped", "borders")
    assert "SUBTITLE" in text.text_found and (text.verdict, text.stopped_at_stage) == ("dropped", "text")
    assert (clean.verdict, clean2.verdict) == ("kept", "kept")
    assert all(c.micro_probability is not None for c in (clean, letterbox, text, clean2))

    # Clips with no stored frames (rows made before they were kept) are measured by decoding, with the same verdicts.
    Clip.objects.filter(video=video).update(sample_frames="")
    with transaction.atomic():
        pipeline.pipeline_prepare(video=video, stages=["classify"])
    for stage in pipeline.STAGE_ORDER[1:]:
        assert pipeline.STAGE_FUNCTIONS[stage](video_id=video.pk).status == "done"
    assert calls.count("read_frames") == 3  # one pass per measuring stage
    decoded = measurements(video)
    assert [(m[0], m[8], m[9]) for m in decoded] == [(m[0], m[8], m[9]) for m in from_samples]
    for ours, theirs in zip(from_samples, decoded):
        assert ours[2:6] == pytest.approx(theirs[2:6], abs=0.02)  # border fractions
        assert ours[1] == pytest.approx(theirs[1], abs=0.005)  # the fake classifier's mean brightness
    assert decoded[2][7] == from_samples[2][7] == SUBTITLE


@pytest.mark.django_db
def test_a_missing_samples_file_falls_back_to_decoding(pipeline_settings, videos, monkeypatch):
    video = ingest_video(videos["composite"])
    run_all(video)
    expected = measurements(video)
    letterbox = Clip.objects.get(video=video, start_frame=75)
    default_storage.delete(letterbox.sample_frames.name)
    calls = count_decodes(monkeypatch)
    with transaction.atomic():
        pipeline.pipeline_prepare(video=video, stages=["borders"])
    pipeline.stage_borders(video_id=video.pk)
    pipeline.stage_text(video_id=video.pk)
    assert calls == ["read_frames"]  # the letterboxed clip only, once: it is dropped at borders
    assert [(m[0], m[8], m[9]) for m in measurements(video)] == [(m[0], m[8], m[9]) for m in expected]


@pytest.mark.django_db
def test_sample_files_follow_their_clips_on_resplit_and_cancel(pipeline_settings, videos, researcher, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    video = ingest_video(videos["composite"])
    run_all(video)
    first = set(Clip.objects.filter(video=video).values_list("sample_frames", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        run_all(video)  # a second split replaces the clips and their sampled frames
    second = sorted(Clip.objects.filter(video=video).values_list("sample_frames", flat=True))
    assert pipeline.stored_sample_files(video.pk) == second and not first & set(second)
    split = StageRun.objects.get(video=video, stage="split")
    assert all(n.startswith(pipeline.sample_prefix(video.pk, split.pk, 2)) for n in second)

    # A cancelled split leaves none of its own files, and the committed clips keep theirs.
    real_write = video_io.write_thumbnail

    def write_then_cancel(*args, **kwargs):
        real_write(*args, **kwargs)
        pipeline.pipeline_cancel(video=video, user=researcher)

    monkeypatch.setattr(video_io, "write_thumbnail", write_then_cancel)
    prepare(video)
    pipeline.stage_split(video_id=video.pk)
    assert StageRun.objects.get(video=video, stage="split").status == "cancelled"
    assert pipeline.stored_sample_files(video.pk) == second


@pytest.mark.django_db
def test_an_orphan_samples_file_of_a_killed_split_is_removed(pipeline_settings, videos):
    from django.core.files.base import ContentFile

    video = ingest_video(videos["composite"])
    prepare(video)
    split = StageRun.objects.get(video=video, stage="split")
    orphan = default_storage.save(pipeline.sample_prefix(video.pk, split.pk, 7) + "0000_0-75.samples.npz",
                                  ContentFile(b"half"))
    pipeline.stage_split(video_id=video.pk)
    assert not default_storage.exists(orphan)
    assert pipeline.stored_sample_files(video.pk) == sorted(
        Clip.objects.filter(video=video).values_list("sample_frames", flat=True))


def test_samples_are_lossless_and_at_most_640_pixels_wide():
    rng = np.random.default_rng(3)
    small = [rng.integers(0, 256, (180, 320, 3), dtype=np.uint8) for _ in range(5)]
    back = pipeline.decode_samples(pipeline.encode_samples(small))
    assert len(back) == 5 and all(np.array_equal(a, b) for a, b in zip(small, back))
    large = [np.full((720, 1280, 3), (10 * i, 100, 200), dtype=np.uint8) for i in range(8)]
    back = pipeline.decode_samples(pipeline.encode_samples(large))
    assert [f.shape for f in back] == [(360, 640, 3)] * 8
    assert all(np.array_equal(f[0, 0], (10 * i, 100, 200)) for i, f in enumerate(back))


def test_samples_stored_as_png_by_earlier_splits_are_still_read_and_junk_is_refused():
    import io

    import cv2

    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(3)]
    png = cv2.imencode(".png", np.concatenate(frames, axis=0))[1]
    buffer = io.BytesIO()
    np.savez(buffer, count=np.array(3), png=png.ravel())
    assert all(np.array_equal(a, b) for a, b in zip(frames, pipeline.decode_samples(buffer.getvalue())))
    stored = pipeline.encode_samples(frames)
    for junk in (b"", b"not a file", stored[:len(stored) // 2]):
        with pytest.raises(ValueError, match="cannot be read"):
            pipeline.decode_samples(junk)


# ------------------------------------------------------------------------------------------------ measure_texts


@pytest.fixture(scope="module")
def clip_frames(tmp_path_factory):
    """Each shot's 8 sampled frames of the composite video (the text shot among them)."""
    path = composite_video(tmp_path_factory.mktemp("texts"))
    shots = [(0, 75), (75, 150), (150, 225), (245, 320)]
    return [video_io.read_frames(path, pipeline.sample_indices(s, e, 8)) for s, e in shots]


def _tesseract_or_skip():
    try:
        ocr._tesseract()
    except ocr.OCRUnavailable as error:
        pytest.skip(str(error))


def test_measure_texts_equals_measure_text_per_clip(clip_frames, monkeypatch):
    _tesseract_or_skip()
    runs = []
    real = ocr._read
    monkeypatch.setattr(ocr, "_read", lambda *a, **k: runs.append(1) or real(*a, **k))
    one_by_one = [ocr.measure_text(frames) for frames in clip_frames]
    runs.clear()
    batch = [*clip_frames, [], clip_frames[2][:3]]
    together = ocr.measure_texts(batch)
    assert len(runs) == 1  # one Tesseract run for all the clips
    assert together == [*one_by_one, ocr.TextResult(0.0, "", ()), ocr.measure_text(clip_frames[2][:3])]
    assert together[2].area_fraction > 0.005 and "SUBTITLE" in together[2].text
    assert ocr.measure_texts([]) == []


def test_measure_texts_lays_a_tall_batch_out_in_columns(clip_frames, monkeypatch):
    _tesseract_or_skip()
    batch = [clip_frames[2], clip_frames[0], clip_frames[2][:2], clip_frames[2][4:]]
    single = ocr.measure_texts(batch)
    canvases = []
    real = ocr._tesseract

    def spy():
        module = real()

        class Wrapped:
            Output = module.Output

            @staticmethod
            def image_to_data(image, **kwargs):
                canvases.append(image.shape)
                return module.image_to_data(image, **kwargs)

        return Wrapped

    monkeypatch.setattr(ocr, "_tesseract", spy)
    monkeypatch.setattr(ocr, "MAX_CANVAS_HEIGHT", 150)  # a column per region or two
    columns = ocr.measure_texts(batch)
    assert len(canvases) == 1 and canvases[0][1] > 2 * canvases[0][0] / 3  # wider than one column
    assert [r.text for r in columns] == [r.text for r in single]
    assert [r.area_fraction for r in columns] == pytest.approx([r.area_fraction for r in single], abs=2e-3)


@pytest.mark.django_db
def test_a_resplit_is_refused_once_experts_decided_on_a_clip(pipeline_settings, videos, expert):
    """Re-splitting replaces every clip row; expert decisions on the old clips would point at nothing."""
    from annotation import services as review

    video = ingest_video(videos["composite"])
    run_all(video)
    clip = Clip.objects.filter(video=video).first()
    item = review.review_item_open(workflow="clip_verification", target=clip)
    review.panel_assign(item=item, experts=[expert], assigned_by=None)
    review.decision_submit(item=item, expert=expert, value="keep")
    clips_before = list(Clip.objects.filter(video=video).values_list("pk", flat=True))
    prepare(video)
    with pytest.raises(ValueError, match="decision"):
        pipeline.stage_split(video_id=video.pk)
    assert StageRun.objects.get(video=video, stage="split").status == "failed"
    assert list(Clip.objects.filter(video=video).values_list("pk", flat=True)) == clips_before
