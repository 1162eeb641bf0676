"""Export a dataset snapshot as the Wan2.1 trainer's input: manifest.json, videos/ and snapshot.json.

    python manage.py export_snapshot microsim-v1                 # to TRAINING["SNAPSHOT_ROOT"]/microsim-v1
    python manage.py export_snapshot microsim-v1 --out /data/microsim-v1

The default folder is where a training job finds the snapshot by name. The same snapshot always exports the same
bytes; a folder that already holds this export is left as it is, one holding anything else is refused.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from datasets import snapshots
from datasets.models import DatasetSnapshot


class Command(BaseCommand):
    help = "Write a snapshot's manifest.json and clip files for the trainer."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the snapshot's name")
        parser.add_argument("--out", default="", metavar="DIR",
                            help='the folder to write (default: TRAINING["SNAPSHOT_ROOT"]/NAME)')

    def handle(self, *args, name, out="", **options):
        snapshot = DatasetSnapshot.objects.filter(name=name).first()
        if snapshot is None:
            raise CommandError(f"no snapshot named {name!r} (cut one with create_snapshot {name})")
        out_dir = out or snapshots.default_export_dir(name)
        try:
            manifest = snapshots.snapshot_export(snapshot=snapshot, out_dir=out_dir, user=None,
                                                 request_id="command:export_snapshot")
        except snapshots.SnapshotError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Snapshot {snapshot.name} ({snapshot.clip_count} clips, content hash "
                          f"{snapshot.content_hash}) exported: {manifest}")
