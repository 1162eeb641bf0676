"""Run the data pipeline's stages in this process (no worker needed), printing each stage's progress.

    python manage.py run_pipeline --video 12 [--video 13 ...]
    python manage.py run_pipeline --all                 # every admitted video
    python manage.py run_pipeline --all --stage borders  # re-run borders (and text, which depends on it)

The same services as the Celery tasks (``datasets.pipeline``): the stage runs are claimed, so a video whose stages
are queued or running elsewhere is refused (cancel it first). Exit status 1 if any video failed.
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.services import log_action
from datasets import pipeline
from datasets.models import SourceVideo, StageRun


class Command(BaseCommand):
    help = "Run the pipeline stages (split, classify, borders, text) on videos in this process."

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--video", type=int, action="append", dest="videos", metavar="ID",
                            help="a video id (repeat for several)")
        target.add_argument("--all", action="store_true", help="every admitted video")
        parser.add_argument("--stage", choices=pipeline.STAGE_ORDER,
                            help="start from this stage (later stages run too: their input changes); default split")

    def handle(self, *args, videos=None, all=False, stage=None, **options):
        if all:
            targets = list(SourceVideo.objects.filter(admission=SourceVideo.Admission.ADMITTED).order_by("pk"))
        else:
            found = {v.pk: v for v in SourceVideo.objects.filter(pk__in=videos)}
            missing = [pk for pk in videos if pk not in found]
            if missing:
                raise CommandError(f"no video with id {', '.join(map(str, missing))}")
            targets = [found[pk] for pk in videos]
        if not targets:
            self.stdout.write("No admitted videos.")
            return
        failed = []
        for video in targets:
            if not self._run_video(video, stage):
                failed.append(video.pk)
        done = len(targets) - len(failed)
        self.stdout.write(f"{done} of {len(targets)} videos finished.")
        if failed:
            raise CommandError(f"{len(failed)} video(s) failed: {', '.join(map(str, failed))}")

    def _run_video(self, video: SourceVideo, stage: str | None) -> bool:
        self.stdout.write(f"Video {video.pk}: {video.title[:70]}")
        try:
            with transaction.atomic():
                runs = pipeline.pipeline_prepare(video=video, stages=[stage] if stage else None)
                names = [r.stage for r in runs]
                log_action(actor=None, verb="pipeline_start", workflow="pipeline", target=video,
                           after={"stages": names, "via": "run_pipeline"})
        except pipeline.PipelineError as error:
            self.stderr.write(f"  refused: {error}")
            return False
        printed: dict[str, int] = {}

        def show(run: StageRun, progress: float):
            tenth = int(progress * 10)
            if run.video_id == video.pk and printed.get(run.stage, -1) < tenth:
                printed[run.stage] = tenth
                self.stdout.write(f"  {run.stage}: {tenth * 10:3d}%")
                self.stdout.flush()

        with pipeline.progress_listener(show):
            for name in names:
                started = time.monotonic()
                try:
                    pipeline.STAGE_FUNCTIONS[name](video_id=video.pk)
                except Exception as error:  # recorded on the StageRun by the stage itself
                    self.stderr.write(f"  {name}: FAILED: {type(error).__name__}: {error}")
                    return False
                run = StageRun.objects.get(video=video, stage=name)
                seconds = time.monotonic() - started
                if run.status != StageRun.Status.DONE:
                    self.stderr.write(f"  {name}: {run.status} {run.error}".rstrip())
                    return run.status != StageRun.Status.FAILED
                self.stdout.write(f"  {name}: done in {seconds:.1f} s, clips {run.clips_in} -> {run.clips_out}")
        return True
