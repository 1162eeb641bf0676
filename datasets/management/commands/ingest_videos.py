"""``python manage.py ingest_videos PATH``: ingest a video file, every video of a folder, or a JSON/CSV manifest.

One line per file (ingested and admitted, ingested but refused by an admission rule, or refused with its reason),
then a summary. Exits with status 1 when any file was refused (nothing stored for it), so scripts can tell.
"""
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from datasets import ingest
from datasets.models import SourceVideo


class Command(BaseCommand):
    help = ("Ingest source videos: PATH is a video file, a folder of videos, or a .json/.csv manifest (columns: "
            "file (relative to the manifest), title, description, license, source_url, views, likes, comments).")

    def add_arguments(self, parser):
        parser.add_argument("path", help="A video file, a folder, or a .json/.csv manifest.")
        parser.add_argument("--user", help="Username recorded as the uploader and in the action log.")
        parser.add_argument("--license", default="", help="License for a file or folder (manifests carry their own).")
        parser.add_argument("--description", default="", help="Description for a file or folder.")
        parser.add_argument("--source-url", default="", help="Source URL for a file or folder.")
        parser.add_argument("--title", default="", help="Title for a single file (default: its file name).")
        parser.add_argument("--recursive", action="store_true", help="Include sub-folders of a folder.")

    def handle(self, *args, path, user=None, recursive=False, **options):
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"No user named {user!r}.")
        target = Path(path)
        metadata = {"license": options["license"], "description": options["description"],
                    "source_url": options["source_url"]}
        try:
            if target.is_dir():
                results = ingest.folder_ingest(target, user=actor, metadata=metadata, recursive=recursive)
            elif target.suffix.lower() in (".json", ".csv"):
                results = ingest.manifest_ingest(target, user=actor)
            elif target.is_file():
                metadata["title"] = options["title"]
                results = [ingest.attempt(target.name, lambda: ingest.file_ingest(target, user=actor,
                                                                                   metadata=metadata))]
            else:
                raise CommandError(f"{path}: no such file or folder.")
        except ingest.IngestError as error:
            raise CommandError(error.reason) from None
        for result in results:
            self.stdout.write(self._line(result))
        summary = ingest.summarise(results)
        self.stdout.write(
            f"{len(results)} file(s): {summary.admitted} ingested and admitted, {summary.refused_by_rule} ingested "
            f"but refused by an admission rule, {summary.refused} refused (nothing stored)."
        )
        if summary.refused:
            raise CommandError(f"{summary.refused} of {len(results)} file(s) refused.", returncode=1)

    def _line(self, result: ingest.IngestResult) -> str:
        if not result.ok:
            return self.style.ERROR(f"REFUSED   {result.name}: {result.reason}")
        video = result.video
        facts = (f"video #{video.pk}, {video.width}x{video.height}, {video.fps:.2f} fps, {video.frame_count} frames, "
                 f"{video.duration:.1f} s, {video.codec}")
        if video.admission == SourceVideo.Admission.ADMITTED:
            return self.style.SUCCESS(f"ADMITTED  {result.name}: {facts}")
        return self.style.WARNING(f"KEPT, NOT ADMITTED  {result.name}: {facts}. {video.admission_reason}")
