"""Fixtures for the ingest tests: media and upload temp folders under tmp_path, and small synthetic videos."""
import shutil
from pathlib import Path

import pytest

from datasets.video_io import make_test_video


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory):
    """Tiny synthetic videos made once per session: small (160x120, 8 frames), hd (1280x720, 3 frames),
    sd (640x480, 2 frames), and a truncated copy of a faststart MP4. Tests copy what they mutate."""
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("sample-videos")
    videos = {
        "small": make_test_video(folder / "small.mp4", frames=8, size=(160, 120), fps=8),
        "hd": make_test_video(folder / "hd.mp4", frames=3, size=(1280, 720), fps=24),
        "sd": make_test_video(folder / "sd.mp4", frames=2, size=(640, 480), fps=24),
        "long": make_test_video(folder / "long.mp4", frames=48, size=(160, 120), fps=24),
    }
    data = videos["long"].read_bytes()
    videos["truncated"] = folder / "truncated.mp4"
    videos["truncated"].write_bytes(data[: len(data) // 2])
    return videos


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """MEDIA_ROOT (local file storage) and FILE_UPLOAD_TEMP_DIR under tmp_path; returns MEDIA_ROOT."""
    root = tmp_path / "media"
    root.mkdir()
    (tmp_path / "upload-tmp").mkdir()
    settings.MEDIA_ROOT = root
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    settings.STORAGES = {**settings.STORAGES,
                         "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    return root


@pytest.fixture
def upload_limit(settings):
    """``upload_limit(n)`` sets PIPELINE["MAX_UPLOAD_BYTES"] for the test."""

    def set_limit(n: int):
        settings.PIPELINE = {**settings.PIPELINE, "MAX_UPLOAD_BYTES": n}

    return set_limit


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
