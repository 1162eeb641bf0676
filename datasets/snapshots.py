"""Dataset snapshots: the verified clips with approved captions at one moment, frozen, and their export as the
Wan2.1 trainer's input (``training_jobs.train.load_manifest``).

What a snapshot holds (:func:`snapshot_create`)
    Every clip whose clip-verification review item was accepted and which has an approved caption; when a clip has
    several approved caption versions, the latest. Items are ordered by clip id. The snapshot's ``content_hash`` is
    a SHA-256 over the items sorted by clip id, each ``clip id``, the SHA-256 of the clip file's bytes and the caption
    text (:func:`content_hash`), so two snapshots of the same clips, files and captions have the same hash.

Statistics
    ``clip_count``, ``total_seconds``, ``mean_seconds``, ``videos`` (per source video: id, title and clip count) and a
    clip-duration histogram over fixed edges (:data:`DURATION_EDGES`, seconds).

Export (:func:`snapshot_export`)
    ``<out_dir>/manifest.json``: ``[{"id": "clip-<id>", "video": "videos/clip-<id>.mp4", "prompt": caption}]`` in clip
    id order, ``json.dumps(indent=2, ensure_ascii=False)`` and a newline, UTF-8; ``<out_dir>/videos/clip-<id>.mp4``:
    byte copies of the clip files; ``<out_dir>/snapshot.json``: name, content hash, count and statistics (no
    timestamps). The same snapshot always exports the same bytes. Before writing, the clip files and captions are
    hashed again and must still give the snapshot's content hash (a changed file is refused, not exported under the
    old name). The export is written to a temporary folder beside ``out_dir`` and renamed into place, so a crash
    leaves no half export. An existing ``out_dir`` holding exactly this export is left as it is; anything else
    there is refused (never overwritten).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery

from annotation.models import ReviewItem, Workflow
from annotation.services import log_action
from datasets.models import Caption, Clip, DatasetSnapshot, SnapshotItem

DURATION_EDGES = (0, 2, 4, 6, 8, 10, 15, 20, 30, 60)  # seconds; the last bin is "60 and longer"
CHUNK = 1 << 20
NAME_RE = re.compile(r"^[-a-zA-Z0-9_]+$")


class SnapshotError(Exception):
    """A snapshot cannot be cut or exported; the message is for people."""


@dataclass(frozen=True)
class FrozenItem:
    clip: Clip
    caption: Caption
    file_sha256: str


def file_sha256(name: str) -> str:
    """SHA-256 of a stored file's bytes (any storage backend)."""
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(items: list[tuple[int, str, str]]) -> str:
    """SHA-256 over ``(clip id, clip file sha256, caption text)`` items sorted by clip id: each item is
    ``<id>\\0<sha>\\0<len(caption bytes)>\\0<caption bytes>`` (the length keeps captions from running together)."""
    digest = hashlib.sha256()
    for clip_id, sha, text in sorted(items, key=lambda item: item[0]):
        data = text.encode("utf-8")
        digest.update(f"{int(clip_id)}\0{sha}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def eligible_clips():
    """The clips a snapshot cut now would hold: clip verification accepted, with an approved caption; each annotated
    with ``approved_caption_id`` (the latest approved version), in clip id order."""
    clip_type = ContentType.objects.get_for_model(Clip)
    verified = ReviewItem.objects.filter(workflow=Workflow.CLIP_VERIFICATION, content_type=clip_type,
                                         status=ReviewItem.Status.ACCEPTED).values("object_id")
    latest = (Caption.objects.filter(clip=OuterRef("pk"), status=Caption.Status.APPROVED)
              .order_by("-version").values("pk")[:1])
    return (Clip.objects.filter(pk__in=verified).exclude(file="")
            .annotate(approved_caption_id=Subquery(latest)).filter(approved_caption_id__isnull=False)
            .select_related("video").order_by("pk"))


def _histogram(durations: list[float]) -> list[dict]:
    bins = []
    for low, high in zip(DURATION_EDGES, (*DURATION_EDGES[1:], None)):
        count = sum(1 for d in durations if d >= low and (high is None or d < high))
        bins.append({"from": low, "to": high, "count": count})
    return bins


def statistics(items: list[FrozenItem]) -> dict:
    durations = [round(item.clip.duration, 6) for item in items]
    per_video = Counter(item.clip.video_id for item in items)
    titles = {item.clip.video_id: item.clip.video.title for item in items}
    total = round(sum(durations), 3)
    return {
        "clip_count": len(items),
        "total_seconds": total,
        "mean_seconds": round(total / len(items), 3) if items else 0.0,
        "video_count": len(per_video),
        "videos": [{"id": vid, "title": titles[vid][:200], "clips": per_video[vid]} for vid in sorted(per_video)],
        "duration_histogram": _histogram(durations),
        "caption_words_mean": round(sum(len(i.caption.text.split()) for i in items) / len(items), 1) if items else 0,
    }


def snapshot_create(*, name: str, user, request_id: str = "") -> DatasetSnapshot:
    """Freeze the verified clips with approved captions under ``name`` (a slug, unique). Logged."""
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name) or len(name) > 120:
        raise SnapshotError("A snapshot name is letters, digits, '-' and '_' only (at most 120), e.g. microsim-v1.")
    if DatasetSnapshot.objects.filter(name=name).exists():
        raise SnapshotError(f"There already is a snapshot named {name!r}; snapshots are never changed.")
    clips = list(eligible_clips())
    captions = Caption.objects.in_bulk([c.approved_caption_id for c in clips])
    clips = [c for c in clips if captions[c.approved_caption_id].text.strip()]  # the trainer needs a prompt
    if not clips:
        raise SnapshotError("No clip is both verified by the experts and captioned with an approved caption yet.")
    items = [FrozenItem(clip=c, caption=captions[c.approved_caption_id], file_sha256=file_sha256(c.file.name))
             for c in clips]
    digest = content_hash([(i.clip.pk, i.file_sha256, i.caption.text) for i in items])
    stats = statistics(items)
    try:
        with transaction.atomic():
            snapshot = DatasetSnapshot.objects.create(name=name, content_hash=digest, clip_count=len(items),
                                                      statistics=stats, created_by=user)
            SnapshotItem.objects.bulk_create([
                SnapshotItem(snapshot=snapshot, clip=i.clip, caption=i.caption, position=n)
                for n, i in enumerate(items)
            ])
            log_action(actor=user, verb="snapshot_create", target=snapshot, request_id=request_id,
                       after={"name": name, "content_hash": digest, "clips": len(items)})
    except IntegrityError:
        raise SnapshotError(f"There already is a snapshot named {name!r}; snapshots are never changed.") from None
    return snapshot


# ------------------------------------------------------------------------------------------------------ export


def manifest_entries(snapshot: DatasetSnapshot) -> list[dict]:
    items = snapshot.items.select_related("caption").order_by("clip_id")
    return [{"id": f"clip-{item.clip_id}", "video": f"videos/clip-{item.clip_id}.mp4", "prompt": item.caption.text}
            for item in items]


def manifest_bytes(snapshot: DatasetSnapshot) -> bytes:
    return (json.dumps(manifest_entries(snapshot), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def info_bytes(snapshot: DatasetSnapshot) -> bytes:
    info = {"name": snapshot.name, "content_hash": snapshot.content_hash, "clip_count": snapshot.clip_count,
            "statistics": snapshot.statistics}
    return (json.dumps(info, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def _sha_of_path(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_files(snapshot: DatasetSnapshot) -> tuple[dict[str, bytes], dict[str, tuple[str, str]]]:
    """The export's small files (relative path -> bytes) and its videos (relative path -> (storage name, sha)),
    after checking that the clip files and captions still give the snapshot's content hash."""
    items = list(snapshot.items.select_related("clip", "caption").order_by("clip_id"))
    videos, hashed = {}, []
    for item in items:
        if not item.clip.file or not default_storage.exists(item.clip.file.name):
            raise SnapshotError(f"Snapshot {snapshot.name}: clip {item.clip_id}'s file is missing from storage; it "
                                "cannot be exported as it was cut.")
        sha = file_sha256(item.clip.file.name)
        videos[f"videos/clip-{item.clip_id}.mp4"] = (item.clip.file.name, sha)
        hashed.append((item.clip_id, sha, item.caption.text))
    if content_hash(hashed) != snapshot.content_hash:
        raise SnapshotError(f"Snapshot {snapshot.name}'s clip files or captions changed since it was cut (content "
                            "hash differs); it cannot be exported as it was. Cut a new snapshot.")
    small = {"manifest.json": manifest_bytes(snapshot), "snapshot.json": info_bytes(snapshot)}
    return small, videos


def _existing_export_matches(out_dir: Path, small: dict[str, bytes], videos: dict[str, tuple[str, str]]) -> bool:
    present = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    if present != sorted([*small, *videos]):
        return False
    for rel, data in small.items():
        if (out_dir / rel).read_bytes() != data:
            return False
    return all(_sha_of_path(out_dir / rel) == sha for rel, (_, sha) in videos.items())


def snapshot_export(*, snapshot: DatasetSnapshot, out_dir: str | os.PathLike, user=None,
                    request_id: str = "") -> Path:
    """Write the snapshot to ``out_dir`` (manifest, videos, snapshot.json) and return the manifest's path.

    Deterministic: the same snapshot always gives the same bytes. An ``out_dir`` that already holds exactly this
    export is left alone; a non-empty ``out_dir`` holding anything else raises :class:`SnapshotError`."""
    out_dir = Path(out_dir).expanduser().resolve()
    small, videos = _expected_files(snapshot)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SnapshotError(f"{out_dir} exists and is not a folder.")
        if any(out_dir.iterdir()):
            if _existing_export_matches(out_dir, small, videos):
                return out_dir / "manifest.json"
            raise SnapshotError(f"{out_dir} already holds something other than snapshot {snapshot.name}'s export; "
                                "it is not overwritten. Choose another folder or remove it.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        (staging / "videos").mkdir()
        for rel, (name, sha) in videos.items():
            digest = hashlib.sha256()
            with default_storage.open(name, "rb") as source, (staging / rel).open("wb") as target:
                for chunk in iter(lambda: source.read(CHUNK), b""):
                    digest.update(chunk)
                    target.write(chunk)
            if digest.hexdigest() != sha:
                raise SnapshotError(f"The clip file {name} changed while it was being exported.")
        for rel, data in small.items():
            (staging / rel).write_bytes(data)
        for path in [staging, staging / "videos", *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp makes 0700; others (the trainer) must read
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); a non-empty one that appeared meanwhile makes this fail
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log_action(actor=user, verb="snapshot_export", target=snapshot, request_id=request_id,
               after={"name": snapshot.name, "out_dir": str(out_dir), "content_hash": snapshot.content_hash})
    return out_dir / "manifest.json"


def default_export_dir(name: str) -> Path:
    """Where a training job finds a snapshot by name: ``TRAINING["SNAPSHOT_ROOT"]/<name>``."""
    from django.conf import settings

    return Path(settings.TRAINING["SNAPSHOT_ROOT"]) / name


def export_state(snapshot: DatasetSnapshot) -> str:
    """For the pages: "exported" when the default folder holds a manifest, else ""."""
    return "exported" if (default_export_dir(snapshot.name) / "manifest.json").is_file() else ""
