from django.core.management.base import BaseCommand, CommandError

from rubrics import services
from rubrics.release_format import ReleaseFormatError
from rubrics.models import Level


class Command(BaseCommand):
    help = "Import the MicroWorldBench public release (the three JSON files in DIR). Atomic and idempotent."

    def add_arguments(self, parser):
        parser.add_argument("directory", help="Folder with MWBenchRubrics.json, MWBenchRubrics_norm.json, finaltasks.json")

    def handle(self, *args, directory, **options):
        try:
            report = services.benchmark_import(directory=directory)
        except (ReleaseFormatError, services.ImportConflict) as exc:
            raise CommandError(f"{exc} (nothing was imported)") from None
        if report.created:
            self.stdout.write(f"Imported {report.created} tasks ({report.unchanged} already present).")
        else:
            self.stdout.write(f"Nothing to do: all {report.unchanged} tasks are already imported and unchanged.")
        for value, label in Level.choices:
            self.stdout.write(f"  {label:<12} {report.levels.get(value, 0):>5}")
        total = sum(report.levels.values())
        self.stdout.write(f"  {'Total':<12} {total:>5}")
        for label in ("draft", "released"):
            self.stdout.write(f"  criteria in '{label}' versions: {report.criteria.get(label, 0)}")
