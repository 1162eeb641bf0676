from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rubrics import services


class Command(BaseCommand):
    help = "Write rubrics in the published MWBenchRubrics format (released: *_norm.json layout; draft: the drafted one)."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # The interface is `--version released|draft`; it replaces Django's own --version flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--version", dest="label", choices=["released", "draft", "current"], default="released")
        parser.add_argument("--out", required=True, help="Output file ('-' for standard output)")

    def handle(self, *args, label, out, **options):
        content, tasks, criteria = services.release_file_bytes(label=label)
        if tasks == 0:
            raise CommandError(f"No task has a '{label}' rubric version; import the benchmark first.")
        if out == "-":
            self.stdout.write(content.decode("utf-8"), ending="")
            return
        Path(out).write_bytes(content)
        self.stderr.write(f"Wrote {tasks} tasks and {criteria} criteria ({label}) to {out}")
