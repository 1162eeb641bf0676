#!/usr/bin/env python
"""Benchmark of the data pipeline's measuring code (``datasets.scenes``, ``borders``, ``ocr``) on synthetic
1280x720 H.264 videos with known cuts, made by this script (no data needed). See benchmarks/README.md.

    .venv/bin/python benchmarks/pipeline_bench.py [--videos 3] [--seconds 20] [--keep DIR]
    SCENEDETECT_PATH=/tmp/scenedetect-lib .venv/bin/python benchmarks/pipeline_bench.py   # with PySceneDetect

Reports, per video and in total:

(a) scene-cut detection: precision / recall / F1 (a detected cut counts when it is within 2 frames of a true cut
    not matched yet) and time, for ours (colour-structure fallback embedder, 4 samples/s, threshold 0.85, exact
    refinement) and PySceneDetect's ``ContentDetector`` (its defaults) on the same files. PySceneDetect is NOT a
    project dependency (it pulls ``opencv-python``, which breaks ``opencv-python-headless``): install it apart,
    ``pip install --no-deps --target /tmp/scenedetect-lib scenedetect``, and point ``SCENEDETECT_PATH`` at it;
    without it that column is skipped with a message.
(b) CPU time (this process plus child processes: tesseract, ffmpeg) per video, as a ratio to decoding the same
    video with OpenCV alone (``VideoCapture.read()`` of every frame) in the same run: ``split`` - scene splitting
    only; ``stream`` - one decoding pass, borders and text measured on each kept clip's 8 frames handed over by
    ``detect_scenes(on_segment=...)``; ``pipeline`` - the real thing: the four stage functions of
    ``datasets.pipeline`` (split, which also writes the clip files - copied from the H.264 source's packets -,
    thumbnails and each clip's stored sampled frames; classify; borders; text) run in this process on a throwaway
    SQLite database and media folder, with the CPU of each stage, and of the split's clip files, printed apart;
    ``pipeline-reencode`` - the same with every clip re-encoded by x264, as for a source that cannot be copied.
(c) peak memory of each job: every job runs in its own fresh process, so the figures do not mix; the peak is the
    process's ``VmHWM`` (``ru_maxrss`` from ``resource.getrusage`` is printed beside it, but on Linux it inherits
    the parent's resident size through fork + exec).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from bench_machine import describe  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 25.0
MATCH_TOLERANCE = 2  # frames
FRAMES_PER_CLIP = 8


# ------------------------------------------------------------------------------------------ synthetic videos


@functools.lru_cache(maxsize=8)
def _background(scene: int, palette: int) -> np.ndarray:
    """A smooth random field (``scene``) in a colour scheme (``palette``: hue, saturation, brightness, blur)."""
    rng = np.random.default_rng(1000 + scene)
    field = rng.random((HEIGHT // 16 + 2, WIDTH // 16 + 2)).astype(np.float32)
    field = cv2.resize(field, (WIDTH * 2, HEIGHT * 2), interpolation=cv2.INTER_CUBIC)
    field = cv2.GaussianBlur(field, (0, 0), 6 + 2 * (palette % 4))
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    hsv = np.empty((HEIGHT * 2, WIDTH * 2, 3), np.uint8)
    hsv[..., 0] = ((palette * 47) % 180 + field * 25).astype(np.uint8) % 180
    hsv[..., 1] = 60 + (palette * 37) % 170
    hsv[..., 2] = (40 + field * 170 * (0.5 + (palette % 3) / 4)).clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _bounce(x: float, size: int) -> int:
    x = x % (2 * size)
    return int(x if x < size else 2 * size - x)


def _frame(scene: int, t: int, *, palette: int, pan: float, zoom: float, caption: str,
           bars: float) -> np.ndarray:
    background = _background(scene, palette)
    x0 = min(WIDTH, int(t * pan))
    frame = background[HEIGHT // 2:HEIGHT // 2 + HEIGHT, x0:x0 + WIDTH].copy()
    if zoom:
        matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 0.0, 1.0 + zoom * t)
        frame = cv2.warpAffine(frame, matrix, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REFLECT)
    rng = np.random.default_rng(scene)
    for _ in range(8):
        cx, cy = rng.random(2) * (WIDTH, HEIGHT)
        vx, vy = (rng.random(2) - 0.5) * 8
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.ellipse(frame, (_bounce(cx + vx * t, WIDTH), _bounce(cy + vy * t, HEIGHT)),
                    (int(20 + rng.random() * 70), int(15 + rng.random() * 50)), (t * 2 + scene * 30) % 360, 0, 360,
                    colour, -1, cv2.LINE_AA)
    if bars:
        bar = round(HEIGHT * bars)
        frame[:bar] = 0
        frame[HEIGHT - bar:] = 0
    if caption:
        cv2.rectangle(frame, (0, HEIGHT - 70), (WIDTH, HEIGHT), (15, 15, 15), -1)
        cv2.putText(frame, caption, (WIDTH // 5, HEIGHT - 25), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2,
                    cv2.LINE_AA)
    return frame


def make_video(path: Path, *, seed: int, seconds: float) -> dict:
    """A video of shots 1.2-6 s long (plain, panning, zooming, letterboxed, captioned, or "same-look": another
    field of view in the previous shot's colours and blur, the hard case of two shots of one specimen under one
    stain); returns its truth."""
    rng = np.random.default_rng(seed)
    total = int(seconds * FPS)
    starts, at = [], 0
    while at < total:
        starts.append(at)
        at += int(rng.uniform(1.2, 6.0) * FPS)
    shots = []
    for k, start in enumerate(starts):
        kind = ("plain", "pan", "caption", "same-look", "zoom", "bars")[(k + seed) % 6]  # each in every 6 shots
        scene = int(seed * 10 + k)
        palette = shots[-1]["palette"] if kind == "same-look" and shots else scene
        shots.append({"start": start, "scene": scene, "palette": palette, "kind": kind})
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{WIDTH}x{HEIGHT}", "-r", str(int(FPS)), "-i", "-", "-an", "-c:v", "libx264", "-preset",
               "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", str(path)]  # x264's default GOP (keyint 250)
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    shot = 0
    for index in range(total):
        while shot + 1 < len(shots) and shots[shot + 1]["start"] <= index:
            shot += 1
        s = shots[shot]
        frame = _frame(s["scene"], index - s["start"], palette=s["palette"], pan=2.0 if s["kind"] == "pan" else 0.0,
                       zoom=0.002 if s["kind"] == "zoom" else 0.0,
                       caption="CELL DIVISION 2024" if s["kind"] == "caption" else "",
                       bars=0.1 if s["kind"] == "bars" else 0.0)
        process.stdin.write(frame.tobytes())
    process.stdin.close()
    if process.wait() != 0:
        raise RuntimeError("ffmpeg failed")
    return {"path": str(path), "frames": total, "cuts": [s["start"] for s in shots[1:]],
            "kinds": [s["kind"] for s in shots]}


# ------------------------------------------------------------------------------------------ jobs (subprocess)


def _usage() -> dict:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu": me.ru_utime + me.ru_stime, "children_cpu": children.ru_utime + children.ru_stime}


def job(name: str, video: str) -> dict:
    """Run one job in this (fresh) process; returns its figures. Imports (and Tesseract's version check) happen
    before the clock starts, as in a worker that has been running for a while."""
    pipeline_video = None
    if name.startswith("ours-pipeline"):
        # -reencode: every clip through x264, as for a source whose packets cannot be copied (not H.264, ...)
        pipeline_video = _pipeline_setup(video, copy_clips=name != "ours-pipeline-reencode")
    if name.startswith("ours"):
        import av  # noqa: F401  (PyAV: decoding and clip copying; about 0.09 s of CPU to import)
        import zstandard  # noqa: F401

        from datasets import borders, clip_copy, embedders, ocr, sample_frames, scenes, video_io  # noqa: F401

        if name.startswith("ours-pipeline"):
            from datasets import classifier  # noqa: F401  (the classify stage imports it when it first runs)
        ocr._tesseract()
    elif name == "scenedetect":
        import scenedetect  # noqa: F401
    before, wall = _usage(), time.perf_counter()
    out: dict = {}
    if name == "decode":
        capture = cv2.VideoCapture(video, cv2.CAP_FFMPEG)
        count = 0
        while True:
            ok, _ = capture.read()
            if not ok:
                break
            count += 1
        capture.release()
        out["frames"] = count
    elif name == "scenedetect":
        from scenedetect import ContentDetector, detect

        scenes_found = detect(video, ContentDetector())
        out["cuts"] = [int(start.frame_num if hasattr(start, "frame_num") else start.get_frames())
                       for start, _ in scenes_found[1:]]
    else:
        from datasets.borders import measure_borders
        from datasets.embedders import ColourStructureEmbedder
        from datasets.ocr import measure_text
        from datasets.scenes import detect_scenes

        options = {"embedder": ColourStructureEmbedder(), "sample_fps": 4.0, "threshold": 0.85,
                   "min_clip_seconds": 2.0, "sample_max_width": 640}  # as the pipeline (SAMPLE_MAX_WIDTH)
        measured = []
        if name.startswith("ours-pipeline"):
            result, measured = _pipeline_run(pipeline_video)
        elif name == "ours-split":
            result = detect_scenes(video, **options)
        elif name == "ours-stream":
            def on_segment(segment, frames):
                if not segment.too_short:
                    borders, text = measure_borders(frames), measure_text(frames)
                    measured.append((max(borders.top, borders.bottom, borders.left, borders.right),
                                     text.area_fraction, text.text))

            result = detect_scenes(video, frames_per_segment=FRAMES_PER_CLIP, on_segment=on_segment, **options)
        else:
            raise SystemExit(f"unknown job {name}")
        out["cuts"] = [c.frame for c in result.cuts]
        out["clips"] = result.clips
        out["measured"] = measured
        if name.startswith("ours-pipeline"):
            out["stages"] = result.stages
    after = _usage()
    out.update(wall=time.perf_counter() - wall, cpu=after["cpu"] - before["cpu"],
               children_cpu=after["children_cpu"] - before["children_cpu"],
               maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, hwm_mb=_vm_hwm_mb())
    return out


def _pipeline_setup(video: str, *, copy_clips: bool = True):
    """Before the clock: Django on a throwaway SQLite database and media folder (the pipeline's default settings:
    colour-structure embedder, 4 samples/s, threshold 0.85, 2 s minimum, 8 frames per clip, no classifier), the
    video ingested and its four stage runs queued."""
    import atexit
    import shutil

    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-django-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    os.environ.update({"DJANGO_SETTINGS_MODULE": "microverse_site.settings", "DJANGO_MEDIA_ROOT": str(work / "media"),
                       "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}", "MICROVERSE_VAR_DIR": str(work),
                       "PIPELINE_CLASSIFIER_DIR": "", "PIPELINE_OPENCLIP_WEIGHTS": "",
                       "PIPELINE_COPY_CLIPS": "true" if copy_clips else "false"})
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from datasets import pipeline
    from datasets.ingest import video_ingest

    call_command("migrate", verbosity=0, interactive=False)
    with open(video, "rb") as handle:
        source = video_ingest(fileobj=handle, original_name=Path(video).name, user=None,
                              metadata={"title": Path(video).stem, "license": "CC BY"})
    with transaction.atomic():
        pipeline.pipeline_prepare(video=source)
    return source


def _pipeline_run(source):
    """The four stages exactly as ``datasets.pipeline`` runs them (split writes the clip files and thumbnails;
    classify, borders and text measure the clips), in this process."""
    from types import SimpleNamespace

    from datasets import pipeline
    from datasets.models import Clip, StageRun

    per_stage = {}
    writing = {"cpu": 0.0}
    real_clip_files = pipeline._clip_files

    def timed_clip_files(*args, **kwargs):  # the split's clip files (copied, or decoded + x264), counted apart
        before = _usage()
        clips = real_clip_files(*args, **kwargs)  # the packet index is read here
        after = _usage()
        writing["cpu"] += after["cpu"] + after["children_cpu"] - before["cpu"] - before["children_cpu"]
        while True:
            before = _usage()
            try:
                item = next(clips)
            except StopIteration:
                return
            finally:
                after = _usage()
                writing["cpu"] += after["cpu"] + after["children_cpu"] - before["cpu"] - before["children_cpu"]
            yield item

    pipeline._clip_files = timed_clip_files
    for stage in pipeline.STAGE_ORDER:
        before = _usage()
        pipeline.STAGE_FUNCTIONS[stage](video_id=source.pk)
        after = _usage()
        per_stage[stage] = round(after["cpu"] + after["children_cpu"] - before["cpu"] - before["children_cpu"], 3)
    per_stage["split: clip files"] = round(writing["cpu"], 3)
    statuses = dict(StageRun.objects.filter(video=source).values_list("stage", "status"))
    if set(statuses.values()) != {"done"}:
        raise RuntimeError(f"pipeline stages did not all finish: {statuses}")
    clips = list(Clip.objects.filter(video=source).order_by("position"))
    measured = [(max(c.border_top, c.border_bottom, c.border_left, c.border_right),
                 c.text_area_fraction, c.text_found) for c in clips if c.border_top is not None]
    cuts = [c.start_frame for c in clips if c.start_frame > 0]
    return SimpleNamespace(cuts=[SimpleNamespace(frame=f) for f in cuts],
                           clips=[(c.start_frame, c.end_frame) for c in clips], stages=per_stage), measured


def _vm_hwm_mb() -> float:
    """This process image's own peak resident memory (Linux ``VmHWM``). ``ru_maxrss`` is reported too, but on
    Linux it carries over the parent's resident size through fork + exec, so it can overstate a small job."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_job(name: str, video: str) -> dict:
    env = dict(os.environ)
    if name == "scenedetect":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("SCENEDETECT_PATH"),
                                                       env.get("PYTHONPATH")) if p)
    completed = subprocess.run([sys.executable, __file__, "--job", name, video], capture_output=True, text=True,
                               env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"job {name} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ scoring, report


def f1(found: list[int], truth: list[int], tolerance: int = MATCH_TOLERANCE) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), matching each found cut to the nearest unmatched true
    cut within ``tolerance`` frames."""
    unmatched = sorted(truth)
    hits = 0
    for cut in sorted(found):
        near = [t for t in unmatched if abs(t - cut) <= tolerance]
        if near:
            unmatched.remove(min(near, key=lambda t: abs(t - cut)))
            hits += 1
    return hits, len(found) - hits, len(unmatched)


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--keep", help="Write the videos to this folder and keep them (default: a temp folder).")
    parser.add_argument("--job", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(job(*args.job)))
        return

    print(f"machine: {describe(extra=f'OpenCV {cv2.__version__}, numpy {np.__version__}')}")
    have_scenedetect = run_scenedetect_check()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    totals = {"ours": [0, 0, 0], "scenedetect": [0, 0, 0]}
    time_sums = {k: 0.0 for k in ("decode", "ours-split", "scenedetect", "ours-stream", "ours-pipeline",
                                  "ours-pipeline-reencode")}
    rows = []
    stage_sums: dict[str, dict[str, float]] = {}
    for n in range(args.videos):
        started = time.perf_counter()
        truth = make_video(folder / f"bench{n}.mp4", seed=n + 1, seconds=args.seconds)
        print(f"\nvideo {n}: {truth['frames']} frames {WIDTH}x{HEIGHT} @ {FPS:g} fps, {len(truth['cuts'])} cuts, "
              f"shots {truth['kinds']} (made in {time.perf_counter() - started:.1f} s)")
        figures = {"decode": run_job("decode", truth["path"]), "ours-split": run_job("ours-split", truth["path"]),
                   "ours-stream": run_job("ours-stream", truth["path"]),
                   "ours-pipeline": run_job("ours-pipeline", truth["path"]),
                   "ours-pipeline-reencode": run_job("ours-pipeline-reencode", truth["path"])}
        if have_scenedetect:
            figures["scenedetect"] = run_job("scenedetect", truth["path"])
        base = figures["decode"]["cpu"]
        for name, fig in figures.items():
            total_cpu = fig["cpu"] + fig["children_cpu"]
            time_sums[name] += total_cpu
            line = (f"  {name:14s} cpu {total_cpu:6.2f} s (children {fig['children_cpu']:5.2f}) = "
                    f"{total_cpu / base:4.2f}x decode, wall {fig['wall']:6.2f} s, peak RSS {fig['hwm_mb']:4.0f} MB "
                    f"(ru_maxrss {fig['maxrss_mb']:4.0f} MB)")
            if "cuts" in fig:
                tp, fp, fn = f1(fig["cuts"], truth["cuts"])
                key = "scenedetect" if name == "scenedetect" else "ours"
                if name in ("ours-split", "scenedetect"):
                    totals[key] = [a + b for a, b in zip(totals[key], (tp, fp, fn))]
                    exact = sum(1 for c in fig["cuts"] if c in truth["cuts"])
                    line += f", cuts: tp {tp} fp {fp} fn {fn} (exact frame: {exact})"
            if "stages" in fig:
                for stage, value in fig["stages"].items():
                    stage_sums.setdefault(name, {})[stage] = stage_sums.get(name, {}).get(stage, 0.0) + value
                line += ", per stage: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in fig["stages"].items())
            print(line)
            rows.append((n, name, total_cpu, total_cpu / base, fig["wall"], fig["maxrss_mb"]))
        for value in figures["ours-stream"]["measured"]:
            print(f"    clip measured: widest bar {value[0]:.3f}, text area {value[1]:.4f} {value[2]!r}")
    print("\nsummary")
    for key in ("ours", "scenedetect"):
        if key == "scenedetect" and not have_scenedetect:
            print("  scenedetect: skipped (set SCENEDETECT_PATH to a folder holding PySceneDetect)")
            continue
        p, r, f = prf(*totals[key])
        print(f"  {key:12s} cuts: precision {p:.3f} recall {r:.3f} F1 {f:.3f} (tp/fp/fn {totals[key]})")
    base = time_sums["decode"]
    for name, total in time_sums.items():
        if total:
            print(f"  {name:14s} total cpu {total:7.2f} s = {total / base:4.2f}x OpenCV decode")
    for name, sums in stage_sums.items():
        print(f"  {name} per stage: " + ", ".join(f"{k} {v:.2f} s = {v / base:.2f}x" for k, v in sums.items()))
    print(f"\nvideos in {folder}" if args.keep else "")


def run_scenedetect_check() -> bool:
    path = os.environ.get("SCENEDETECT_PATH")
    if not path:
        print("PySceneDetect: skipped (SCENEDETECT_PATH not set; see the module docstring)")
        return False
    probe = subprocess.run([sys.executable, "-c", "import scenedetect; print(scenedetect.__version__)"],
                           env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        print(f"PySceneDetect: skipped (cannot import it from {path})")
        return False
    print(f"PySceneDetect {probe.stdout.strip()} from {path}")
    return True


if __name__ == "__main__":
    main()
