"""A clip's sampled frames as one small lossless file (no Django): what the split stores for the measuring stages.

The frames are scaled down to at most :data:`SAMPLE_MAX_WIDTH` pixels wide (OCR reads frames at that width anyway;
border fractions and the classifier's 224-pixel input need no more), stacked top to bottom and compressed with
Zstandard (level 3) as raw BGR bytes, in an ``.npz`` holding ``count``, ``shape`` and ``zstd``.

Why not PNG (what was stored before, and is still read): for 8 frames of a 720p clip, PNG took 47 ms to write and 31
ms to read, per clip, and the split writes each file once and two stages read it; Zstandard takes about 20 ms and 4
ms, and its file is smaller (1.25 MB against 1.76 MB on the pipeline benchmark's videos).
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

SAMPLE_MAX_WIDTH = 640  # pixels
ZSTD_LEVEL = 3


def encode_samples(frames: list[np.ndarray]) -> bytes:
    """A clip's sampled frames (BGR, all of one size after scaling; a stray one is resized to the first's) as one
    lossless file."""
    from datasets import video_io  # (sets OpenCV's log level before cv2 is first used)
    import cv2
    import zstandard

    if not frames:
        raise ValueError("there are no sampled frames to store")
    # the split's frames come at this width already (detect_scenes' sample_max_width): kept as they are
    smalls = [video_io.downscale(frame, SAMPLE_MAX_WIDTH) for frame in frames]
    shape = smalls[0].shape
    smalls = [f if f.shape == shape else cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
              for f in smalls]
    stack = np.ascontiguousarray(np.concatenate(smalls, axis=0), dtype=np.uint8)
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(stack.data)
    buffer = io.BytesIO()
    np.savez(buffer, count=np.array(len(smalls)), shape=np.array(stack.shape),
             zstd=np.frombuffer(packed, dtype=np.uint8))
    return buffer.getvalue()


def decode_samples(data: bytes) -> list[np.ndarray]:
    """The frames :func:`encode_samples` stored (BGR, ``uint8``); files written as one PNG are read too. Raises
    ``ValueError`` for a file that is neither."""
    import cv2
    import zstandard

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            count = int(stored["count"])
            if "zstd" in stored.files:
                shape = tuple(int(n) for n in stored["shape"])
                raw = zstandard.ZstdDecompressor().decompress(stored["zstd"].tobytes(),
                                                              max_output_size=int(np.prod(shape)))
                stack = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
            else:
                stack = cv2.imdecode(stored["png"], cv2.IMREAD_COLOR)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zstandard.ZstdError) as error:
        raise ValueError(f"the stored sample frames cannot be read ({error})") from error
    if stack is None or count <= 0 or stack.ndim != 3 or stack.shape[0] % count:
        raise ValueError("the stored sample frames cannot be read")
    return list(np.split(stack, count, axis=0))
