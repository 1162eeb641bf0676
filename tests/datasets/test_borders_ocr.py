"""Black bars (``datasets.borders``) and burned-in text (``datasets.ocr``) measured on frames decoded from small
synthetic H.264 videos, as the pipeline measures them (compression included)."""
import shutil

import cv2
import numpy as np
import pytest

from datasets import ocr
from datasets.borders import BorderResult, measure_borders
from datasets.ocr import OCRUnavailable, TextResult, measure_text
from datasets.video_io import make_test_video, read_frames

W, H, FPS, FRAMES = 320, 180, 25.0, 40
CODEC = "h264" if shutil.which("ffmpeg") else "mp4v"
SAMPLES = [2, 7, 12, 17, 22, 27, 32, 37]  # 8 frames, as FRAMES_PER_CLIP
needs_tesseract = pytest.mark.skipif(not shutil.which("tesseract"), reason="tesseract-ocr is not installed")


def picture(index: int, width: int = W, height: int = H) -> np.ndarray:
    """A textured, moving picture (no black anywhere): a colour gradient, noise and a drifting disc."""
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), np.float32)
    frame[..., 0] = 90 + 60 * np.sin(xs / 23.0 + index / 10)
    frame[..., 1] = 110 + 50 * np.cos(ys / 17.0)
    frame[..., 2] = 130 + 40 * np.sin((xs + ys) / 31.0)
    frame += rng.normal(0, 6, frame.shape)
    frame = frame.clip(40, 255).astype(np.uint8)
    cv2.circle(frame, (40 + 4 * index, height // 2), height // 6, (220, 240, 250), -1, cv2.LINE_AA)
    return frame


def decoded(tmp_path, draw, name="v.mp4", size=(W, H)):
    path = make_test_video(tmp_path / name, frames=FRAMES, size=size, fps=FPS, draw=draw, codec=CODEC)
    return read_frames(path, SAMPLES)


# --------------------------------------------------------------------------------------------------- borders


def letterboxed(fraction):
    bar = round(H * fraction)

    def draw(index, width, height):
        frame = picture(index, width, height)
        frame[:bar] = 0
        frame[height - bar:] = 0
        return frame

    return draw


def pillarboxed(fraction):
    bar = round(W * fraction)

    def draw(index, width, height):
        frame = picture(index, width, height)
        frame[:, :bar] = 0
        frame[:, width - bar:] = 0
        return frame

    return draw


def test_letterbox_bars_are_measured_within_one_percent(tmp_path):
    result = measure_borders(decoded(tmp_path, letterboxed(0.12)))

    assert result.top == pytest.approx(0.12, abs=0.01)
    assert result.bottom == pytest.approx(0.12, abs=0.01)
    assert result.left < 0.01 and result.right < 0.01
    assert result.largest()[1] == max(result.top, result.bottom)


def test_pillarbox_bars_are_measured_within_one_percent(tmp_path):
    result = measure_borders(decoded(tmp_path, pillarboxed(0.12)))

    assert result.left == pytest.approx(0.12, abs=0.01)
    assert result.right == pytest.approx(0.12, abs=0.01)
    assert result.top < 0.01 and result.bottom < 0.01


def test_a_clean_video_has_no_borders(tmp_path):
    result = measure_borders(decoded(tmp_path, picture))

    assert max(result.top, result.bottom, result.left, result.right) < 0.01


def test_dark_content_is_not_taken_for_a_bar():
    """A fluorescence-like picture: black background, bright cells not touching the edges. The dark rows above
    the first cell end raggedly (where a cell happens to be), not on a straight edge: no bar."""
    frames = []
    for index in range(8):
        frame = np.zeros((H, W, 3), np.uint8)
        for k, (x, y) in enumerate([(60, 50), (160, 90), (250, 130), (110, 140)]):
            cv2.circle(frame, (x + index * 2, y), 14 + k, (40, 230, 60), -1, cv2.LINE_AA)
        frames.append(frame)

    assert measure_borders(frames) == BorderResult(0.0, 0.0, 0.0, 0.0)


def test_a_bar_must_be_present_in_most_frames():
    frames = [picture(i) for i in range(8)]
    for frame in frames[:2]:  # two of eight frames with a dark band on top: a passing shadow, not a bar
        frame[:40] = 0

    assert measure_borders(frames).top == 0.0
    for frame in frames[2:6]:  # now six of eight
        frame[:40] = 0
    assert measure_borders(frames).top == pytest.approx(40 / H)


def test_black_frames_say_nothing_about_bars():
    frames = [np.zeros((H, W, 3), np.uint8)] * 5 + [letterboxed(0.1)(i, W, H) for i in range(3)]

    assert measure_borders(frames).top == pytest.approx(18 / H)
    assert measure_borders([np.zeros((H, W, 3), np.uint8)] * 3) == BorderResult(0.0, 0.0, 0.0, 0.0)
    assert measure_borders([]) == BorderResult(0.0, 0.0, 0.0, 0.0)


# ------------------------------------------------------------------------------------------------------ text


def captioned(index, width, height):
    frame = picture(index, width, height)
    frame[height - 40:] = 12  # a dark caption bar at the bottom
    cv2.putText(frame, "MICROSCOPY 2024", (30, height - 13), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2,
                cv2.LINE_AA)
    return frame


@needs_tesseract
def test_burned_in_text_is_found(tmp_path):
    result = measure_text(decoded(tmp_path, captioned))

    assert "MICROSCOPY" in result.words and "2024" in result.words
    assert result.text == "MICROSCOPY 2024"
    assert 0.005 < result.area_fraction < 0.15


@needs_tesseract
def test_small_subtitles_on_a_large_frame_are_found_after_downscaling():
    frames = []
    for index in range(3):
        frame = cv2.resize(picture(index), (1280, 720))
        cv2.putText(frame, "the nucleus divides", (420, 680), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2,
                    cv2.LINE_AA)
        frames.append(frame)

    result = measure_text(frames)

    assert {"nucleus", "divides"} <= set(result.words)
    assert 0.001 < result.area_fraction < 0.05


@needs_tesseract
def test_a_clean_video_has_no_text(tmp_path):
    assert measure_text(decoded(tmp_path, picture)) == TextResult(0.0, "", ())


def test_text_free_frames_need_no_tesseract(monkeypatch):
    """Frames with no text-like region never start Tesseract (so this works even where it is missing)."""
    monkeypatch.setattr(ocr, "_tesseract", lambda: pytest.fail("tesseract should not run"))
    frames = [np.full((H, W, 3), 90, np.uint8), np.zeros((H, W, 3), np.uint8)]

    assert measure_text(frames) == TextResult(0.0, "", ())
    assert measure_text([]) == TextResult(0.0, "", ())


def cells(index, width=1280, height=720):
    """Smooth bright ellipses on a dim, smoothly varying background: their outlines pass the text-region edge
    tests (as cells in the benchmark's videos do)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    grey = (60 + 40 * np.sin(xs / 97.0) * np.cos(ys / 71.0)).astype(np.uint8)
    frame = cv2.merge([grey, grey, grey])
    for k, (cx, cy) in enumerate([(300, 250), (700, 420), (1000, 200)]):
        cv2.ellipse(frame, (cx + 3 * index, cy), (90 + 10 * k, 45), 20 * k, 0, 360, (200, 210, 220), -1, cv2.LINE_AA)
    return frame


def test_smooth_blobs_that_pass_the_edge_tests_need_no_tesseract(monkeypatch):
    frames = [cells(index) for index in range(3)]
    assert all(ocr.text_regions(ocr._downscale(frame, 640)) for frame in frames)  # they would be read
    monkeypatch.setattr(ocr, "_tesseract", lambda: pytest.fail("tesseract should not run"))

    assert measure_text(frames) == TextResult(0.0, "", ())


@needs_tesseract
def test_only_regions_that_cross_strokes_like_letters_are_read(monkeypatch):
    pytesseract = ocr._tesseract()
    canvases = []
    real = pytesseract.image_to_data

    def spy(image, **kwargs):
        canvases.append(image)
        return real(image, **kwargs)

    monkeypatch.setattr(pytesseract, "image_to_data", spy)
    frames = []
    for index in range(3):
        frame = cells(index)
        cv2.putText(frame, "the nucleus divides", (420, 680), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2,
                    cv2.LINE_AA)
        frames.append(frame)

    result = measure_text(frames)

    assert {"nucleus", "divides"} <= set(result.words)
    assert len(canvases) == 1  # one Tesseract run, for one tile: the caption (read once: it does not change)
    inked = (canvases[0] < 128).any(axis=1)
    assert int(np.count_nonzero(np.diff(inked.astype(np.int8)) == 1)) == 1


def test_missing_tesseract_binary_is_a_clear_error(monkeypatch):
    pytesseract = pytest.importorskip("pytesseract")
    monkeypatch.setattr(ocr, "_pytesseract", None)
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")

    with pytest.raises(OCRUnavailable, match="tesseract"):
        measure_text([captioned(0, W, H)])
