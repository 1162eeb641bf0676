"""Scene splitting (``datasets.scenes``), the frame embedders and ``manage.py detect_scenes`` on small synthetic
videos with known cuts: H.264 files written by ``video_io.make_test_video`` (320x180, 25 fps, a few seconds)."""
import functools
import io
import json
import shutil

import cv2
import numpy as np
import pytest
from django.core.management import call_command

from datasets import embedders
from datasets.embedders import ColourStructureEmbedder, EmbedderUnavailable, embedder_from_settings
from datasets.scenes import Segment, detect_scenes
from datasets.video_io import UnreadableVideo, make_test_video

W, H, FPS = 320, 180, 25.0
CUTS = (37, 90, 150)
FRAMES = 200
CODEC = "h264" if shutil.which("ffmpeg") else "mp4v"


# ------------------------------------------------------------------------------------------ synthetic scenes


@functools.lru_cache(maxsize=16)
def _background(scene: int, width: int, height: int) -> np.ndarray:
    """A textured background twice the frame's size: a smooth random field in the scene's own hue."""
    rng = np.random.default_rng(1000 + scene)
    field = rng.random((height // 8 + 2, width // 8 + 2)).astype(np.float32)
    field = cv2.resize(field, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
    field = cv2.GaussianBlur(field, (0, 0), 3 + scene % 4)
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    hsv = np.empty((height * 2, width * 2, 3), np.uint8)
    hsv[..., 0] = ((scene * 47) % 180 + field * 25).astype(np.uint8) % 180
    hsv[..., 1] = 80 + (scene * 37) % 150
    hsv[..., 2] = (40 + field * 170 * (0.5 + (scene % 3) / 4)).clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _bounce(x: float, size: int) -> int:
    x = x % (2 * size)
    return int(x if x < size else 2 * size - x)


def scene_frame(scene: int, t: int, width: int, height: int, *, pan: float = 0.0, zoom: float = 0.0) -> np.ndarray:
    """Frame ``t`` of shot ``scene``: its background (panned by ``pan`` px/frame, zoomed by ``zoom`` per frame) with
    five discs moving slowly across it, so that neighbouring frames are alike but never identical."""
    background = _background(scene, width, height)
    x0 = min(width, int(t * pan))
    frame = background[height // 2:height // 2 + height, x0:x0 + width].copy()
    if zoom:
        scale = 1.0 + zoom * t
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, scale)
        frame = cv2.warpAffine(frame, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    rng = np.random.default_rng(scene)
    for _ in range(5):
        cx, cy = rng.random(2) * (width, height)
        vx, vy = (rng.random(2) - 0.5) * 3
        radius = int(8 + rng.random() * height / 8)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(frame, (_bounce(cx + vx * t, width), _bounce(cy + vy * t, height)), radius, colour, -1,
                   cv2.LINE_AA)
    return frame


def shots_drawer(cuts):
    """``draw(index, w, h)`` for make_test_video: a new shot (a new scene) starts at each frame in ``cuts``."""
    starts = (0, *cuts)

    def draw(index, width, height):
        shot = max(k for k, start in enumerate(starts) if start <= index)
        return scene_frame(shot, index - starts[shot], width, height)

    return draw


@pytest.fixture(scope="module")
def shots_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenes") / "shots.mp4"
    return make_test_video(path, frames=FRAMES, size=(W, H), fps=FPS, draw=shots_drawer(CUTS), codec=CODEC)


def detect(path, **overrides):
    options = {"embedder": ColourStructureEmbedder(), "sample_fps": 4.0, "threshold": 0.85,
               "min_clip_seconds": 1.0, **overrides}
    return detect_scenes(path, **options)


def assert_covers(result):
    assert result.segments[0].start_frame == 0
    assert result.segments[-1].end_frame == result.frame_count
    for before, after in zip(result.segments, result.segments[1:]):
        assert before.end_frame == after.start_frame
    assert all(s.end_frame > s.start_frame for s in result.segments)


# ------------------------------------------------------------------------------------------------- cuts


def test_cuts_are_found_on_the_exact_frame(shots_video):
    result = detect(shots_video)

    assert (result.fps, result.frame_count, result.embedder) == (FPS, FRAMES, "colour-structure-v1")
    assert result.sample_step == 6
    assert [c.frame for c in result.cuts] == list(CUTS)
    assert all(c.similarity < 0.85 for c in result.cuts)
    assert [(s.start_frame, s.end_frame) for s in result.segments] == [(0, 37), (37, 90), (90, 150), (150, 200)]
    assert_covers(result)


def test_every_frame_sampled_finds_the_same_cuts(shots_video):
    result = detect(shots_video, sample_fps=FPS)

    assert result.sample_step == 1
    assert [c.frame for c in result.cuts] == list(CUTS)


def test_segments_shorter_than_the_minimum_are_flagged_and_left_out_of_clips(shots_video):
    result = detect(shots_video, min_clip_seconds=2.0)  # 37 frames = 1.48 s; 50 frames = exactly 2 s is enough

    assert [s.too_short for s in result.segments] == [True, False, False, False]
    assert result.clips == [(37, 90), (90, 150), (150, 200)]
    assert_covers(result)  # segments still cover the whole video


def test_a_threshold_of_zero_cuts_nothing(shots_video):
    result = detect(shots_video, threshold=0.0)

    assert result.segments == [Segment(0, FRAMES, too_short=False)]
    assert result.clips == [(0, FRAMES)]


@pytest.mark.parametrize("motion", [{"pan": 1.5}, {"zoom": 0.004}])
def test_no_false_cut_in_a_slowly_changing_shot(tmp_path, motion):
    path = make_test_video(tmp_path / "slow.mp4", frames=125, size=(W, H), fps=FPS, codec=CODEC,
                           draw=lambda i, w, h: scene_frame(2, i, w, h, **motion))

    result = detect(path)

    assert result.cuts == []
    assert result.clips == [(0, 125)]


def test_cuts_on_a_sample_or_either_side_of_one_are_exact(tmp_path):
    cuts = (12, 43, 71)  # on a sample (step 6), just after one, just before one
    path = make_test_video(tmp_path / "edges.mp4", frames=100, size=(W, H), fps=FPS, draw=shots_drawer(cuts),
                           codec=CODEC)

    result = detect(path, min_clip_seconds=0)

    assert [c.frame for c in result.cuts] == list(cuts)
    assert_covers(result)


def test_two_cuts_within_one_sampling_interval_become_one(tmp_path):
    path = make_test_video(tmp_path / "close.mp4", frames=100, size=(W, H), fps=FPS, draw=shots_drawer((61, 64)),
                           codec=CODEC)

    result = detect(path, min_clip_seconds=0)

    assert len(result.cuts) == 1 and result.cuts[0].frame in (61, 64)


def test_on_segment_streams_evenly_spaced_frames_of_each_segment(shots_video):
    seen = []

    result = detect(shots_video, frames_per_segment=3,
                    on_segment=lambda segment, frames: seen.append((segment, frames)))

    assert [segment for segment, _ in seen] == result.segments
    embedder = ColourStructureEmbedder()
    for shot, (segment, frames) in enumerate(seen):
        assert 1 <= len(frames) <= 3
        assert all(frame.shape == (H, W, 3) for frame in frames)
        # Each frame belongs to its own shot: it looks like that shot's first frame more than any other shot's.
        references = embedder.embed([scene_frame(k, 0, W, H) for k in range(len(seen))])
        similarities = embedder.embed(frames) @ references.T
        assert (similarities.argmax(axis=1) == shot).all()
    assert [len(frames) for _, frames in seen] == [3, 3, 3, 3]


def test_samples_converted_at_a_smaller_width_find_the_same_cuts(shots_video):
    """The pipeline converts sampled frames straight to at most 640 pixels wide; here 160 of 320."""
    seen = []

    result = detect(shots_video, sample_max_width=160, frames_per_segment=2,
                    on_segment=lambda segment, frames: seen.append(frames))

    assert [c.frame for c in result.cuts] == list(CUTS) and result.frame_count == FRAMES
    assert all(c.similarity < 0.85 for c in result.cuts)
    assert {frame.shape for frames in seen for frame in frames} == {(H // 2, W // 2, 3)}
    full = []
    detect(shots_video, frames_per_segment=2, on_segment=lambda segment, frames: full.append(frames))
    for small, big in zip((f for frames in seen for f in frames), (f for frames in full for f in frames)):
        halved = cv2.resize(big, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
        assert np.abs(small.astype(int) - halved).mean() < 3  # area-averaged, as OpenCV's INTER_AREA


def test_on_progress_reports_decoded_frames(shots_video):
    progress = []

    detect(shots_video, on_progress=progress.append, batch_size=4)

    assert progress == sorted(progress) and progress[-1] == FRAMES and len(progress) > 2


def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "not-a-video.mp4"
    path.write_bytes(b"plain text, no video here" * 10)

    with pytest.raises(UnreadableVideo):
        detect(path)


def test_sample_fps_must_be_positive(shots_video):
    with pytest.raises(ValueError):
        detect(shots_video, sample_fps=0)


# --------------------------------------------------------------------------------------------- embedders


def test_colour_structure_rows_are_unit_length_and_separate_shots():
    embedder = ColourStructureEmbedder()
    frames = [scene_frame(0, 0, W, H), scene_frame(0, 6, W, H), scene_frame(1, 0, W, H)]

    rows = embedder.embed(frames)

    assert rows.shape == (3, embedder.dimension) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert rows[0] @ rows[1] > 0.9  # same shot, discs moved
    assert rows[0] @ rows[2] < 0.7  # another shot
    assert embedder.embed([]).shape == (0, embedder.dimension)


def test_colour_structure_calls_flat_frames_alike():
    embedder = ColourStructureEmbedder()
    black, dark = np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 6, np.uint8)

    rows = embedder.embed([black, dark])

    assert rows[0] @ rows[1] > 0.95


def test_embedder_from_settings_falls_back_without_weights():
    assert isinstance(embedder_from_settings("", "ViT-B-32"), ColourStructureEmbedder)
    assert isinstance(embedders.ColourStructureEmbedder(), embedders.Embedder)


def test_configured_weights_that_are_missing_are_an_error(tmp_path):
    with pytest.raises(EmbedderUnavailable, match="not found"):
        embedder_from_settings(str(tmp_path / "missing.bin"), "ViT-B-32")


def test_openclip_from_a_local_file(tmp_path):
    open_clip = pytest.importorskip("open_clip", reason="open_clip (and torch) are not installed here")
    torch = pytest.importorskip("torch")
    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
              "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / "tiny-clip-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-clip-test.json")
    model, _, _ = open_clip.create_model_and_transforms("tiny-clip-test", pretrained=None)
    weights = tmp_path / "tiny.bin"
    torch.save(model.state_dict(), weights)

    embedder = embedder_from_settings(str(weights), "tiny-clip-test")
    rows = embedder.embed([scene_frame(0, 0, W, H), scene_frame(1, 0, W, H)])

    assert embedder.name == "openclip-tiny-clip-test"
    assert rows.shape == (2, 16)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------------------------- command


def test_command_prints_every_segment_as_json_without_the_database(shots_video):
    # No db fixture: pytest-django refuses any database connection, so this passing proves the command opens none.
    out = io.StringIO()

    call_command("detect_scenes", str(shots_video), "--json", "--min-seconds", "2", stdout=out)

    printed = json.loads(out.getvalue())
    assert printed["fps"] == FPS and printed["frame_count"] == FRAMES
    assert printed["embedder"] == "colour-structure-v1"
    assert [(c["start_frame"], c["end_frame"]) for c in printed["clips"]] == [(0, 37), (37, 90), (90, 150),
                                                                             (150, 200)]
    assert [c["too_short"] for c in printed["clips"]] == [True, False, False, False]


def test_command_options_change_the_split(shots_video):
    out = io.StringIO()

    call_command("detect_scenes", str(shots_video), "--json", "--threshold", "0", "--sample-fps", "2", stdout=out)

    assert json.loads(out.getvalue())["clips"] == [{"start_frame": 0, "end_frame": FRAMES, "too_short": False}]


def test_command_table_and_errors(shots_video, tmp_path):
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command("detect_scenes", str(shots_video), stdout=out)
    assert "4 segments" in out.getvalue() and "37-90" in out.getvalue()

    with pytest.raises(CommandError, match="missing.mp4"):
        call_command("detect_scenes", str(tmp_path / "missing.mp4"), "--json")
