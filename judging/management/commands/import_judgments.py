"""``manage.py import_judgments --model NAME FILE``: a published ``<model>_result.json`` as an imported judge run."""
from pathlib import Path

from django.db import DataError, transaction
from django.core.management.base import BaseCommand, CommandError

from judging import published, runs, videos


class Command(BaseCommand):
    help = "Import a published <model>_result.json file as the model's judge run (all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The results file")
        parser.add_argument("--model", required=True, help="Name of the model under test")
        parser.add_argument("--release", default="released", help='Rubric label the file was scored with')

    def handle(self, *args, file, model, release, **options):
        try:
            entries = published.read_results(file)
        except published.PublishedFormatError as exc:
            raise CommandError(f"{file}: {exc}") from None
        try:
            # One transaction: a refused file must not leave the model registered (nothing partial).
            with transaction.atomic():
                run = runs.judge_run_import(model=videos.model_register(name=model), entries=entries,
                                            source_file=Path(file).name, rubric_label=release)
        except (runs.JudgeRunError, ValueError) as exc:
            raise CommandError(f"{file}: {exc}") from None
        except DataError as exc:  # e.g. a NUL character, which PostgreSQL text cannot hold
            raise CommandError(f"{file}: the database refused a value ({str(exc).splitlines()[0]})") from None
        progress = runs.judge_run_progress(run)
        self.stdout.write(f"Imported {len(entries)} entries of {file} as judge run {run.pk} of {model}: "
                          f"{progress['scored']} judgements well formed, {progress['flagged']} flagged")
