"""``manage.py benchmark_report [--release LABEL] --json | --markdown``: the leaderboard as published."""
import json as _json

from django.core.management.base import BaseCommand

from judging import report


class Command(BaseCommand):
    help = "Print each model's benchmark scores (latest run per model), computed as the published calculation does."

    def add_arguments(self, parser):
        parser.add_argument("--release", default="released", help='Rubric label (default "released")')
        form = parser.add_mutually_exclusive_group(required=True)
        form.add_argument("--json", action="store_true")
        form.add_argument("--markdown", action="store_true")

    def handle(self, *args, release, json: bool, markdown: bool, **options):
        data = report.benchmark_report(rubric_label=release)
        if markdown:
            self.stdout.write(report.report_markdown(data), ending="")
        else:
            self.stdout.write(_json.dumps(data, indent=2))

