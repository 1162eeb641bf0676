"""Reading, probing and cutting video files: plain Python, OpenCV and an ffmpeg subprocess (no Django).

Frame numbers everywhere are OpenCV's decode order from 0 (``cv2.VideoCapture`` with the FFmpeg backend), and frames
are ``numpy.ndarray`` of shape ``(height, width, 3)``, ``uint8``, **BGR** (OpenCV's channel order).

* :func:`probe` - width, height, fps, frame count, duration, codec and container of a file, or
  :class:`UnreadableVideo` with a reason a person can read (empty, not a video, truncated, zero fps...).
* :func:`iter_frames` / :func:`read_frames` - sequential decoding (``grab()`` for skipped frames, which skips the
  colour conversion); :func:`read_frames` seeks only across long gaps between wanted frames.
* :func:`probe` counts the frames a container presents: an MP4 edit list (``datasets.clip_copy``'s clips) can
  leave some of the stored ones out.
* :func:`decode_frames` - PyAV decoding, single-threaded, frames left unconverted until :func:`frame_to_bgr`
  (bit-identical to OpenCV's) or :func:`plane_thumbnail`: what scene splitting reads every frame with.
* :func:`write_clip` - frames ``[start, end)`` exactly, decoded with OpenCV (the same numbering as above) and piped
  raw to ffmpeg: H.264, yuv420p, ``+faststart``; written to a temporary file beside the destination and renamed.
* :func:`write_thumbnail` - a JPEG of one frame, also written then renamed.
* :func:`make_test_video` - a small synthetic video for tests and benchmarks.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# FFmpeg's own log lines ("partial file", "moov atom not found") go to stderr unless silenced; the reasons that
# matter come back as UnreadableVideo. Read when OpenCV opens its first capture.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

#: How many frames before the declared end :func:`probe` decodes to detect a truncated file (at least this many,
#: or 2 % of the declared count, whichever is more: containers that estimate their frame count can be off by a few).
TAIL_CHECK_FRAMES = 12
#: :func:`read_frames` seeks instead of grabbing forward when the next wanted frame is more than this many frames
#: ahead (a seek restarts decoding at the previous keyframe, so short gaps are cheaper to decode through).
SEEK_GAP_FRAMES = 250
#: ffmpeg's x264 settings for clips: visually lossless at a speed that keeps the pipeline CPU-bound on decoding.
CLIP_X264_ARGS = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                  "-movflags", "+faststart")
FFMPEG_TIMEOUT_SECONDS = 3600


class UnreadableVideo(Exception):
    """The file is not a video this site can read; ``reason`` says why in a sentence for people."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float  # seconds: frame_count / fps
    codec: str  # the stream's FourCC as OpenCV reports it, lower case ("avc1", "h264", "hevc", "vp90", "mp4v"...)
    container: str = ""  # file type from the file's own bytes: "mp4", "mov", "webm", "mkv", "avi", ... ("" unknown)

    @property
    def extension(self) -> str:
        """The file extension this video should be stored under (from its bytes, never from a name)."""
        return self.container or "bin"


# ----------------------------------------------------------------------------------------------------- probing


def sniff_container(path: str | os.PathLike) -> str:
    """The container format from the file's first bytes ("" when it is no video container known here)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        return "mov" if brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"  # QuickTime files without an ftyp box
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:64] else "mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogv"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "mpg"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "wmv"
    if len(head) >= 376 and head[0] == 0x47 and head[188] == 0x47:
        return "ts"
    return ""


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise UnreadableVideo("The file is not a video that can be decoded (no readable video stream).")
    return capture


def _fourcc(capture: cv2.VideoCapture) -> str:
    value = int(capture.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return "".join(c for c in text if c.isprintable()).strip().lower()[:16]


def probe(path: str | os.PathLike) -> VideoInfo:
    """Measure a video file, refusing what cannot be used.

    Raises :class:`UnreadableVideo` when the file is missing or empty, is no known video container, has no
    decodable video stream, reports no frame rate or size, or is truncated: fewer frames decode than it declares
    (checked by decoding the last declared frames; for example an MP4 cut in half). ``frame_count`` is the number
    of frames that actually decode (the declared count can be a few frames off for containers that estimate it)."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableVideo("The file does not exist.")
    if path.stat().st_size == 0:
        raise UnreadableVideo("The file is empty (0 bytes).")
    container = sniff_container(path)
    if not container:
        raise UnreadableVideo("The file is not a video: its contents are not any known video container "
                              "(MP4, MOV, WebM, MKV, AVI, MPEG, ...).")
    capture = _open(path)
    try:
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        codec = _fourcc(capture)
        if not (math.isfinite(fps) and fps > 0):
            raise UnreadableVideo("The video reports no frame rate (0 fps).")
        if width <= 0 or height <= 0:
            raise UnreadableVideo("The video reports no picture size.")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise UnreadableVideo("The video's first frame cannot be decoded (damaged or truncated file).")
        if declared <= 0:
            raise UnreadableVideo("The video declares no frames.")
        declared = min(declared, _presented_frames(path, fps) or declared)
        frame_count = _decodable_count(capture, declared)
        if frame_count < declared - max(2, declared // 100):
            raise UnreadableVideo(f"The video is truncated: it declares {declared} frames but its last frames "
                                  f"cannot be decoded (only about {frame_count} can).")
    finally:
        capture.release()
    return VideoInfo(width=width, height=height, fps=fps, frame_count=frame_count,
                     duration=frame_count / fps, codec=codec, container=container)


def _presented_frames(path: Path, fps: float) -> int | None:
    """How many frames the container presents by its stream duration, when it says: fewer than it stores when an
    edit list leaves some out (the pipeline's copied clips store the packets before their first frame and after
    their last, which decoders drop). OpenCV only reports the stored count."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration is None or stream.time_base is None:
                return None
            return round(float(stream.duration * stream.time_base) * fps)
    except (av.FFmpegError, IndexError):
        return None


def _decodable_count(capture: cv2.VideoCapture, declared: int) -> int:
    """The number of frames that decode, counted from a little before the declared end (the capture has read
    frame 0). Falling short of ``declared`` by more than 1 % (at least 2 frames) means a truncated file."""
    window = max(TAIL_CHECK_FRAMES, declared // 50)
    start = declared - window
    if start <= 1 or not capture.set(cv2.CAP_PROP_POS_FRAMES, start):
        start = 1  # short video (or no seeking): count every frame
    decoded = 0
    while capture.grab():  # past the declared end too: some containers under-declare
        decoded += 1
    return start + decoded


# ----------------------------------------------------------------------------------------------------- decoding


def iter_frames(path: str | os.PathLike, *, step: int = 1, start: int = 0,
                end: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for frames ``start, start+step, ...`` below ``end`` (default: to the end of the
    file), decoding sequentially; frames in between are grabbed, not converted."""
    if step < 1:
        raise ValueError("step must be at least 1")
    capture = _open(path)
    try:
        index = 0
        if start > 0:
            if start > SEEK_GAP_FRAMES and capture.set(cv2.CAP_PROP_POS_FRAMES, start):
                index = start
            while index < start and capture.grab():
                index += 1
            if index < start:
                return
        while end is None or index < end:
            if not capture.grab():
                return
            if (index - start) % step == 0:
                ok, frame = capture.retrieve()
                if not ok:
                    return
                yield index, frame
            index += 1
    finally:
        capture.release()


#: 8-bit planar pixel formats whose planes :func:`plane_thumbnail` reads directly (any other is converted first).
_PLANAR_8BIT = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray"})


def decode_frames(path: str | os.PathLike) -> Iterator:
    """Every frame of the first video stream, in OpenCV's numbering (presentation order from 0), as PyAV
    ``VideoFrame`` objects, NOT converted: :func:`frame_to_bgr` converts the ones that are needed (bit-identical to
    OpenCV's ``read()``), :func:`plane_thumbnail` summarises any frame without converting it.

    Single-threaded decoding, for the CPU it saves: OpenCV's ``read()`` decodes with frame threads and converts
    every frame to BGR, and costs about twice the CPU of this for a 720p H.264 video (1.1-1.3 s against 0.57 s for
    500 frames). Stops at the first frame that cannot be decoded, as OpenCV's reading does. Raises
    :class:`UnreadableVideo` when the file has no decodable video stream."""
    import av

    try:
        container = av.open(os.fspath(path))
    except av.FFmpegError as error:
        raise UnreadableVideo("The file is not a video that can be decoded (no readable video stream).") from error
    try:
        if not container.streams.video:
            raise UnreadableVideo("The file is not a video that can be decoded (no readable video stream).")
        frames = container.decode(container.streams.video[0])
        while True:
            try:
                frame = next(frames)
            except (StopIteration, av.FFmpegError):
                return
            yield frame
    finally:
        container.close()


_reformatters = threading.local()


def scaled_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    """(width, height) scaled down to at most ``max_width`` wide, aspect kept (unchanged if narrower or None)."""
    if not max_width or width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def downscale(frame: np.ndarray, max_width: int | None) -> np.ndarray:
    """``frame`` (BGR or grey) scaled down to at most ``max_width`` pixels wide, aspect kept, by area averaging
    (``cv2.INTER_AREA``); the frame itself when it is no wider (or ``max_width`` is None)."""
    size = scaled_size(frame.shape[1], frame.shape[0], max_width)
    if size == (frame.shape[1], frame.shape[0]):
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def frame_to_bgr(frame, *, max_width: int | None = None) -> np.ndarray:
    """A PyAV frame as OpenCV would have returned it (BGR, ``uint8``), bit-identical; or, with ``max_width``, scaled
    down to at most that many pixels wide in the same step (area averaging, as ``cv2.INTER_AREA``; not
    bit-identical to resizing OpenCV's frame: about 1.3 grey levels apart on average). Converting straight to the
    smaller size costs about half the full-size conversion (720p to 640x360: 0.9 ms against 1.6 ms), and what
    consumes the frames then works on fewer pixels.

    One converter per thread, reused: PyAV's ``frame.to_ndarray(format=...)`` sets up a new swscale context for
    every frame, which costs about twice the conversion itself (720p: 2.3-2.8 ms against 0.8-1.2 ms per frame)."""
    reformatter = getattr(_reformatters, "bgr", None)
    if reformatter is None:
        from av.video.reformatter import VideoReformatter

        reformatter = _reformatters.bgr = VideoReformatter()
    width, height = scaled_size(frame.width, frame.height, max_width)
    if (width, height) == (frame.width, frame.height):
        return reformatter.reformat(frame, format="bgr24").to_ndarray()
    return reformatter.reformat(frame, format="bgr24", width=width, height=height,
                                interpolation="AREA").to_ndarray()


def plane_thumbnail(frame, columns: int) -> np.ndarray:
    """A coarse summary of a PyAV frame for telling frames apart: every n-th sample of each of its planes (about
    `columns` per row; n = plane width // columns, starting n // 2 in), flattened, as ``int16``. Read from the
    decoded planes with no colour conversion or resampling (8-bit planar formats; others are converted to BGR
    first)."""
    if frame.format.name not in _PLANAR_8BIT:
        bgr = frame_to_bgr(frame)
        stride = max(1, bgr.shape[1] // columns)
        return bgr[stride // 2::stride, stride // 2::stride].astype(np.int16).ravel()
    parts = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        stride = max(1, plane.width // columns)
        parts.append(rows[stride // 2::stride, stride // 2:plane.width:stride].ravel())
    return np.concatenate(parts).astype(np.int16)


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> list[np.ndarray]:
    """The frames at ``indices`` (any order, repeats allowed), in the order asked. Decodes forward; seeks only
    when the next wanted frame is more than :data:`SEEK_GAP_FRAMES` ahead. Raises :class:`UnreadableVideo` if a
    frame cannot be decoded (an index past the end, say) and ``ValueError`` for a negative index."""
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return []
    if wanted[0] < 0:
        raise ValueError(f"frame index {wanted[0]} is negative")
    found: dict[int, np.ndarray] = {}
    capture = _open(path)
    try:
        position = 0  # the index of the frame the next grab() returns
        for target in wanted:
            if target - position > SEEK_GAP_FRAMES and capture.set(cv2.CAP_PROP_POS_FRAMES, target):
                position = target
            while position < target:
                if not capture.grab():
                    raise UnreadableVideo(f"Frame {target} cannot be decoded: the video ends at frame {position}.")
                position += 1
            ok, frame = capture.read()
            if not ok or frame is None:
                raise UnreadableVideo(f"Frame {target} cannot be decoded.")
            found[target] = frame
            position += 1
    finally:
        capture.release()
    return [found[int(i)] for i in indices]


# ----------------------------------------------------------------------------------------------------- writing


def _ffmpeg() -> str:
    binary = shutil.which("ffmpeg")
    if not binary:
        raise RuntimeError("ffmpeg is not installed (Debian: apt-get install ffmpeg)")
    return binary


def _rate(fps: float) -> str:
    """fps as the exact fraction ffmpeg wants (29.97 -> 30000/1001)."""
    fraction = Fraction(fps).limit_denominator(1001)
    return f"{fraction.numerator}/{fraction.denominator}"


def _temp_beside(dest: Path, suffix: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.stem[:40]}.", suffix=".part" + suffix, dir=dest.parent)
    os.close(fd)
    return Path(name)


class H264Writer:
    """An ffmpeg process reading raw BGR frames on stdin and writing an H.264 MP4 (``CLIP_X264_ARGS``) to ``path``:
    ``write(frame)`` each frame, then ``close()`` (raises if ffmpeg failed) or ``abort()``. For one file written
    whole and atomically, :func:`write_frames` is simpler; this class is for several files fed from one decoding
    pass (the pipeline's clips)."""

    def __init__(self, path: Path, *, width: int, height: int, fps: float, extra: Sequence[str] = ()):
        self.width, self.height = width, height
        even = "crop=trunc(iw/2)*2:trunc(ih/2)*2"
        command = [
            _ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", _rate(fps), "-i", "-",
            "-an", *(["-vf", even] if width % 2 or height % 2 else []), *CLIP_X264_ARGS, *extra,
            "-f", "mp4", str(path),
        ]
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=self.stderr)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame of shape {frame.shape} in a {self.width}x{self.height} video")
        try:
            self.process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            self.close(check=True)
            raise

    def close(self, *, check: bool = True) -> None:
        try:
            if self.process.stdin and not self.process.stdin.closed:
                try:
                    self.process.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                code = self.process.wait(timeout=FFMPEG_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
            if check and code != 0:
                self.stderr.seek(0)
                message = self.stderr.read().decode(errors="replace").strip()[-2000:]
                raise RuntimeError(f"ffmpeg failed ({code}): {message}")
        finally:
            self.stderr.close()

    def abort(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.close(check=False)


def write_clip(src_path: str | os.PathLike, start_frame: int, end_frame: int, fps: float,
               dest_path: str | os.PathLike) -> int:
    """Write frames ``[start_frame, end_frame)`` of ``src_path`` (OpenCV's numbering, as everywhere here) to
    ``dest_path`` as an H.264 MP4 (yuv420p, ``+faststart``, no audio) at ``fps``; returns the number of frames
    written, always ``end_frame - start_frame``.

    Frames are decoded with OpenCV and piped raw to ffmpeg, so the clip holds exactly those frames. The file is
    written beside ``dest_path`` under a temporary name and renamed when complete: ``dest_path`` is either absent or
    whole. Raises :class:`UnreadableVideo` if the source ends before ``end_frame`` (nothing is written) and
    ``ValueError`` for an empty or negative range."""
    if start_frame < 0 or end_frame <= start_frame:
        raise ValueError(f"empty or negative frame range [{start_frame}, {end_frame})")
    if not (fps and fps > 0):
        raise ValueError("fps must be positive")
    frames = (frame for _, frame in iter_frames(src_path, start=start_frame, end=end_frame))
    return write_frames(frames, dest_path, fps, expect=end_frame - start_frame,
                        short=f"Frames {start_frame}..{end_frame - 1} cannot all be decoded")


def write_frames(frames: Iterable[np.ndarray], dest_path: str | os.PathLike, fps: float, *,
                 expect: int | None = None, short: str = "The frames ended early") -> int:
    """Write BGR ``frames`` (all of one size) to ``dest_path`` as an H.264 MP4 at ``fps``; returns how many. Written
    under a temporary name beside it and renamed when complete, so ``dest_path`` is either absent or whole. With
    `expect`, fewer frames raise :class:`UnreadableVideo` ("<short>: only n were.") and nothing is written."""
    dest = Path(dest_path)
    temp = _temp_beside(dest, ".mp4")
    pipe = None
    written = 0
    try:
        for frame in frames:
            if pipe is None:
                pipe = H264Writer(temp, width=frame.shape[1], height=frame.shape[0], fps=fps)
            pipe.write(frame)
            written += 1
        if expect is not None and written != expect:
            raise UnreadableVideo(f"{short}: only {written} were.")
        if pipe is None:
            raise UnreadableVideo("There are no frames to write.")
        pipe.close()
        pipe = None
        os.replace(temp, dest)
    except BaseException:
        if pipe is not None:
            pipe.abort()
        temp.unlink(missing_ok=True)
        raise
    return written


def write_thumbnail(frame: np.ndarray, dest_path: str | os.PathLike, *, max_width: int | None = 480,
                    quality: int = 85) -> None:
    """Write ``frame`` (BGR) as a JPEG, scaled down to ``max_width`` pixels wide if wider (None: full size);
    written under a temporary name and renamed."""
    ok, data = cv2.imencode(".jpg", downscale(frame, max_width), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("the frame cannot be encoded as JPEG")
    dest = Path(dest_path)
    temp = _temp_beside(dest, ".jpg")
    try:
        temp.write_bytes(data.tobytes())
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------- synthetic videos


def index_colour(index: int) -> tuple[int, int, int]:
    """A BGR colour for frame ``index`` of :func:`make_test_video`'s default drawing: neighbouring frames differ by
    at least 60 levels in some channel, so a frame can be recognised by its mean colour after compression."""
    return ((40 + index * 67) % 216 + 20, (90 + index * 131) % 216 + 20, (150 + index * 199) % 216 + 20)


def solid_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of the default drawing: the whole picture in :func:`index_colour`."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = index_colour(index)
    return frame


def make_test_video(path: str | os.PathLike, *, frames: int = 24, size: tuple[int, int] = (160, 120),
                    fps: float = 24.0, draw: Callable[[int, int, int], np.ndarray] | None = None,
                    codec: str = "h264") -> Path:
    """Write a synthetic video of ``frames`` frames, ``size=(width, height)``, at ``fps``; returns its path.

    ``draw(index, width, height)`` returns frame ``index`` as a BGR ``uint8`` array of shape ``(height, width, 3)``;
    the default fills each frame with :func:`index_colour` (see :func:`solid_frame`). ``codec="h264"`` pipes the
    frames to ffmpeg (H.264 MP4 with ``+faststart``, what Chromium plays); ``codec="mp4v"`` uses OpenCV's own
    writer (MPEG-4 part 2, moov atom at the end), which needs no ffmpeg binary."""
    if frames < 1:
        raise ValueError("frames must be at least 1")
    width, height = size
    draw = draw or solid_frame
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "mp4v":
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {path}")
        try:
            for index in range(frames):
                writer.write(draw(index, width, height))
        finally:
            writer.release()
        return path
    if codec != "h264":
        raise ValueError(f"unknown codec {codec!r}: use 'h264' or 'mp4v'")
    pipe = H264Writer(path, width=width, height=height, fps=fps, extra=("-g", str(max(1, int(fps)))))
    try:
        for index in range(frames):
            pipe.write(draw(index, width, height))
    except BaseException:
        pipe.abort()
        raise
    pipe.close()
    return path
