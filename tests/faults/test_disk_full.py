"""A full storage folder: video uploads (the page's per-file endpoint and the API) fail with a clear message, and
nothing half-written is left behind: no SourceVideo row, no action-log row, no partial file.

The storage folder is a real size-limited filesystem where the machine allows it (a tmpfs mounted for the test, as
root); elsewhere a FileSystemStorage that raises ``OSError(ENOSPC)`` once a quota is used up, after writing the bytes
that fitted, as a full disk does.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import ActionLog
from datasets.models import SourceVideo

pytestmark = [pytest.mark.django_db,
              pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")]

QUOTA = 64 * 1024  # bytes the storage folder holds


class QuotaStorage(FileSystemStorage):
    """FileSystemStorage over a folder of QUOTA bytes: a write past the quota writes what fits, then fails with
    ENOSPC, leaving the partial file where a full disk leaves it."""

    def _save(self, name, content):
        full_path = Path(self.path(name))
        full_path.parent.mkdir(parents=True, exist_ok=True)
        used = sum(p.stat().st_size for p in Path(self.location).rglob("*") if p.is_file())
        with open(full_path, "xb") as handle:
            for chunk in content.chunks():
                room = QUOTA - used
                if len(chunk) > room:
                    handle.write(chunk[:max(0, room)])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(full_path))
                handle.write(chunk)
                used += len(chunk)
        return str(name).replace("\\", "/")


def _mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={QUOTA}", "tmpfs", str(folder)],
                            capture_output=True)
    return result.returncode == 0


@pytest.fixture
def full_storage(settings, tmp_path):
    """MEDIA_ROOT on a QUOTA-byte filesystem (or QuotaStorage); yields (root, kind). Upload temp files stay on the
    ordinary disk, as when the media folder is a volume of its own."""
    root = tmp_path / f"media-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    (tmp_path / "upload-tmp").mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    mounted = _mount_tmpfs(root)
    settings.MEDIA_ROOT = root
    backend = "django.core.files.storage.FileSystemStorage" if mounted else f"{__name__}.QuotaStorage"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": backend}}
    try:
        yield root, "tmpfs" if mounted else "quota storage"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def big_video(tmp_path) -> bytes:
    """A readable H.264 video larger than the storage quota (noise does not compress)."""
    import numpy as np

    from datasets.video_io import make_test_video

    rng = np.random.default_rng(0)
    path = make_test_video(tmp_path / "big.mp4", frames=12, size=(320, 240), fps=12,
                           draw=lambda i, w, h: rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    data = path.read_bytes()
    assert len(data) > 2 * QUOTA
    return data


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _assert_nothing_half_written(root: Path, videos_before: int, log_before: int):
    assert SourceVideo.objects.count() == videos_before
    assert ActionLog.objects.filter(verb="video_ingest").count() == log_before
    assert _files(root) == [], f"partial files left in the storage folder: {_files(root)}"




def test_the_upload_endpoint_refuses_cleanly_when_the_storage_is_full(client, researcher, full_storage, big_video):
    root, kind = full_storage
    client.force_login(researcher)
    response = client.post("/videos/upload/file/", {
        "file": SimpleUploadedFile("cells.mp4", big_video, content_type="video/mp4"), "license": "CC BY"})
    assert 400 <= response.status_code < 600 and response.status_code != 500, (kind, response.status_code)
    body = response.json()
    assert body["ok"] is False
    reason = body["reason"].lower()
    assert ("space" in reason or "full" in reason) and "nothing was stored" in reason, body
    assert "Traceback" not in response.content.decode()
    _assert_nothing_half_written(root, 0, 0)


def test_the_api_refuses_cleanly_when_the_storage_is_full(client, researcher, full_storage, big_video):
    root, kind = full_storage
    client.force_login(researcher)
    response = client.post("/api/videos/", {
        "file": SimpleUploadedFile("cells.mp4", big_video, content_type="video/mp4"), "license": "CC BY"})
    assert 400 <= response.status_code < 600 and response.status_code != 500, (kind, response.status_code)
    text = response.content.decode()
    assert ("space" in text.lower() or "full" in text.lower()) and "Traceback" not in text
    _assert_nothing_half_written(root, 0, 0)


def test_a_file_that_fits_is_still_stored(client, researcher, full_storage, tmp_path):
    """The quota is real, not a refusal of everything: a small video fits and is recorded."""
    from datasets.video_io import make_test_video

    root, _ = full_storage
    small = make_test_video(tmp_path / "small.mp4", frames=4, size=(64, 48), fps=4).read_bytes()
    assert len(small) < QUOTA // 2
    client.force_login(researcher)
    response = client.post("/videos/upload/file/", {
        "file": SimpleUploadedFile("small.mp4", small, content_type="video/mp4"), "license": "CC BY"})
    assert response.status_code == 201
    assert SourceVideo.objects.count() == 1 and len(_files(root)) == 1
