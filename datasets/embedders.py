"""Frame embedders for scene splitting: plain Python (no Django), OpenCV and numpy; OpenCLIP only when configured.

An :class:`Embedder` turns a list of BGR frames (``numpy.ndarray`` of shape ``(h, w, 3)``, ``uint8``, as OpenCV
decodes them) into an ``(n, d)`` ``float32`` array of L2-normalised rows, so the cosine similarity of two frames is
the dot product of their rows. ``name`` is recorded on every clip (``Clip.embedder``), since a threshold only means
something for the embedder it was chosen for.

* :class:`OpenClipEmbedder` - the paper's choice: an OpenCLIP image tower read from a LOCAL weights file (nothing is
  downloaded). ``open_clip`` and ``torch`` are imported only when it is built; without them it raises
  :class:`EmbedderUnavailable` with the reason.
* :class:`ColourStructureEmbedder` - the documented CPU fallback when no weights are configured (needs nothing but
  OpenCV). See its docstring for what it measures and how its similarities compare with the 0.85 threshold.
* :func:`embedder_from_settings` - OpenCLIP when ``PIPELINE["OPENCLIP_WEIGHTS"]`` names a file, else the fallback.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np


class EmbedderUnavailable(RuntimeError):
    """The configured embedder cannot be built here (package missing, weights file missing or unreadable)."""


@runtime_checkable
class Embedder(Protocol):
    name: str

    def embed(self, frames: list[np.ndarray]) -> np.ndarray:
        """``(len(frames), d)`` float32, each row L2-normalised."""
        ...


def _l2_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- the fallback


class ColourStructureEmbedder:
    """A classical frame descriptor: colour, layout and texture, each a unit block, weighted and concatenated.

    Per frame (resized to ``WORK_SIZE`` with area averaging, so the cost does not depend on the video's size):

    * **colour** - an HSV histogram, 8 hue x 4 saturation x 4 value bins, as the square roots of the bin fractions
      (so the blocks' dot product is the Bhattacharyya coefficient of the two histograms: 1 for the same colours,
      near 0 for disjoint ones);
    * **layout** - a 16x9 grayscale thumbnail with its mean removed (the dot product is then the thumbnails'
      correlation: the same picture composition scores near 1, unrelated compositions near 0), plus one constant
      component so that two flat frames (a fade to black, say) still count as alike;
    * **texture** - a joint histogram of gradient strength (flat, faint, soft, sharp, strong) and orientation
      (8 bins over 0-180 degrees; flat pixels in one bin of their own), square-rooted like the colour block: it
      describes how sharp and how oriented the picture's edges are and barely moves when the picture pans or
      objects move.

    The row is ``sqrt(w_c)*colour ++ sqrt(w_l)*layout ++ sqrt(w_t)*texture`` with ``w_c + w_l + w_t = 1``, so it is
    unit length and the cosine similarity of two frames is ``w_c*cos_colour + w_l*cos_layout + w_t*cos_texture``:
    a weighted mean of three similarities each in [0, 1] (layout can go slightly negative). Frames of one shot
    (objects moving, slow pans and zooms) score above 0.9; a hard cut between different shots usually falls well
    below the pipeline's 0.85, because at least two of the three blocks change. It is weaker than OpenCLIP on cuts
    between two shots of the same specimen under the same stain (same colours, similar texture): only the layout
    block separates those.
    """

    name = "colour-structure-v1"
    WORK_SIZE = (128, 72)  # width, height
    THUMB_SIZE = (16, 9)
    HSV_BINS = (8, 4, 4)
    ORIENTATION_BINS = 8
    # Gradient magnitude bins (Sobel 3x3 on 0-255 grey): below 8 is flat; then faint, soft, sharp, strong edges.
    MAGNITUDE_EDGES = np.array([8.0, 24.0, 64.0, 160.0], dtype=np.float32)
    WEIGHTS = (0.4, 0.35, 0.25)  # colour, layout, texture
    # The layout block's constant component: a thumbnail whose grey levels vary by about 4 (standard deviation)
    # weighs as much as the constant, so flat frames are alike and textured ones are compared by their layout.
    FLAT_LEVEL = 4.0

    def embed(self, frames: list[np.ndarray]) -> np.ndarray:
        if not frames:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._embed_one(frame) for frame in frames]).astype(np.float32)

    @property
    def dimension(self) -> int:
        return (int(np.prod(self.HSV_BINS)) + self.THUMB_SIZE[0] * self.THUMB_SIZE[1] + 1
                + 1 + len(self.MAGNITUDE_EDGES) * self.ORIENTATION_BINS)

    def _embed_one(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        small = cv2.resize(frame, self.WORK_SIZE, interpolation=cv2.INTER_AREA)
        w_colour, w_layout, w_texture = self.WEIGHTS

        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, list(self.HSV_BINS), [0, 180, 0, 256, 0, 256]).ravel()
        colour = np.sqrt(hist / max(float(hist.sum()), 1.0))  # unit length already: sum of fractions is 1

        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
        thumb = cv2.resize(gray, self.THUMB_SIZE, interpolation=cv2.INTER_AREA).ravel()
        thumb = thumb - thumb.mean()
        flat = self.FLAT_LEVEL * np.sqrt(thumb.size)
        layout = np.append(thumb, flat)
        layout /= np.linalg.norm(layout)

        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        magnitude, angle = cv2.cartToPolar(gx, gy, angleInDegrees=True)
        orientation = ((angle % 180.0) * (self.ORIENTATION_BINS / 180.0)).astype(np.int32) % self.ORIENTATION_BINS
        strength = np.searchsorted(self.MAGNITUDE_EDGES, magnitude)  # 0: flat ... len(edges): strong edge
        joint = strength * self.ORIENTATION_BINS + orientation
        counts = np.bincount(joint.ravel(), minlength=(len(self.MAGNITUDE_EDGES) + 1) * self.ORIENTATION_BINS)
        # Flat pixels have no orientation: they count once, in one bin, not spread over random angles.
        flat_pixels = counts[:self.ORIENTATION_BINS].sum()
        texture = np.concatenate([[flat_pixels], counts[self.ORIENTATION_BINS:]]).astype(np.float64)
        texture = np.sqrt(texture / max(texture.sum(), 1.0))

        return np.concatenate([np.sqrt(w_colour) * colour, np.sqrt(w_layout) * layout,
                               np.sqrt(w_texture) * texture])


# ----------------------------------------------------------------------------------------------- OpenCLIP


class OpenClipEmbedder:
    """An OpenCLIP image encoder loaded from a local weights file (``pretrained=<path>``); never downloads.

    ``model_name`` is an architecture open_clip knows (``ViT-B-32``, or one registered with
    ``open_clip.add_model_config``). Frames are converted BGR -> RGB and put through the model's own eval
    preprocessing; embeddings are computed in batches of ``batch_size`` under ``torch.no_grad()`` on ``device``
    (default: CUDA when available, else CPU) and L2-normalised."""

    def __init__(self, weights_path: str | os.PathLike, model_name: str, *, device: str | None = None,
                 batch_size: int = 32):
        path = Path(weights_path)
        if not path.exists():
            raise EmbedderUnavailable(f"OpenCLIP weights not found at {path} (PIPELINE OPENCLIP_WEIGHTS): nothing "
                                      "is downloaded; put the weights file there or leave the setting empty to use "
                                      f"the {ColourStructureEmbedder.name} fallback.")
        try:
            import open_clip
            import torch
        except ImportError as error:
            raise EmbedderUnavailable(f"OpenCLIP weights are configured ({path}) but {error.name or 'open_clip'} "
                                      "is not installed: install torch and open-clip-torch, or leave "
                                      "PIPELINE OPENCLIP_WEIGHTS empty to use the "
                                      f"{ColourStructureEmbedder.name} fallback.") from error
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = max(1, int(batch_size))
        try:
            if path.is_dir():
                model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{path}")
            else:
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path))
        except Exception as error:  # noqa: BLE001 - any failure to build the model is reported the same way
            raise EmbedderUnavailable(f"OpenCLIP model {model_name!r} cannot be loaded from {path}: {error}") \
                from error
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.name = f"openclip-{model_name}"[:80]

    def embed(self, frames: list[np.ndarray]) -> np.ndarray:
        from PIL import Image

        torch = self._torch
        rows = []
        for at in range(0, len(frames), self.batch_size):
            batch = [self.preprocess(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
                     for frame in frames[at:at + self.batch_size]]
            with torch.no_grad():
                features = self.model.encode_image(torch.stack(batch).to(self.device))
            rows.append(features.float().cpu().numpy())
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return _l2_rows(np.concatenate(rows))


# ----------------------------------------------------------------------------------------------- choosing


def embedder_from_settings(openclip_weights: str, openclip_model: str) -> Embedder:
    """OpenCLIP from ``openclip_weights`` (a file, or an open_clip ``local-dir`` folder) when it is set, raising
    :class:`EmbedderUnavailable` if that file is missing or open_clip cannot load it (a configured model is never
    silently replaced); the :class:`ColourStructureEmbedder` fallback when it is empty."""
    if openclip_weights and str(openclip_weights).strip():
        return OpenClipEmbedder(str(openclip_weights).strip(), openclip_model or "ViT-B-32")
    return ColourStructureEmbedder()
