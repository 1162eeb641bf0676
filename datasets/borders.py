"""Black letterbox / pillarbox bars: the fraction of the picture they take on each side (OpenCV/numpy, no Django).

:func:`measure_borders` looks at a clip's sampled frames (BGR, as decoded). In each frame a pixel is *dark* when all
three channels are below ``dark_threshold`` (16 of 255: video black is 16 in limited range, and compression
leaves bars within a few levels of it), and a row (column) is a *bar line* when at least ``line_dark_fraction``
(95 %) of its pixels are dark, so a stray bright pixel or a compression speck does not end a bar. A frame's bar on
one side is the run of bar lines from that edge, kept only if it ends on a **sharp edge**: the few lines just
inside it must be mostly picture (``edge_coverage``: at least 25 % of their pixels not dark). That is what tells a
bar from dark content: a fluorescence image's black background also gives dark lines from the edge, but it ends
raggedly, where the first cell happens to be, and is not counted (the error goes the safe way: a dark clip is
not dropped for borders it may not have; experts still see it).

Across frames, a bar must be **present in most of them**: the reported width on a side is the largest ``k`` such
that at least ``min_frame_fraction`` (60 %) of the frames have a bar of ``k`` lines or more there. Frames that are
entirely dark (a fade to black) say nothing about bars and are left out; if every frame is dark the result is 0 on
every side.

Subtitles burned into a bar make its lines not dark: the bar is then measured up to the subtitles only (the text
stage measures the subtitles themselves).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

EDGE_LINES = 3  # lines just inside a bar that must be picture for the bar to count


@dataclass(frozen=True)
class BorderResult:
    """Fractions (0..1) of the frame's height (top, bottom) and width (left, right) covered by black bars."""

    top: float
    bottom: float
    left: float
    right: float

    def largest(self) -> tuple[str, float]:
        """The side with the widest bar and its fraction (``("top", 0.0)`` when there are none)."""
        sides = (("top", self.top), ("bottom", self.bottom), ("left", self.left), ("right", self.right))
        return max(sides, key=lambda side: side[1])


def _dark_lines(frame: np.ndarray, dark_threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's and each column's fraction of dark pixels (every channel below the threshold)."""
    top = max(0, int(dark_threshold) - 1)
    if frame.ndim == 2:
        mask = cv2.inRange(frame, 0, top)
    else:
        mask = cv2.inRange(frame, (0, 0, 0), (top, top, top))
    rows = cv2.reduce(mask, 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel() / 255.0
    cols = cv2.reduce(mask, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel() / 255.0
    return rows, cols


def _bar_run(line_dark: np.ndarray, line_dark_fraction: float, edge_coverage: float) -> int:
    """The bar's width in lines from index 0 of ``line_dark`` (each line's fraction of dark pixels), or 0."""
    is_bar = line_dark >= line_dark_fraction
    run = int(np.argmin(is_bar)) if not is_bar.all() else len(is_bar)
    if run == 0 or run >= len(is_bar):
        return 0  # no bar, or nothing but dark lines on this axis (no picture to frame)
    inside = line_dark[run:run + EDGE_LINES]
    if 1.0 - float(inside.mean()) < edge_coverage:
        return 0  # a ragged end: dark content, not a bar
    return run


def measure_borders(frames: Sequence[np.ndarray], *, dark_threshold: int = 16, line_dark_fraction: float = 0.95,
                    edge_coverage: float = 0.25, min_frame_fraction: float = 0.6) -> BorderResult:
    """Bar fractions on each side of ``frames`` (see the module docstring). Empty input gives zeros."""
    runs: list[tuple[int, int, int, int]] = []
    height = width = 0
    for frame in frames:
        height, width = frame.shape[:2]
        row_dark, col_dark = _dark_lines(frame, dark_threshold)
        if (row_dark >= line_dark_fraction).all():
            continue  # a fully dark frame: no information about bars
        runs.append((_bar_run(row_dark, line_dark_fraction, edge_coverage),
                     _bar_run(row_dark[::-1], line_dark_fraction, edge_coverage),
                     _bar_run(col_dark, line_dark_fraction, edge_coverage),
                     _bar_run(col_dark[::-1], line_dark_fraction, edge_coverage)))
    if not runs:
        return BorderResult(0.0, 0.0, 0.0, 0.0)
    table = np.sort(np.asarray(runs), axis=0)  # each side's runs, ascending
    need = max(1, math.ceil(min_frame_fraction * len(runs)))  # frames that must have at least the reported bar
    top, bottom, left, right = (int(v) for v in table[len(runs) - need])
    return BorderResult(top=top / height, bottom=bottom / height, left=left / width, right=right / width)
