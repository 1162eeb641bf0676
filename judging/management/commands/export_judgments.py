"""``manage.py export_judgments --model NAME --out FILE``: the model's latest run in the published format."""
from django.core.management.base import BaseCommand, CommandError

from judging import published, report, runs
from judging.models import JudgeRun


class Command(BaseCommand):
    help = "Write a model's latest judge run as a published <model>_result.json file."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True)
        parser.add_argument("--out", required=True, help="Output file ('-' for standard output)")
        parser.add_argument("--release", default="released", help="Rubric label of the run")
        parser.add_argument("--run", type=int, default=None, help="A run id instead of the latest run")

    def handle(self, *args, model, out, release, run, **options):
        if run is not None:
            chosen = JudgeRun.objects.filter(pk=run, model__name=model).first()
        else:
            chosen = report.latest_runs(rubric_label=release).get(model)
        if chosen is None:
            raise CommandError(f"No judge run of {model!r} on {release!r}" + (f" with id {run}" if run else ""))
        entries = runs.judge_run_export(run=chosen)
        text = published.dumps_results(entries)
        if out == "-":
            self.stdout.write(text, ending="")
            return
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.stderr.write(f"Wrote {len(entries)} entries of judge run {chosen.pk} to {out}")
