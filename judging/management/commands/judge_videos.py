"""``manage.py judge_videos --model NAME --videos DIR --judge-model M [--base-url URL] [--concurrency N] [--frames 8]``

Registers the model and its videos (``DIR/<index>.mp4``), creates (or resumes) the judge run and judges it in this
process with a thread pool of N, printing a progress line. Run it again to resume: only what is missing is judged,
and answers already recorded are not paid for again."""
import time

from django.core.management.base import BaseCommand, CommandError

from judging import runs, videos


class Command(BaseCommand):
    help = "Judge a model's generated videos with an MLLM (register, create or resume the run, judge in-process)."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="Name of the model under test")
        parser.add_argument("--videos", required=True, help="Folder with <index>.mp4 per benchmark task")
        parser.add_argument("--judge-model", required=True, help="The judge LLM (e.g. gpt-4o)")
        parser.add_argument("--base-url", default="", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)")
        parser.add_argument("--concurrency", type=int, default=4, help="Calls in flight at once (default 4)")
        parser.add_argument("--frames", type=int, default=8, help="Frames per video (default 8)")
        parser.add_argument("--release", default="released", help='Rubric label: "released", "draft" or "current"')
        parser.add_argument("--new-run", action="store_true", help="Start a fresh run instead of resuming")

    def handle(self, *args, **o):
        try:
            model = videos.model_register(name=o["model"])
            report = videos.videos_register_folder(model=model, folder=o["videos"])
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Videos of {model.name}: {report.summary()}")
        for index, reason in report.missing + report.unreadable:
            self.stdout.write(f"  task {index}: {reason}")
        try:
            run = runs.judge_run_create(model=model, judge_model=o["judge_model"], base_url=o["base_url"],
                                        rubric_label=o["release"], frames_per_video=o["frames"],
                                        concurrency=o["concurrency"], new=o["new_run"])
        except runs.JudgeRunError as exc:
            raise CommandError(str(exc)) from None
        start = runs.judge_run_progress(run)
        self.stdout.write(f"Judge run {run.pk} ({run.judge_model} at {run.base_url or 'the default endpoint'}): "
                          f"{start['total']} judgements, {start['finished']} already finished, "
                          f"{start['pending'] + start['running']} to judge")
        began = time.monotonic()
        tty = self.stdout.isatty()

        def progress(counts):
            line = self._line(counts, time.monotonic() - began)
            if tty:
                self.stdout.write("\r" + line, ending="")
                self.stdout.flush()
            elif counts["finished"] % 25 == 0 or counts["pending"] <= 0:
                self.stdout.write(line)

        try:
            final = runs.judge_run_execute(run=run, progress=progress)
        except KeyboardInterrupt:
            if tty:
                self.stdout.write("")
            raise CommandError(f"Interrupted; run the same command again to resume judge run {run.pk}.") from None
        if tty:
            self.stdout.write("")
        run.refresh_from_db()
        self.stdout.write(f"Judge run {run.pk} {run.status}: {final['scored']} scored, {final['flagged']} flagged "
                          f"({final['no_video']} without a video), {final['pending']} pending, "
                          f"in {time.monotonic() - began:.1f} s")

    @staticmethod
    def _line(counts, elapsed):
        total = counts["total"] or 1
        width = 30
        filled = int(width * counts["finished"] / total)
        bar = "#" * filled + "-" * (width - filled)
        return (f"[{bar}] {counts['finished']}/{counts['total']} ({counts['percent']}%) "
                f"scored {counts['scored']} flagged {counts['flagged']}  {elapsed:.0f} s")
