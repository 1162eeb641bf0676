"""Clips cut by copying the source's H.264 packets (datasets/clip_copy.py): every FFmpeg-based reader presents
exactly frames [start, end) of the source, bit-identical to decoding the source, whatever the keyframes."""
from __future__ import annotations

import shutil
import subprocess

import av
import numpy as np
import pytest

from datasets import clip_copy, video_io
from datasets.video_io import make_test_video

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")

FRAMES = 120


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """x264 with B-frames, a keyframe every 25 frames (make_test_video's -g fps) and textured moving frames, so a
    missing or reordered reference would show."""
    rng = np.random.default_rng(3)
    texture = rng.integers(0, 255, (180, 320 + FRAMES, 3), dtype=np.uint8)

    def draw(index, width, height):
        frame = np.ascontiguousarray(texture[:height, index:index + width])
        frame[:20] = video_io.index_colour(index)
        return frame

    return make_test_video(tmp_path_factory.mktemp("copy") / "source.mp4", frames=FRAMES, size=(320, 180), fps=25.0,
                           draw=draw)


@pytest.fixture(scope="module")
def source_frames(source):
    return [frame for _, frame in video_io.iter_frames(source)]


def keyframes(path) -> list[int]:
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    order = sorted(p.pts for p in packets)
    return sorted(order.index(p.pts) for p in packets if p.is_keyframe)


SPANS = [(0, 25),  # keyframe to keyframe
         (30, 70),  # starts 5 frames after a keyframe, ends inside a GOP (B-frames need frame 70+)
         (49, 51),  # across a keyframe
         (60, 61),  # one frame
         (101, 120),  # to the end of the video
         (0, 120)]  # the whole video


def test_copied_clips_present_exactly_their_frames_bit_identical(source, source_frames, tmp_path):
    assert keyframes(source) == [0, 25, 50, 75, 100]
    assert clip_copy.copy_refusal(source) is None
    out = dict(clip_copy.copy_clips(source, SPANS, tmp_path))
    assert sorted(out) == list(range(len(SPANS)))
    for position, (start, end) in enumerate(SPANS):
        clip = out[position]
        got = [frame for _, frame in video_io.iter_frames(clip)]  # OpenCV
        assert len(got) == end - start, (start, end)
        assert all(np.array_equal(g, source_frames[start + k]) for k, g in enumerate(got)), (start, end)
        with av.open(str(clip)) as container:  # PyAV (its own FFmpeg build) agrees
            assert sum(1 for _ in container.decode(video=0)) == end - start
        info = video_io.probe(clip)
        assert (info.frame_count, info.width, info.height) == (end - start, 320, 180)
        assert info.codec in {"avc1", "h264"}
        assert info.duration == pytest.approx((end - start) / 25.0)
        assert [f for _, f in video_io.iter_frames(clip, start=end - start - 1)][0].tobytes() == \
            source_frames[end - 1].tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{k}.mp4" for k in range(len(SPANS)))


def test_seeking_inside_a_copied_clip_finds_the_right_frame(source, source_frames, tmp_path):
    clip = dict(clip_copy.copy_clips(source, [(30, 110)], tmp_path))[0]
    assert [np.array_equal(f, source_frames[30 + k]) for k, f in
            zip((3, 41, 79), video_io.read_frames(clip, [3, 41, 79]))] == [True, True, True]


def test_a_clip_copy_stopped_early_leaves_no_partial_file(source, tmp_path):
    clips = clip_copy.copy_clips(source, [(0, 25), (30, 70)], tmp_path)
    position, first = next(clips)
    clips.close()
    assert (position, sorted(p.name for p in tmp_path.iterdir())) == (0, ["0.mp4"])


def test_spans_outside_the_video_are_refused(source, tmp_path):
    with pytest.raises(ValueError, match="not within the video's 120 frames"):
        list(clip_copy.copy_clips(source, [(100, 121)], tmp_path))
    with pytest.raises(ValueError):
        list(clip_copy.copy_clips(source, [(5, 5)], tmp_path))
    assert list(tmp_path.iterdir()) == []


def _ffmpeg_video(path, *args) -> str:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
                    *args, str(path)], check=True)
    return str(path)


def test_sources_that_cannot_be_copied_say_why(tmp_path):
    mp4v = make_test_video(tmp_path / "mp4v.mp4", codec="mp4v")
    assert clip_copy.copy_refusal(mp4v) == "the video codec is mpeg4, not H.264"
    yuv444 = _ffmpeg_video(tmp_path / "444.mp4", "-c:v", "libx264", "-pix_fmt", "yuv444p")
    assert clip_copy.copy_refusal(yuv444) == "the pixel format is yuv444p, not 8-bit 4:2:0"
    mkv = _ffmpeg_video(tmp_path / "h264.mkv", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    assert clip_copy.copy_refusal(mkv).startswith("the container is matroska")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert clip_copy.copy_refusal(text).startswith("the file cannot be demuxed")


def test_a_source_with_its_own_edit_list_is_cut_from_its_presented_frames(source, source_frames, tmp_path):
    # A copied clip is itself such a source: it starts mid-GOP, on packets it decodes but never shows.
    inner = dict(clip_copy.copy_clips(source, [(30, 110)], tmp_path / "inner"))[0]
    inner_frames = [frame for _, frame in video_io.iter_frames(inner)]
    assert len(inner_frames) == 80 and np.array_equal(inner_frames[0], source_frames[30])
    index = clip_copy.packet_index(inner)
    assert index.frame_count == 80 and not all(p.presented for p in index.packets)
    spans = [(0, 10), (12, 25), (40, 80)]  # the first needs the unshown keyframe (source frame 25)
    out = dict(clip_copy.copy_clips(inner, spans, tmp_path / "outer"))
    for position, (start, end) in enumerate(spans):
        got = [frame for _, frame in video_io.iter_frames(out[position])]
        assert len(got) == end - start
        assert all(np.array_equal(g, inner_frames[start + k]) for k, g in enumerate(got))


def test_a_span_with_no_keyframe_before_it_cannot_be_copied():
    from fractions import Fraction

    # An open stream cut before its first keyframe: frames 0-2 have no keyframe to start decoding from.
    packets = [clip_copy._Packet(pts=k * 512, dts=k * 512, keyframe=k == 3, presented=True) for k in range(6)]
    index = clip_copy.PacketIndex(packets=packets, pts_sorted=[p.pts for p in packets], end_pts=6 * 512,
                                  time_base=Fraction(1, 12800))
    assert clip_copy.plan_clips(index, [(3, 6)])[0].first == 3
    with pytest.raises(clip_copy.CannotCopy, match="no keyframe at or before frame 1"):
        clip_copy.plan_clips(index, [(3, 6), (1, 3)])


def test_every_frame_as_its_own_clip(source, source_frames, tmp_path):
    # 120 one-frame clips, up to 25 of them being written at once (each from the keyframe before it).
    spans = [(k, k + 1) for k in range(FRAMES)]
    out = dict(clip_copy.copy_clips(source, spans, tmp_path))
    assert len(out) == FRAMES
    for k in range(0, FRAMES, 7):
        got = [frame for _, frame in video_io.iter_frames(out[k])]
        assert len(got) == 1 and np.array_equal(got[0], source_frames[k])
