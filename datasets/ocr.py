"""Burned-in text (subtitles, captions, watermarks): how much of the picture it covers (no Django).

:func:`measure_text` runs Tesseract (Debian's ``tesseract-ocr`` with its English data: offline) through
``pytesseract``, imported when first needed. Choices, in order:

1. **Downscale** each frame to at most ``max_width`` (640) pixels wide, area-averaged. Subtitles on a 720p or 1080p
   video keep a cap height of 12-25 pixels at that size; small text is then **upscaled** per region (step 3) to
   the ~30 pixel height Tesseract reads best, so downscaling costs no legibility and makes finding text cheap.
2. **Find text-like regions** with OpenCV before any OCR: the morphological gradient (strong, sharp edges),
   thresholded at ``edge_level``, closed horizontally so the letters of a line join, and kept where the joined
   component is shaped like a line of text (wider than tall, 8 to a third of the frame high, partly but not
   completely filled with edges, and crossed by at least one stroke per two box-heights of width, which an object's
   outline is not). A frame with no such region is text-free without running Tesseract at all.
3. **OCR only those regions**, padded, each scaled up to at least ``ocr_line_height`` pixels and binarised to black
   text on white (Otsu's threshold within the region; the smaller class is the text). A binarised region whose busy
   rows cross fewer than ``MIN_CROSSINGS`` (4) ink edges is not read: a row through a line of letters crosses several
   strokes, a row through a smooth blob (a cell's outline passes step 2's edge tests) enters and leaves it once. On
   the pipeline benchmark's videos this leaves 1 region in 32-45 to read, and on 515 synthetic captions (8 fonts, 1-4
   words, 0.4-2.5 scale, 4 colours, with and without a bar) it changed no result. The rest are stacked into ONE image
   for ONE Tesseract run per call (page segmentation mode 11, sparse text): Tesseract's start-up costs more than
   reading a few lines. :func:`measure_texts` does this for many clips at once (the pipeline's text stage: all of a
   video's clips), stacking every clip's regions on one canvas (in columns when it grows taller than
   ``MAX_CANVAS_HEIGHT``) and giving each word back to the clip and region it lies in, so that Tesseract starts once
   per video rather than once per clip. A region that is unchanged from the previous frame (a static subtitle or logo)
   is read once. Whole natural frames are not given to Tesseract: its global binarisation fails on textured
   backgrounds (it misses plain white subtitles on a dark bar over a noisy picture).
4. **Count** a word when Tesseract's confidence is at least ``min_confidence`` (60) and it has at least
   ``min_alnum`` (2) letters or digits (one-character hits are mostly noise). Per frame, the union of the counted
   words' boxes (a mask, so overlaps count once) over the frame's area; ``area_fraction`` is the largest over the
   frames (text shown in any frame makes the clip unusable), and ``text`` the distinct counted words in order of
   first appearance, space-separated.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.video_io import downscale


class OCRUnavailable(RuntimeError):
    """Tesseract or pytesseract is not installed here."""


@dataclass(frozen=True)
class TextResult:
    area_fraction: float  # the largest, over the frames, fraction of the frame covered by counted words
    text: str  # the distinct counted words, in order of first appearance
    words: tuple[str, ...] = ()


_ALNUM = re.compile(r"[^\W_]", re.UNICODE)
_STRIP = re.compile(r"^[^\w]+|[^\w]+$", re.UNICODE)
_pytesseract = None

MAX_REGIONS_PER_FRAME = 12
REGION_PAD = 6  # pixels (downscaled frame) around a region
CANVAS_GAP = 24  # white pixels between regions in the stacked image
MAX_CANVAS_HEIGHT = 16000  # pixels: a taller stack of regions goes on in a new column
MIN_CROSSINGS = 4  # a region is read only if its binarised tile's busy rows cross this many ink edges


def _tesseract():
    """pytesseract, checked to find its binary; :class:`OCRUnavailable` otherwise."""
    global _pytesseract
    if _pytesseract is not None:
        return _pytesseract
    try:
        import pytesseract
    except ImportError as error:
        raise OCRUnavailable("pytesseract is not installed (pip install pytesseract)") from error
    command = pytesseract.pytesseract.tesseract_cmd
    if not shutil.which(command):
        raise OCRUnavailable(f"the tesseract binary ({command}) is not installed: on Debian, "
                             "apt-get install tesseract-ocr (English data included)")
    try:
        pytesseract.get_tesseract_version()
    except Exception as error:  # noqa: BLE001 - pytesseract raises its own error types
        raise OCRUnavailable(f"tesseract cannot run: {error}") from error
    _pytesseract = pytesseract
    return pytesseract


_env_lock = threading.Lock()


class _single_threaded_tesseract:
    """Run Tesseract with ``OMP_THREAD_LIMIT=1`` (unless set already): on small images its OpenMP threads only
    spin, costing CPU that the other stages and workers need. Only the child process sees it: the variable is set
    around the call and restored."""

    def __enter__(self):
        _env_lock.acquire()
        self.previous = os.environ.get("OMP_THREAD_LIMIT")
        if self.previous is None:
            os.environ["OMP_THREAD_LIMIT"] = "1"
        return self

    def __exit__(self, *exc):
        if self.previous is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
        _env_lock.release()
        return False


def _downscale(frame: np.ndarray, max_width: int) -> np.ndarray:
    return downscale(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), max_width)


def text_regions(gray: np.ndarray, *, edge_level: int = 60) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x, y, w, h)`` of text-like regions in a grayscale frame (step 2 of the module docstring), largest
    first, at most :data:`MAX_REGIONS_PER_FRAME`."""
    height, width = gray.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    gradient = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, kernel)
    edges = (gradient >= edge_level).astype(np.uint8)
    joined = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (15, 3)))
    count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    boxes = []
    for x, y, w, h, _area in stats[1:count]:
        if not (8 <= h <= height / 3) or w < 16 or w < 1.2 * h:
            continue
        box_edges = edges[y:y + h, x:x + w]
        fill = float(box_edges.mean())
        if not 0.08 <= fill <= 0.85:
            continue
        # Letters are a row of vertical strokes: across the middle half of the box, at least one rising edge per two
        # box-heights of width (the arc of a round object's outline crosses a row twice, whatever its width).
        middle = box_edges[h // 4:max(h // 4 + 1, 3 * h // 4)].astype(np.int8)
        rises = float((np.diff(middle, axis=1) > 0).sum(axis=1).mean())
        if rises < 0.5 * w / h:
            continue
        boxes.append((int(x), int(y), int(w), int(h)))
    boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
    return boxes[:MAX_REGIONS_PER_FRAME]


def _binarise(crop: np.ndarray) -> np.ndarray:
    """Black text on white: Otsu's threshold within the crop, the smaller class taken to be the text. (Tesseract's
    own global threshold, over a canvas of many crops, would merge a grey crop's background with its text.)"""
    _, binary = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return binary if float((binary > 0).mean()) >= 0.5 else 255 - binary


def _crossings(binary: np.ndarray) -> float:
    """How many times a typical busy row of a binarised tile changes between ink and paper (the 80th percentile
    over its rows). A row through a line of text crosses several strokes; a row through the outline of a cell or
    any other smooth blob that passed the edge tests enters and leaves it once: two changes, or fewer."""
    changes = np.count_nonzero(np.diff(binary, axis=1), axis=1)
    return float(np.percentile(changes, 80)) if changes.size else 0.0


@dataclass
class _Region:
    frame: int
    box: tuple[int, int, int, int]  # padded, in downscaled frame pixels
    pixels: np.ndarray
    source: int  # index of the region whose OCR this one reuses (itself when read)
    canvas_x: int = 0
    canvas_y: int = 0
    scale: float = 1.0


def _find_regions(frames: Sequence[np.ndarray], *, max_width: int, edge_level: int, first: int
                  ) -> tuple[list[np.ndarray], list[_Region]]:
    """One clip's downscaled grey frames and its text-like regions (steps 1-2). Region ``source`` indices count
    from ``first`` (the clip's place in a batch's list of regions)."""
    smalls = [_downscale(frame, max_width) for frame in frames]
    regions: list[_Region] = []
    previous: dict[tuple[int, int, int, int], int] = {}
    for index, gray in enumerate(smalls):
        height, width = gray.shape
        current = {}
        for x, y, w, h in text_regions(gray, edge_level=edge_level):
            x0, y0 = max(0, x - REGION_PAD), max(0, y - REGION_PAD)
            x1, y1 = min(width, x + w + REGION_PAD), min(height, y + h + REGION_PAD)
            box = (x0, y0, x1 - x0, y1 - y0)
            pixels = gray[y0:y1, x0:x1]
            source = first + len(regions)
            earlier = previous.get(box)
            if earlier is not None and float(np.abs(regions[earlier].pixels.astype(np.int16) - pixels).mean()) < 4:
                source = regions[earlier].source
            regions.append(_Region(frame=index, box=box, pixels=pixels, source=source))
            current[box] = len(regions) - 1
        previous = current
    return smalls, regions


def _result(smalls: list[np.ndarray], regions: list[_Region],
            words_by_region: dict[int, list[tuple[str, tuple[int, int, int, int]]]]) -> TextResult:
    """Step 4 for one clip, from the counted words of its regions (keyed by source index)."""
    if not regions:
        return TextResult(0.0, "", ())
    best = 0.0
    seen: dict[str, None] = {}
    for index, gray in enumerate(smalls):
        mask = np.zeros(gray.shape, dtype=bool)
        for region in (r for r in regions if r.frame == index):
            x0, y0, _, _ = region.box
            for word, (wx, wy, ww, wh) in words_by_region.get(region.source, []):
                mask[y0 + wy:y0 + wy + wh, x0 + wx:x0 + wx + ww] = True
                seen.setdefault(word, None)
        best = max(best, float(mask.mean()))
    words = tuple(seen)
    return TextResult(area_fraction=best, text=" ".join(words), words=words)


def measure_texts(frame_lists: Sequence[Sequence[np.ndarray]], *, max_width: int = 640, min_confidence: float = 60,
                  min_alnum: int = 2, edge_level: int = 60, ocr_line_height: int = 32,
                  lang: str = "eng") -> list[TextResult]:
    """:func:`measure_text` of each list of frames (one clip's sampled frames, say), in order, with ONE Tesseract
    run for all of them: every clip's regions go on one canvas and each word found is given back to the clip and
    region it lies in. Tesseract's start-up then costs once per call instead of once per clip. Raises
    :class:`OCRUnavailable` when text-like regions need reading and Tesseract is not installed."""
    clips: list[tuple[list[np.ndarray], list[_Region]]] = []
    everything: list[_Region] = []
    for frames in frame_lists:
        smalls, regions = _find_regions(frames, max_width=max_width, edge_level=edge_level, first=len(everything))
        clips.append((smalls, regions))
        everything.extend(regions)
    words_by_region = {}
    if everything:
        words_by_region = _read(everything, min_confidence=min_confidence, min_alnum=min_alnum,
                                ocr_line_height=ocr_line_height, lang=lang)
    return [_result(smalls, regions, words_by_region) for smalls, regions in clips]


def measure_text(frames: Sequence[np.ndarray], *, max_width: int = 640, min_confidence: float = 60,
                 min_alnum: int = 2, edge_level: int = 60, ocr_line_height: int = 32,
                 lang: str = "eng") -> TextResult:
    """Burned-in text of ``frames`` (BGR): see the module docstring. Raises :class:`OCRUnavailable` when text-like
    regions need reading and Tesseract is not installed."""
    return measure_texts([frames], max_width=max_width, min_confidence=min_confidence, min_alnum=min_alnum,
                         edge_level=edge_level, ocr_line_height=ocr_line_height, lang=lang)[0]


def _read(regions: list[_Region], *, min_confidence: float, min_alnum: int, ocr_line_height: int,
          lang: str) -> dict[int, list[tuple[str, tuple[int, int, int, int]]]]:
    """OCR every region that is its own source in one Tesseract run; counted words per region (keyed by the
    region's index in ``regions``) with their boxes in the region's (downscaled frame) pixels."""
    own = [i for i, r in enumerate(regions) if r.source == i]
    tiles = []
    for i in own:
        region = regions[i]
        text_height = max(1, region.box[3] - 2 * REGION_PAD)
        region.scale = min(4.0, max(1.0, ocr_line_height / text_height))
        tile = region.pixels
        if region.scale > 1.0:
            tile = cv2.resize(tile, None, fx=region.scale, fy=region.scale, interpolation=cv2.INTER_CUBIC)
        binary = _binarise(tile)
        if _crossings(binary) >= MIN_CROSSINGS:
            tiles.append((i, binary))
    if not tiles:  # nothing crosses strokes as letters do: no Tesseract run at all
        return {}
    pytesseract = _tesseract()
    # Tiles go top to bottom in columns of at most MAX_CANVAS_HEIGHT pixels (a batch of many clips would make
    # one column too tall for Tesseract); a word belongs to the tile its middle lies in.
    columns: list[list[tuple[int, np.ndarray]]] = [[]]
    height = CANVAS_GAP
    for i, tile in tiles:
        if columns[-1] and height + tile.shape[0] + CANVAS_GAP > MAX_CANVAS_HEIGHT:
            columns.append([])
            height = CANVAS_GAP
        columns[-1].append((i, tile))
        height += tile.shape[0] + CANVAS_GAP
    widths = [max(tile.shape[1] for _, tile in column) for column in columns]
    canvas_width = sum(widths) + CANVAS_GAP * (len(columns) + 1)
    canvas_height = max(sum(tile.shape[0] for _, tile in column) + CANVAS_GAP * (len(column) + 1)
                        for column in columns)
    canvas = np.full((canvas_height, canvas_width), 255, dtype=np.uint8)
    spans = []  # (x0, x1, y0, y1, region): x0..x1 the column with half the gaps beside it, y0..y1 the tile's rows
    x = CANVAS_GAP
    for column, width in zip(columns, widths):
        y = CANVAS_GAP
        left_edge = 0 if x == CANVAS_GAP else x - CANVAS_GAP / 2
        right_edge = canvas_width if column is columns[-1] else x + width + CANVAS_GAP / 2
        for i, tile in column:
            canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
            regions[i].canvas_x, regions[i].canvas_y = x, y
            spans.append((left_edge, right_edge, y, y + tile.shape[0], i))
            y += tile.shape[0] + CANVAS_GAP
        x += width + CANVAS_GAP

    with _single_threaded_tesseract():
        data = pytesseract.image_to_data(canvas, lang=lang, config="--psm 11 -c tessedit_do_invert=0",
                                         output_type=pytesseract.Output.DICT)
    found: dict[int, list[tuple[str, tuple[int, int, int, int]]]] = {}
    for text, conf, left, top, w, h in zip(data["text"], data["conf"], data["left"], data["top"], data["width"],
                                           data["height"]):
        word = _STRIP.sub("", (text or "").strip())
        try:
            confidence = float(conf)
        except (TypeError, ValueError):
            continue
        if confidence < min_confidence or len(_ALNUM.findall(word)) < min_alnum:
            continue
        middle, centre = top + h / 2, left + w / 2
        owner = next((i for x0, x1, y0, y1, i in spans if y0 <= middle < y1 and x0 <= centre < x1), None)
        if owner is None:
            continue
        region = regions[owner]
        scale = region.scale
        rx0 = int((left - region.canvas_x) / scale)
        ry0 = int((top - region.canvas_y) / scale)
        rx1 = int(np.ceil((left + w - region.canvas_x) / scale))
        ry1 = int(np.ceil((top + h - region.canvas_y) / scale))
        _, _, bw, bh = region.box
        rx0, ry0, rx1, ry1 = max(0, rx0), max(0, ry0), min(bw, rx1), min(bh, ry1)
        if rx1 > rx0 and ry1 > ry0:
            found.setdefault(owner, []).append((word, (rx0, ry0, rx1 - rx0, ry1 - ry0)))
    return found
