"""Clips cut by copying H.264 packets (datasets/clip_copy.py) in headless Chromium: each plays exactly its frames,
from the first to the last, though the file also holds the packets before the first (from the previous keyframe)
and after the last (references of B-frames) that the MP4 edit list leaves out."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading

import numpy as np
import pytest

from datasets import clip_copy, video_io

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")]

FRAMES, FPS = 120, 25.0
SPANS = [(30, 70), (0, 25), (50, 51), (101, 120)]

# The first frame is drawn once loaded; then each frame presented during playback (at half speed) is drawn as
# requestVideoFrameCallback reports it, and the frame left on screen once it has ended. Returns the centre pixels.
PLAY = """async (url) => {
  const video = document.createElement('video');
  video.muted = true; video.src = url; document.body.appendChild(video);
  await new Promise((ok, bad) => { video.onloadeddata = ok; video.onerror = () => bad(video.error.message); });
  const canvas = document.createElement('canvas'); canvas.width = 160; canvas.height = 120;
  const context = canvas.getContext('2d');
  const pixel = () => { context.drawImage(video, 0, 0); return Array.from(context.getImageData(80, 60, 1, 1).data); };
  // On a loaded machine the first frame can reach the canvas a little after loadeddata (until then it draws
  // nothing: transparent black); every frame of the test video is opaque with each channel at 20 or more.
  let first = pixel();
  for (let tries = 0; tries < 100 && (first[3] < 255 || first[0] + first[1] + first[2] < 60); tries++) {
    await new Promise(ok => setTimeout(ok, 20));
    first = pixel();
  }
  const shown = [first];
  await new Promise(ok => {
    const each = () => { shown.push(pixel()); video.requestVideoFrameCallback(each); };
    video.requestVideoFrameCallback(each);
    video.onended = ok; video.playbackRate = 0.5; video.play();
  });
  return {duration: video.duration, shown, last: pixel()};  // at the end, the last frame stays on screen
}"""


@pytest.fixture
def served(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def frame_of(rgba) -> int:
    """Which frame of the solid-colour test video a pixel comes from (its nearest index_colour)."""
    colours = np.array([video_io.index_colour(i)[::-1] for i in range(FRAMES)])  # BGR -> RGB
    return int(np.argmin(np.abs(colours - np.array(rgba[:3])).sum(axis=1)))


def test_chromium_plays_exactly_the_frames_of_each_copied_clip(browser, served):
    folder, base = served
    source = video_io.make_test_video(folder / "source.mp4", frames=FRAMES, size=(160, 120), fps=FPS)  # GOP 25
    files = dict(clip_copy.copy_clips(source, SPANS, folder))
    page = browser.new_page()
    try:
        page.goto(f"{base}/")
        for position, (start, end) in enumerate(SPANS):
            played = page.evaluate(PLAY, f"{base}/{files[position].name}")
            assert played["duration"] == pytest.approx((end - start) / FPS, abs=1e-3)
            shown = [frame_of(rgba) for rgba in played["shown"]]
            assert shown[0] == start  # not the keyframe before it
            assert frame_of(played["last"]) == end - 1  # not a B-frame reference copied after it
            assert set(shown) <= set(range(start, end))  # nothing from outside the clip, ever
            # Every frame, in order (a compositor on a loaded machine may skip one: at most 10 %).
            assert shown == sorted(shown) and len(set(shown)) >= 0.9 * (end - start)
    finally:
        page.close()
