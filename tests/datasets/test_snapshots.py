"""Dataset snapshots (datasets/snapshots.py): what goes in (verified clips with an approved caption, the latest
approved version), the content hash and statistics, the export (the trainer's manifest, byte-identical on every
export, never overwriting another export), the trainer's manifest loader reading it, the commands and the pages."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import include, path

from annotation.models import ActionLog, ReviewItem
from datasets import snapshots
from datasets.models import Caption, Clip, DatasetSnapshot, SnapshotItem
from tests.datasets.test_classifier_training import clip_files, label, make_clip, make_video, media  # noqa: F401

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")

urlpatterns = [path("", include("microverse_site.urls")), path("", include("datasets.snapshot_urls"))]


def caption(clip: Clip, text: str, status: str = Caption.Status.APPROVED, version: int | None = None) -> Caption:
    version = version or (clip.captions.count() + 1)
    return Caption.objects.create(clip=clip, version=version, text=text, source=Caption.Source.LLM, status=status)


@pytest.fixture
def dataset(media, clip_files, expert, expert2):
    """Two source videos; clips: verified with approved captions (a, b, c; b's caption approved twice, then a newer
    version waiting for checking), verified without an approved caption, rejected, still open."""
    one, two = make_video("Mitosis"), make_video("Capillaries")
    experts = [expert, expert2]
    clips = {}
    for key, video, source in (("a", one, clip_files["red"][0]), ("b", one, clip_files["red"][1]),
                               ("c", two, clip_files["blue"][0]), ("unchecked", two, clip_files["blue"][1]),
                               ("rejected", one, clip_files["red"][2]), ("open", two, clip_files["blue"][2])):
        clips[key] = make_clip(video, source)
    for key in ("a", "b", "c", "unchecked"):
        label(clips[key], experts, [True, True])
    label(clips["rejected"], experts, [False, False], value="reject", status=ReviewItem.Status.REJECTED)
    label(clips["open"], experts[:1], [True], status=ReviewItem.Status.OPEN)
    caption(clips["a"], "A cell divides; chromosomes align at the metaphase plate, 10 µm across.")
    caption(clips["b"], "Old approved caption of b.", status=Caption.Status.SUPERSEDED)
    caption(clips["b"], "Red blood cells squeeze through a capillary.")
    caption(clips["b"], "A newer caption still being checked.", status=Caption.Status.CHECKING)
    caption(clips["c"], "Rejected caption.", status=Caption.Status.REJECTED)
    caption(clips["c"], "Vesicles travel along microtubules.")
    caption(clips["unchecked"], "Waiting for its check.", status=Caption.Status.CHECKING)
    caption(clips["rejected"], "Approved but the clip was rejected.")
    caption(clips["open"], "Approved but the clip is still under review.")
    return clips


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.django_db
def test_a_snapshot_freezes_verified_clips_with_their_latest_approved_caption(dataset, researcher):
    snapshot = snapshots.snapshot_create(name="microsim-v1", user=researcher)
    items = list(SnapshotItem.objects.filter(snapshot=snapshot).order_by("position"))
    assert [i.clip_id for i in items] == sorted([dataset["a"].pk, dataset["b"].pk, dataset["c"].pk])
    assert [i.caption.text for i in items] == ["A cell divides; chromosomes align at the metaphase plate, 10 µm across.",
                                               "Red blood cells squeeze through a capillary.",
                                               "Vesicles travel along microtubules."]
    assert snapshot.clip_count == 3 and len(snapshot.content_hash) == 64
    stats = snapshot.statistics
    assert stats["clip_count"] == 3 and stats["total_seconds"] == 3.0 and stats["video_count"] == 2
    assert [(v["title"], v["clips"]) for v in stats["videos"]] == [("Mitosis", 2), ("Capillaries", 1)]
    assert sum(b["count"] for b in stats["duration_histogram"]) == 3
    assert stats["duration_histogram"][0] == {"from": 0, "to": 2, "count": 3}
    assert ActionLog.objects.filter(verb="snapshot_create", actor=researcher, target_id=str(snapshot.pk)).exists()

    # The same clips, files and captions: the same hash. A new approved caption: a different one; the first
    # snapshot stays as it was.
    again = snapshots.snapshot_create(name="microsim-v1-again", user=researcher)
    assert again.content_hash == snapshot.content_hash
    caption(dataset["unchecked"], "Now approved too.")
    bigger = snapshots.snapshot_create(name="microsim-v2", user=researcher)
    assert bigger.clip_count == 4 and bigger.content_hash != snapshot.content_hash
    assert snapshot.items.count() == 3

    with pytest.raises(snapshots.SnapshotError, match="already is a snapshot"):
        snapshots.snapshot_create(name="microsim-v1", user=researcher)
    with pytest.raises(snapshots.SnapshotError, match="letters, digits"):
        snapshots.snapshot_create(name="bad name/..", user=researcher)


def test_content_hash_depends_on_every_part_and_not_on_order():
    items = [(2, "b" * 64, "second"), (1, "a" * 64, "first")]
    digest = snapshots.content_hash(items)
    assert digest == snapshots.content_hash(list(reversed(items)))
    assert digest != snapshots.content_hash([(2, "b" * 64, "second"), (1, "a" * 64, "first!")])
    assert digest != snapshots.content_hash([(2, "c" * 64, "second"), (1, "a" * 64, "first")])
    assert digest != snapshots.content_hash([(3, "b" * 64, "second"), (1, "a" * 64, "first")])
    # caption boundaries cannot be shifted between items
    assert (snapshots.content_hash([(1, "a" * 64, "ab"), (2, "b" * 64, "c")])
            != snapshots.content_hash([(1, "a" * 64, "a"), (2, "b" * 64, "bc")]))


@pytest.mark.django_db
def test_an_empty_snapshot_is_refused(media):
    with pytest.raises(snapshots.SnapshotError, match="No clip"):
        snapshots.snapshot_create(name="empty", user=None)
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.django_db
def test_export_writes_the_trainers_manifest_and_the_same_bytes_every_time(dataset, researcher, tmp_path):
    from training_jobs.train import load_manifest

    snapshot = snapshots.snapshot_create(name="microsim-v1", user=researcher)
    first = snapshots.snapshot_export(snapshot=snapshot, out_dir=tmp_path / "one", user=researcher)
    assert first == (tmp_path / "one" / "manifest.json").resolve()
    ids = sorted([dataset["a"].pk, dataset["b"].pk, dataset["c"].pk])
    entries = json.loads(first.read_text(encoding="utf-8"))
    assert [e["id"] for e in entries] == [f"clip-{i}" for i in ids]
    assert entries[0] == {"id": f"clip-{ids[0]}", "video": f"videos/clip-{ids[0]}.mp4",
                          "prompt": "A cell divides; chromosomes align at the metaphase plate, 10 µm across."}
    raw = first.read_bytes()
    assert raw == (json.dumps(entries, indent=2, ensure_ascii=False) + "\n").encode() and "µm".encode() in raw
    for clip_id in ids:  # byte copies of the clip files
        clip = Clip.objects.get(pk=clip_id)
        with default_storage.open(clip.file.name, "rb") as handle:
            assert (tmp_path / "one" / "videos" / f"clip-{clip_id}.mp4").read_bytes() == handle.read()
    info = json.loads((tmp_path / "one" / "snapshot.json").read_text())
    assert info["content_hash"] == snapshot.content_hash and info["clip_count"] == 3

    # The trainer's own loader reads it: every video found, prompts as written.
    samples = load_manifest(str(first))
    assert [s.id for s in samples] == [e["id"] for e in entries]
    assert all(s.video.is_file() for s in samples) and samples[1].prompt == entries[1]["prompt"]

    # Export again, elsewhere: identical bytes. Into the same folder: left as it is.
    second = snapshots.snapshot_export(snapshot=snapshot, out_dir=tmp_path / "two")
    assert tree_hashes(tmp_path / "one") == tree_hashes(tmp_path / "two")
    assert set(tree_hashes(tmp_path / "one")) == {"manifest.json", "snapshot.json",
                                                  *(f"videos/clip-{i}.mp4" for i in ids)}
    mtime = first.stat().st_mtime_ns
    assert snapshots.snapshot_export(snapshot=snapshot, out_dir=tmp_path / "one") == first
    assert first.stat().st_mtime_ns == mtime
    assert second.read_bytes() == raw
    assert not list(tmp_path.glob(".*partial*"))  # no staging folders left behind

    # Another snapshot's export, or anything else, is never overwritten.
    caption(dataset["unchecked"], "Now approved too.")
    other = snapshots.snapshot_create(name="microsim-v2", user=researcher)
    with pytest.raises(snapshots.SnapshotError, match="not overwritten"):
        snapshots.snapshot_export(snapshot=other, out_dir=tmp_path / "one")
    (tmp_path / "two" / "videos" / "extra.txt").write_text("x")
    with pytest.raises(snapshots.SnapshotError, match="not overwritten"):
        snapshots.snapshot_export(snapshot=snapshot, out_dir=tmp_path / "two")
    assert tree_hashes(tmp_path / "one")["manifest.json"] == hashlib.sha256(raw).hexdigest()
    empty = tmp_path / "empty"
    empty.mkdir()
    snapshots.snapshot_export(snapshot=other, out_dir=empty)  # an empty folder is fine
    assert len(load_manifest(str(empty / "manifest.json"))) == 4


@pytest.mark.django_db
def test_export_refuses_when_a_clip_file_changed_since_the_snapshot(dataset, tmp_path):
    snapshot = snapshots.snapshot_create(name="microsim-v1", user=None)
    name = dataset["a"].file.name
    default_storage.delete(name)
    default_storage.save(name, ContentFile(b"not the same bytes"))
    with pytest.raises(snapshots.SnapshotError, match="changed since it was cut"):
        snapshots.snapshot_export(snapshot=snapshot, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_when_a_clip_file_is_gone(dataset, tmp_path, client, researcher):
    snapshot = snapshots.snapshot_create(name="microsim-v1", user=None)
    default_storage.delete(dataset["a"].file.name)
    with pytest.raises(snapshots.SnapshotError, match="missing from storage"):
        snapshots.snapshot_export(snapshot=snapshot, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.django_db
def test_commands_cut_and_export_where_a_training_job_finds_the_snapshot(dataset, media, capsys, tmp_path):
    from training_jobs.services import snapshot_manifest

    call_command("create_snapshot", "microsim-v1")
    out = capsys.readouterr().out
    snapshot = DatasetSnapshot.objects.get(name="microsim-v1")
    assert "3 clips from 2 videos" in out and snapshot.content_hash in out
    with pytest.raises(CommandError, match="already is a snapshot"):
        call_command("create_snapshot", "microsim-v1")

    call_command("export_snapshot", "microsim-v1")
    default = Path(media.TRAINING["SNAPSHOT_ROOT"]) / "microsim-v1"
    assert str(default / "manifest.json") in capsys.readouterr().out
    assert snapshot_manifest(snapshot_name="microsim-v1") == (default / "manifest.json").resolve()

    call_command("export_snapshot", "microsim-v1", "--out", str(tmp_path / "elsewhere"))
    assert tree_hashes(tmp_path / "elsewhere") == tree_hashes(default)
    with pytest.raises(CommandError, match="no snapshot named"):
        call_command("export_snapshot", "nope")


pages = pytest.mark.urls(__name__)


@pages
@pytest.mark.django_db
def test_snapshot_pages_for_researchers_and_admins_only(client, dataset, media, expert, researcher, admin_user):
    assert client.get("/pipeline/snapshots/").status_code == 302
    client.force_login(expert)
    assert client.get("/pipeline/snapshots/").status_code == 403
    assert client.post("/pipeline/snapshots/cut/", {"name": "x"}).status_code == 403
    assert not DatasetSnapshot.objects.exists()

    client.force_login(researcher)
    page = client.get("/pipeline/snapshots/")
    assert page.status_code == 200 and "3 clips verified" in page.content.decode()
    response = client.post("/pipeline/snapshots/cut/", {"name": "microsim-v1"}, follow=True)
    snapshot = DatasetSnapshot.objects.get(name="microsim-v1")
    html = response.content.decode()
    assert "Snapshot microsim-v1 cut: 3 clips" in html and snapshot.content_hash[:12] in html
    response = client.post("/pipeline/snapshots/cut/", {"name": "microsim-v1"}, follow=True)
    assert "already is a snapshot" in response.content.decode()
    assert client.post(f"/pipeline/snapshots/{snapshot.pk}/export/").status_code == 302
    manifest = Path(media.TRAINING["SNAPSHOT_ROOT"]) / "microsim-v1" / "manifest.json"
    assert manifest.is_file()
    assert "exported" in client.get("/pipeline/snapshots/").content.decode()
    assert ActionLog.objects.filter(verb="snapshot_export", actor=researcher).count() == 1

    client.force_login(admin_user)
    assert client.get("/pipeline/snapshots/").status_code == 200
    assert client.get("/pipeline/classifiers/").status_code == 200
