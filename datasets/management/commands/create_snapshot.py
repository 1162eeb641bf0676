"""Cut a dataset snapshot: the verified clips with approved captions now, frozen under a name.

    python manage.py create_snapshot microsim-v1

Prints the snapshot's clip count and content hash. Export it with ``export_snapshot NAME``.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from datasets import snapshots


class Command(BaseCommand):
    help = "Freeze the verified clips with approved captions as a named dataset snapshot."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the snapshot's name (letters, digits, '-' and '_')")

    def handle(self, *args, name, **options):
        try:
            snapshot = snapshots.snapshot_create(name=name, user=None, request_id="command:create_snapshot")
        except snapshots.SnapshotError as exc:
            raise CommandError(str(exc)) from None
        stats = snapshot.statistics
        self.stdout.write(f"Snapshot {snapshot.name}: {snapshot.clip_count} clips from {stats['video_count']} "
                          f"videos, {stats['total_seconds']:.1f} s in all; content hash {snapshot.content_hash}")
