"""``python manage.py detect_scenes VIDEO [--json] [--threshold T] [--sample-fps F] [--min-seconds S]``

Split a video file into shots with the pipeline's method (``datasets.scenes``, sampled frames at the pipeline's
width: the same cuts) and print them, without touching the database. ``--json`` prints ``{"fps", "frame_count",
"embedder", "clips": [{"start_frame", "end_frame"}, ...]}`` where ``clips`` lists EVERY segment (end exclusive;
they cover the video in order), each with ``too_short`` telling whether the pipeline would leave it out as shorter
than ``--min-seconds``. Defaults come from ``settings.PIPELINE`` (SAMPLE_FPS, SPLIT_THRESHOLD, MIN_CLIP_SECONDS, and
the embedder from OPENCLIP_WEIGHTS / OPENCLIP_MODEL, or the colour-structure fallback when no weights are
configured).
"""
import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from datasets import embedders, scenes
from datasets.sample_frames import SAMPLE_MAX_WIDTH
from datasets.video_io import UnreadableVideo


class Command(BaseCommand):
    help = "Split a video into shots where adjacent sampled frames' embeddings differ; prints the segments."
    requires_system_checks = []  # reads a file and prints: no database, no checks

    def add_arguments(self, parser):
        parser.add_argument("video", help="Path of a video file.")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        parser.add_argument("--threshold", type=float, default=None,
                            help="Cut where adjacent samples' cosine similarity is below this "
                                 "(default: PIPELINE SPLIT_THRESHOLD).")
        parser.add_argument("--sample-fps", type=float, default=None,
                            help="Frames sampled per second (default: PIPELINE SAMPLE_FPS).")
        parser.add_argument("--min-seconds", type=float, default=None,
                            help="Segments shorter than this are flagged too_short (default: PIPELINE "
                                 "MIN_CLIP_SECONDS).")

    def handle(self, *args, video, threshold=None, sample_fps=None, min_seconds=None, **options):
        pipeline = settings.PIPELINE
        threshold = pipeline["SPLIT_THRESHOLD"] if threshold is None else threshold
        sample_fps = pipeline["SAMPLE_FPS"] if sample_fps is None else sample_fps
        min_seconds = pipeline["MIN_CLIP_SECONDS"] if min_seconds is None else min_seconds
        if sample_fps <= 0:
            raise CommandError("--sample-fps must be positive.")
        try:
            embedder = embedders.embedder_from_settings(pipeline["OPENCLIP_WEIGHTS"], pipeline["OPENCLIP_MODEL"])
            result = scenes.detect_scenes(video, embedder=embedder, sample_fps=sample_fps, threshold=threshold,
                                          min_clip_seconds=min_seconds, sample_max_width=SAMPLE_MAX_WIDTH)
        except embedders.EmbedderUnavailable as error:
            raise CommandError(str(error)) from None
        except UnreadableVideo as error:
            raise CommandError(f"{video}: {error.reason}") from None
        if options.get("json"):
            self.stdout.write(json.dumps({
                "fps": result.fps,
                "frame_count": result.frame_count,
                "embedder": result.embedder,
                "clips": [{"start_frame": s.start_frame, "end_frame": s.end_frame, "too_short": s.too_short}
                          for s in result.segments],
            }))
            return
        self.stdout.write(f"{video}: {result.frame_count} frames at {result.fps:g} fps, embedder {result.embedder}, "
                          f"threshold {threshold:g}, {len(result.segments)} segments, {len(result.clips)} clips "
                          f"of at least {min_seconds:g} s")
        for position, segment in enumerate(result.segments):
            seconds = segment.frames / result.fps
            flag = "  too short" if segment.too_short else ""
            self.stdout.write(f"{position:4d}  frames {segment.start_frame:>7d}-{segment.end_frame:<7d} "
                              f"{seconds:8.2f} s{flag}")
