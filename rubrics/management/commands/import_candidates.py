from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from rubrics import candidates
from rubrics.models import CandidateTask


class Command(BaseCommand):
    help = ("Import candidate benchmark tasks from a CSV or JSON file (columns/keys: title, description, url, and "
            "optionally prompt and level). Rows with a prompt and a level go to task voting; the others are queued "
            "for the LLM (queue 'llm'), or generated here with --now. Atomic: a malformed file imports nothing.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="a .csv (header row) or .json (list of objects) file")
        parser.add_argument("--with-prompts", action="store_true",
                            help="the file carries prompt and level for every row; no LLM is called")
        parser.add_argument("--now", action="store_true",
                            help="generate prompts and levels in this process, one candidate after another, "
                                 "instead of queueing Celery tasks")
        parser.add_argument("--user", help="username recorded as the importer (action log, created_by)")

    def handle(self, *args, file, with_prompts, now, user, **options):
        path = Path(file)
        importer = None
        if user:
            importer = get_user_model().objects.filter(username=user).first()
            if importer is None:
                raise CommandError(f"no user named {user!r}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"{path}: cannot read ({exc.strerror or exc})") from None
        required = ("title", "prompt", "level") if with_prompts else ("title",)
        try:
            rows = candidates.parse_candidate_file(name=path.name, data=data, required=required)
            summary = candidates.candidates_import(rows=rows, user=importer, with_llm=not with_prompts,
                                                   enqueue=not now)
        except candidates.CandidateImportError as exc:
            message = " ".join(str(exc).split())
            raise CommandError(f"{path}: {message} (nothing was imported)") from None

        if not summary.created:
            self.stdout.write(f"Nothing imported from {path}: {summary.skipped_duplicates} rows are already "
                              "candidates." if summary.skipped_duplicates else f"Nothing to import in {path}.")
            return
        waiting = (f"{summary.pending} waiting for the LLM" +
                   ("" if now or not summary.pending else " (queued on 'llm')"))
        self.stdout.write(f"Imported {summary.created} candidates from {path} (batch {summary.batch}): "
                          f"{summary.to_voting} to task voting, {waiting}.")
        if summary.skipped_duplicates:
            self.stdout.write(f"Skipped {summary.skipped_duplicates} rows whose URL is already a candidate.")
        if now and summary.pending_ids:
            self._generate(summary.pending_ids)

    def _generate(self, ids):
        total = len(ids)
        counts = {"voting": 0, "failed": 0, "other": 0}
        for number, candidate_id in enumerate(ids, start=1):
            status = candidates.candidate_generate(candidate_id=candidate_id)
            candidate = CandidateTask.objects.get(pk=candidate_id)
            if status == CandidateTask.Status.VOTING:
                counts["voting"] += 1
                detail = f"to task voting ({candidate.level})"
            elif status == CandidateTask.Status.FAILED:
                counts["failed"] += 1
                detail = f"failed: {candidate.generation_error}"
            else:
                counts["other"] += 1
                detail = f"left as {status}"
            self.stdout.write(f"[{number}/{total}] candidate {candidate_id}: {detail}")
        self.stdout.write(f"Generated {total}: {counts['voting']} to task voting, {counts['failed']} failed"
                          + (f", {counts['other']} skipped" if counts["other"] else "") + ".")
