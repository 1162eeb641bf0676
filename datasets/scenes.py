"""Scene splitting: cut a video where the embeddings of adjacent sampled frames stop looking alike (no Django).

:func:`detect_scenes` decodes the video once, front to back, and never seeks:

1. **Sample.** Every ``step``-th frame goes to the embedder, ``step = round(fps / sample_fps)`` (25 fps at 4
   samples/s: every 6th frame), in batches of ``batch_size`` (rows are L2-normalised: a dot product is a cosine
   similarity).
2. **Cut.** Wherever the similarity of two consecutive samples ``a < b`` is below ``threshold``, the shot changes
   somewhere in ``(a, b]``.
3. **Refine.** Every frame is decoded and summarised on the fly by a coarse thumbnail of its decoded planes (every
   n-th sample, about 80 per row, of Y, U and V: no colour conversion, no resampling), and the mean absolute
   difference of each frame's thumbnail from the previous one is kept for the frames since the last processed
   sample. The cut goes on the frame of ``(a, b]`` with the largest difference: the exact frame of a hard cut. One
   cut per window: two cuts closer than one sampling interval become one (the shot between them would be far
   shorter than any sensible minimum clip length).
4. **Segments.** The cuts split ``[0, frame_count)`` into segments that cover the video in order (end exclusive;
   ``frame_count`` is the number of frames that decode). Each segment shorter than ``min_clip_seconds`` is flagged
   ``too_short``; ``SceneResult.clips`` holds only the others. Short segments are *not* merged into a neighbour: a
   shot change inside a clip is what splitting exists to prevent, so a short shot is left out (a gap between clips)
   rather than glued to another.

Decoding is PyAV's, single-threaded (``video_io.decode_frames``), and only the sampled frames are converted to BGR
(bit-identical to OpenCV's ``read()``, which numbers frames the same way; or, with ``sample_max_width``, scaled down
in the same step, which is what the pipeline does: the embedder and the later stages need no more than 640 pixels).
OpenCV's ``read()`` of every frame, used before, costs about twice the CPU for 720p H.264: frame threads, and a BGR
conversion of every frame. The refinement needs the frames between two samples, and reading them from the decoded
planes is the cheap way; the other, re-decoding each cut's window after a seek, restarts decoding at the previous
keyframe, up to a whole GOP (x264's default is 250 frames) per cut. OpenCV still opens the file first: its refusal and
its frame rate are the ones every other reader here uses.

Memory is bounded whatever the video's length: at most ``batch_size`` sampled frames wait for the embedder, the
refinement keeps one float per frame for about ``batch_size * step`` frames, and with ``frames_per_segment`` set,
at most ``2 * frames_per_segment`` sampled frames of the current segment are kept (when the buffer fills, every
other frame is dropped and the keeping stride doubles, so the kept frames stay evenly spaced).
``on_segment(segment, frames)`` is called as soon as each segment ends, with up to ``frames_per_segment`` evenly
spaced sampled frames of it: the measuring stages (borders, text) can use them instead of decoding the video again.

A cut within the last sampling interval (after the last sampled frame) is not looked for: the segment it would
start is shorter than ``1 / sample_fps`` seconds.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from datasets import video_io
from datasets.embedders import Embedder
from datasets.video_io import UnreadableVideo

import cv2  # noqa: E402  (after video_io, which sets OpenCV's FFmpeg log level)

THUMB_COLUMNS = 80  # the refinement's thumbnails: every n-th pixel, n = width // THUMB_COLUMNS
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Segment:
    start_frame: int
    end_frame: int  # exclusive
    too_short: bool = False

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class Cut:
    frame: int  # the first frame of the new shot
    similarity: float  # cosine similarity of the two samples around it


@dataclass
class SceneResult:
    fps: float
    frame_count: int
    embedder: str
    segments: list[Segment]  # all of them, covering [0, frame_count) in order
    clips: list[tuple[int, int]]  # (start_frame, end_frame) of the segments that are not too short
    sample_step: int = 1
    cuts: list[Cut] = field(default_factory=list)


class _SegmentFrames:
    """Up to ``2 * keep`` evenly spaced sampled frames of the current segment (every other one dropped when full)."""

    def __init__(self, keep: int):
        self.keep = keep
        self.items: list[tuple[int, np.ndarray]] = []
        self.stride = 1
        self.seen = 0

    def add(self, index: int, frame: np.ndarray) -> None:
        if self.keep <= 0:
            return
        if self.seen % self.stride == 0:
            self.items.append((index, frame))
            if len(self.items) > 2 * self.keep:
                self.items = self.items[::2]
                self.stride *= 2
        self.seen += 1

    def take_before(self, end: int) -> list[np.ndarray]:
        """The chosen frames before frame ``end``; the buffer restarts with the frames from ``end`` on."""
        mine = [frame for index, frame in self.items if index < end]
        rest = [(index, frame) for index, frame in self.items if index >= end]
        self.items, self.stride, self.seen = [], 1, 0
        for index, frame in rest:
            self.add(index, frame)
        if len(mine) > self.keep:
            picks = np.unique(np.round(np.linspace(0, len(mine) - 1, self.keep)).astype(int))
            mine = [mine[p] for p in picks]
        return mine


def detect_scenes(path: str | os.PathLike, *, embedder: Embedder, sample_fps: float, threshold: float,
                  min_clip_seconds: float, frames_per_segment: int = 0,
                  on_segment: Callable[[Segment, list[np.ndarray]], None] | None = None,
                  on_progress: Callable[[int], None] | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, sample_max_width: int | None = None) -> SceneResult:
    """Split the video at ``path`` into shots (see the module docstring for the method).

    ``sample_max_width``: the sampled frames (for the embedder, and handed to ``on_segment``) are converted
    straight to at most this many pixels wide (``video_io.frame_to_bgr``); None: full size, bit-identical to
    OpenCV's. The pipeline and ``manage.py detect_scenes`` use ``sample_frames.SAMPLE_MAX_WIDTH`` (640).

    ``threshold``: a cut where the cosine similarity of adjacent samples is below it (the paper: 0.85).
    ``on_progress(frames_decoded)`` is called after each batch of samples (it may raise to stop the work).
    Raises :class:`~datasets.video_io.UnreadableVideo` when the file cannot be decoded and ``ValueError`` for a
    non-positive ``sample_fps``."""
    if not (sample_fps and sample_fps > 0):
        raise ValueError("sample_fps must be positive")
    path = os.fspath(path)
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise UnreadableVideo("The file is not a video that can be decoded (no readable video stream).")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if not (math.isfinite(fps) and fps > 0):
        capture.release()
        raise UnreadableVideo("The video reports no frame rate (0 fps).")
    capture.release()  # OpenCV says what it could open, and the frame rate; PyAV decodes (cheaper, see below)
    step = max(1, round(fps / sample_fps))
    batch_size = max(1, int(batch_size))
    keep = _SegmentFrames(frames_per_segment if on_segment else 0)
    segments: list[Segment] = []
    cuts: list[Cut] = []
    # changes[i - changes_base]: how much frame i differs from frame i - 1 (kept from the last processed sample on)
    changes: list[float] = []
    state = {"start": 0, "prev": None, "changes_base": 0}  # segment start; previous sample (index, row)

    def close_segment(end: int) -> None:
        start = state["start"]
        segment = Segment(start, end, too_short=(end - start) / fps < min_clip_seconds)
        segments.append(segment)
        frames = keep.take_before(end)
        state["start"] = end
        if on_segment is not None:
            on_segment(segment, frames)

    def cut_between(a: int, b: int) -> int:
        """The frame of ``(a, b]`` that differs most from the frame before it."""
        base = state["changes_base"]
        window = changes[a + 1 - base:b + 1 - base]
        return a + 1 + int(np.argmax(window)) if window else b

    def process(batch: list[tuple[int, np.ndarray]]) -> None:
        if not batch:
            return
        rows = np.asarray(embedder.embed([frame for _, frame in batch]), dtype=np.float32)
        if rows.shape[0] != len(batch):
            raise ValueError(f"embedder {embedder.name} returned {rows.shape[0]} rows for {len(batch)} frames")
        for (index, frame), row in zip(batch, rows):
            previous = state["prev"]
            if previous is not None:
                prev_index, prev_row = previous
                similarity = float(np.dot(prev_row, row))
                if similarity < threshold:
                    cuts.append(Cut(frame=cut_between(prev_index, index), similarity=similarity))
                    close_segment(cuts[-1].frame)
            keep.add(index, frame)
            state["prev"] = (index, row)
        last = batch[-1][0]  # later windows start at this sample: older changes are not needed any more
        del changes[:max(0, last - state["changes_base"])]
        state["changes_base"] = max(state["changes_base"], last)

    index = 0
    pending: list[tuple[int, np.ndarray]] = []
    previous_thumb = None
    frames = video_io.decode_frames(path)
    try:
        for frame in frames:
            thumb = video_io.plane_thumbnail(frame, THUMB_COLUMNS)
            changes.append(float(np.abs(thumb - previous_thumb).mean()) if previous_thumb is not None else 0.0)
            previous_thumb = thumb
            if index % step == 0:
                pending.append((index, video_io.frame_to_bgr(frame, max_width=sample_max_width)))
                if len(pending) >= batch_size:
                    process(pending)
                    pending = []
                    if on_progress is not None:
                        on_progress(index + 1)
            index += 1
        process(pending)
    finally:
        frames.close()
    frame_count = index
    if frame_count == 0:
        raise UnreadableVideo("No frame of the video can be decoded.")
    close_segment(frame_count)
    if on_progress is not None:
        on_progress(frame_count)
    clips = [(s.start_frame, s.end_frame) for s in segments if not s.too_short]
    return SceneResult(fps=fps, frame_count=frame_count, embedder=embedder.name, segments=segments, clips=clips,
                       sample_step=step, cuts=cuts)
