"""datasets.video_io on small synthetic videos: probing, refusing bad files, decoding, frame-exact clips."""
import shutil

import cv2
import numpy as np
import pytest

from datasets import video_io
from datasets.video_io import UnreadableVideo, index_colour, make_test_video, probe, read_frames, write_clip

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")

TOLERANCE = 12  # levels per channel lost to two rounds of H.264 yuv420p compression on a flat colour


def mean_colour(frame):
    return frame.reshape(-1, 3).mean(axis=0)


def assert_frame_is(frame, index):
    assert np.abs(mean_colour(frame) - np.array(index_colour(index))).max() <= TOLERANCE, (
        f"expected frame {index} {index_colour(index)}, got {mean_colour(frame).round()}")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("v") / "a.mp4", frames=48, size=(160, 120), fps=24)


def test_probe_reads_size_rate_frames_duration_codec_and_container(video):
    info = probe(video)
    assert (info.width, info.height, info.fps, info.frame_count) == (160, 120, 24.0, 48)
    assert info.duration == pytest.approx(2.0)
    assert info.codec in ("h264", "avc1")
    assert info.container == "mp4" and info.extension == "mp4"


def test_probe_of_an_opencv_mp4v_file_and_an_odd_rate(tmp_path):
    path = make_test_video(tmp_path / "b.mp4", frames=10, size=(64, 48), fps=12.5, codec="mp4v")
    info = probe(path)
    assert (info.width, info.height, info.frame_count) == (64, 48, 10)
    assert info.fps == pytest.approx(12.5)
    assert info.codec in ("mp4v", "fmp4")


def test_probe_of_a_webm_file(tmp_path, video):
    import subprocess

    webm = tmp_path / "c.webm"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(video), "-c:v", "libvpx-vp9", "-b:v", "100k",
                    "-deadline", "realtime", str(webm)], check=True)
    info = probe(webm)
    assert info.container == "webm" and info.frame_count == 48 and info.fps == pytest.approx(24.0)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"this is plain text, not a video\n" * 20, "not a video"),
    (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500, "not a video that can be decoded"),
])
def test_probe_refuses_files_that_are_not_videos(tmp_path, content, reason):
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(UnreadableVideo) as error:
        probe(path)
    assert reason in error.value.reason


def test_probe_refuses_a_truncated_mp4_either_way_round(tmp_path, video):
    data = video.read_bytes()
    faststart = tmp_path / "faststart-half.mp4"  # index first: it declares frames whose data is missing
    faststart.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableVideo, match="truncated"):
        probe(faststart)
    plain = make_test_video(tmp_path / "plain.mp4", frames=48, codec="mp4v")  # index last: cut, it has none
    cut = tmp_path / "plain-half.mp4"
    cut.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    with pytest.raises(UnreadableVideo, match="not a video that can be decoded"):
        probe(cut)


def test_probe_refuses_a_missing_file(tmp_path):
    with pytest.raises(UnreadableVideo, match="does not exist"):
        probe(tmp_path / "nothing.mp4")


def test_read_frames_returns_the_asked_frames_in_the_asked_order(video):
    indices = [47, 0, 23, 23, 1]
    frames = read_frames(video, indices)
    assert len(frames) == 5 and frames[0].shape == (120, 160, 3) and frames[0].dtype == np.uint8
    for index, frame in zip(indices, frames):
        assert_frame_is(frame, index)
    assert read_frames(video, []) == []
    with pytest.raises(UnreadableVideo, match="Frame 48"):
        read_frames(video, [48])


def test_read_frames_seeks_across_long_gaps_and_lands_on_the_right_frame(tmp_path, monkeypatch):
    monkeypatch.setattr(video_io, "SEEK_GAP_FRAMES", 5)  # force seeks in a short video with keyframes every 8
    path = make_test_video(tmp_path / "gop.mp4", frames=60, size=(64, 48), fps=8)
    for index, frame in zip([3, 29, 30, 51, 59], read_frames(path, [3, 29, 30, 51, 59])):
        assert_frame_is(frame, index)


def test_iter_frames_steps_and_ranges(video):
    seen = [(i, f) for i, f in video_io.iter_frames(video, step=10)]
    assert [i for i, _ in seen] == [0, 10, 20, 30, 40]
    for index, frame in seen:
        assert_frame_is(frame, index)
    assert [i for i, _ in video_io.iter_frames(video, start=45)] == [45, 46, 47]
    assert [i for i, _ in video_io.iter_frames(video, start=5, end=12, step=3)] == [5, 8, 11]
    assert list(video_io.iter_frames(video, start=100)) == []


@pytest.mark.parametrize("start, end", [(0, 1), (0, 48), (7, 31), (40, 48)])
def test_write_clip_is_frame_exact(tmp_path, video, start, end):
    dest = tmp_path / "clips" / "clip.mp4"
    assert write_clip(video, start, end, 24.0, dest) == end - start
    info = probe(dest)
    assert info.frame_count == end - start and info.fps == pytest.approx(24.0)
    assert (info.width, info.height, info.container) == (160, 120, "mp4") and info.codec in ("h264", "avc1")
    first, last = read_frames(dest, [0, end - start - 1])
    assert_frame_is(first, start)
    assert_frame_is(last, end - 1)
    assert [p.name for p in dest.parent.iterdir()] == ["clip.mp4"]  # no temporary file left


def test_write_clip_is_playable_h264_yuv420p_with_faststart(tmp_path, video):
    import json
    import subprocess

    dest = tmp_path / "clip.mp4"
    write_clip(video, 2, 12, 24.0, dest)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(dest)],
                         capture_output=True, check=True, text=True).stdout
    stream = json.loads(out)["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
    data = dest.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: the index comes before the media


def test_write_clip_of_odd_sized_video_crops_to_even(tmp_path):
    src = make_test_video(tmp_path / "odd.mp4", frames=6, size=(66, 50), fps=10, codec="mp4v")
    dest = tmp_path / "odd-clip.mp4"
    write_clip(src, 1, 5, 10.0, dest)
    info = probe(dest)
    assert info.frame_count == 4 and info.width % 2 == 0 and info.height % 2 == 0


def test_write_clip_past_the_end_writes_nothing(tmp_path, video):
    dest = tmp_path / "out" / "clip.mp4"
    with pytest.raises(UnreadableVideo, match="only 8"):
        write_clip(video, 40, 60, 24.0, dest)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ValueError):
        write_clip(video, 5, 5, 24.0, dest)


def test_write_thumbnail_writes_a_scaled_jpeg(tmp_path, video):
    import cv2

    (frame,) = read_frames(video, [3])
    dest = tmp_path / "t" / "thumb.jpg"
    video_io.write_thumbnail(frame, dest, max_width=80)
    assert dest.read_bytes()[:3] == b"\xff\xd8\xff"
    image = cv2.imread(str(dest))
    assert image.shape == (60, 80, 3)
    assert_frame_is(image, 3)
    assert [p.name for p in dest.parent.iterdir()] == ["thumb.jpg"]


def test_make_test_video_with_a_custom_drawing(tmp_path):
    def draw(index, width, height):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : width // 2] = 255 if index % 2 else 0
        return frame

    path = make_test_video(tmp_path / "d.mp4", frames=4, size=(32, 16), fps=4, draw=draw)
    frames = read_frames(path, [0, 1])
    assert frames[0][:, :16].mean() < 30 and frames[1][:, :16].mean() > 220


def test_sniff_container(tmp_path):
    cases = {b"\x00\x00\x00\x14ftypqt  ": "mov", b"\x1a\x45\xdf\xa3\x01\x00webm": "webm",
             b"\x1a\x45\xdf\xa3\x01\x00matroska": "mkv", b"RIFF\x00\x00\x00\x00AVI LIST": "avi",
             b"GIF89a": "", b"%PDF-1.7": ""}
    for head, expected in cases.items():
        path = tmp_path / "f"
        path.write_bytes(head + b"\x00" * 64)
        assert video_io.sniff_container(path) == expected, head


def test_write_frames_writes_whole_files_or_nothing(tmp_path):
    frames = [np.full((48, 64, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    dest = tmp_path / "out" / "five.mp4"
    assert video_io.write_frames(iter(frames), dest, 10.0) == 5
    assert probe(dest).frame_count == 5
    with pytest.raises(UnreadableVideo, match="The frames ended early: only 5 were"):
        video_io.write_frames(frames, tmp_path / "out" / "short.mp4", 10.0, expect=6)
    with pytest.raises(UnreadableVideo, match="no frames"):
        video_io.write_frames([], tmp_path / "out" / "empty.mp4", 10.0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["five.mp4"]  # no partial or temporary file


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_decode_frames_numbers_and_converts_frames_as_opencv_does(tmp_path, codec):
    path = make_test_video(tmp_path / f"{codec}.mp4", frames=30, size=(96, 64), fps=24, codec=codec)
    opencv = [frame for _, frame in video_io.iter_frames(path)]
    ours = [video_io.frame_to_bgr(frame) for frame in video_io.decode_frames(path)]
    assert len(ours) == len(opencv) == 30
    assert all(np.array_equal(a, b) for a, b in zip(ours, opencv))  # bit-identical, frame for frame


def test_the_reused_converter_follows_frames_of_other_sizes(tmp_path):
    """frame_to_bgr keeps one converter per thread: frames of two videos of different sizes, interleaved, still
    convert exactly as OpenCV reads them."""
    small = make_test_video(tmp_path / "small.mp4", frames=6, size=(96, 64), fps=24)
    large = make_test_video(tmp_path / "large.mp4", frames=6, size=(160, 120), fps=24)
    expected = [frame for pair in zip(video_io.iter_frames(small), video_io.iter_frames(large)) for _, frame in pair]
    ours = [video_io.frame_to_bgr(frame)
            for pair in zip(video_io.decode_frames(small), video_io.decode_frames(large)) for frame in pair]
    assert [frame.shape for frame in ours[:2]] == [(64, 96, 3), (120, 160, 3)]
    assert len(ours) == 12 and all(np.array_equal(a, b) for a, b in zip(ours, expected))


def test_frames_converted_at_a_smaller_width(tmp_path):
    path = make_test_video(tmp_path / "wide.mp4", frames=4, size=(320, 180), fps=24)
    full = [frame for _, frame in video_io.iter_frames(path)]
    small = [video_io.frame_to_bgr(frame, max_width=128) for frame in video_io.decode_frames(path)]
    assert [frame.shape for frame in small] == [(72, 128, 3)] * 4  # the height follows the aspect ratio
    for ours, theirs in zip(small, full):
        assert np.abs(ours.astype(int) - cv2.resize(theirs, (128, 72), interpolation=cv2.INTER_AREA)).mean() < 3
    same = [video_io.frame_to_bgr(frame, max_width=640) for frame in video_io.decode_frames(path)]
    assert all(np.array_equal(a, b) for a, b in zip(same, full))  # already narrower: full size, bit-identical
    assert video_io.scaled_size(1920, 1080, 640) == (640, 360) and video_io.scaled_size(854, 480, 640) == (640, 360)
    assert video_io.scaled_size(320, 180, None) == (320, 180)


def test_plane_thumbnails_tell_frames_apart_without_conversion(video):
    frames = list(video_io.decode_frames(video))
    thumbs = [video_io.plane_thumbnail(frame, 20) for frame in frames[:3]]
    assert frames[0].format.name == "yuv420p"
    assert thumbs[0].dtype == np.int16 and thumbs[0].size == 3 * 20 * 15  # Y, U, V (each plane strided on its own)
    assert np.abs(thumbs[1] - thumbs[0]).mean() > 10 and np.array_equal(thumbs[0], video_io.plane_thumbnail(
        frames[0], 20))
    rgb = frames[0].reformat(format="rgb24")  # not 8-bit planar: summarised from its BGR conversion
    assert video_io.plane_thumbnail(rgb, 20).shape == (15 * 20 * 3,)


def test_decode_frames_refuses_what_is_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(UnreadableVideo, match="not a video"):
        list(video_io.decode_frames(text))
