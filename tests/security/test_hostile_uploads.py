"""Fifty hostile files through the upload endpoint, the API and the upload page: each refused with a clear 4xx
(a JSON reason and code), and nothing stored: no SourceVideo row, no file under MEDIA_ROOT, no temporary file left
in FILE_UPLOAD_TEMP_DIR, nothing written anywhere else under the test's folder.

The multipart bodies are built by hand, so that file names reach the server exactly as an attacker would send them
(Django's test client would strip ``../`` itself)."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from datasets.models import SourceVideo
from tests.datasets.ingest_fixtures import sample_videos  # noqa: F401  (session fixture: small synthetic videos)

pytestmark = pytest.mark.django_db

LIMIT = 64 * 1024  # the upload limit in these tests
MP4_HEADER = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
BOUNDARY = "----hostile-boundary-7d1f"


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def _tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def hostile_files(video: bytes) -> list[tuple[str, bytes, bytes]]:
    """(label, file name as sent, content): fifty files no upload may store. `video` is a real, valid MP4."""
    bomb = _zip("movie.mp4", b"\x00" * (20 * 1024 * 1024))  # 20 MiB of zeros in about 20 KiB
    n = len(video)
    files = [("empty", b"empty.mp4", b"")]
    for cut in (8, 16, 40, 100, n // 10, n // 4, n // 2, (3 * n) // 4, (9 * n) // 10):
        files.append((f"truncated at {cut} of {n} bytes", b"cells.mp4", video[:cut]))
    files += [
        ("MP4 header only", b"header.mp4", MP4_HEADER),
        ("MP4 header and random bytes", b"garbage.mp4", MP4_HEADER + os.urandom(8192)),
        ("MP4 header and zeros", b"zeros.mp4", MP4_HEADER + b"\x00" * 8192),
        ("MP4 header and a fake moov box", b"moov.mp4", MP4_HEADER + b"\x00\x00\x10\x00moov" + b"\xff" * 4096),
        ("the video's moov without its mdat", b"nomdat.mp4", video[: min(n, 64)] + b"\x00\x00\x00\x08free"),
        ("polyglot JPEG + ZIP", b"photo.mp4", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 512 + b"\xff\xd9"
         + _zip("payload.txt", b"hello")),
        ("polyglot HTML with an MP4 header", b"page.mp4",
         MP4_HEADER + b"<html><body><script>alert(document.cookie)</script></body></html>"),
        ("HTML page named .mp4", b"index.mp4", b"<!doctype html><script>alert(1)</script>"),
        ("SVG with script", b"image.mp4", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("GIF + ZIP (GIFAR)", b"anim.mp4", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;" + _zip("a.class", b"\xca\xfe")),
        ("PNG", b"still.mp4", b"\x89PNG\r\n\x1a\n" + b"\x00" * 256),
        ("PDF", b"paper.mp4", b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"),
        ("ELF executable", b"run.mp4", b"\x7fELF\x02\x01\x01" + b"\x00" * 1024),
        ("shell script", b"install.mp4", b"#!/bin/sh\nrm -rf / --no-preserve-root\n"),
        ("text", b"notes.mp4", b"Not a video at all, just a note with a .mp4 name.\n" * 20),
        ("JSON", b"data.mp4", b'{"video": true, "frames": [1, 2, 3]}'),
        ("zip bomb renamed .mp4", b"bomb.mp4", bomb),
        ("nested zip bomb renamed .mp4", b"bomb2.mp4", _zip("inner.zip", bomb)),
        ("gzip bomb renamed .mp4", b"bomb.mp4.gz.mp4", gzip.compress(b"\x00" * (20 * 1024 * 1024))),
        ("tar.gz renamed .mp4", b"archive.mp4", _tar("movie.mp4", video)),
        ("huge: zeros over the limit", b"huge.mp4", b"\x00" * (LIMIT * 3)),
        ("huge: a real video padded over the limit", b"huge-real.mp4", video + b"\x00" * (LIMIT * 2)),
        ("huge: MP4 header then megabytes", b"huge-header.mp4", MP4_HEADER + os.urandom(LIMIT + 1)),
    ]
    bad = video[: n // 3]  # a truncated video: every hostile name below carries content that must be refused
    names = [
        b"../../x.mp4", b"../../../../etc/cron.d/evil.mp4", b"/etc/passwd", b"/tmp/absolute.mp4",
        b"..\\..\\windows.mp4", b"C:\\Windows\\System32\\evil.mp4", b"nul\x00byte.mp4", b"x" * 600 + b".mp4",
        "evil\u202egpj.mp4".encode(), "zero\u200bwidth\u2060.mp4".encode(), "ｘ．ｍｐ４".encode(),
        b"a\r\nContent-Type: text/html\r\n\r\n<script>.mp4", b'quote"; filename="other.mp4', b".htaccess",
        b"%2e%2e%2f%2e%2e%2fx.mp4", b"~/.ssh/authorized_keys.mp4", "e\u0301\u0301\u0301\u0301.mp4 \U0001f9ab".encode(),
    ]
    files += [(f"name {name[:40]!r}", name, bad) for name in names]
    assert len(files) == 50, len(files)
    return files


def multipart(files: list[tuple[bytes, bytes]], fields: dict | None = None) -> bytes:
    """A multipart/form-data body with `files` (name as raw bytes, content) in the field "file"."""
    parts = []
    for key, value in (fields or {}).items():
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    for name, content in files:
        parts.append(f"--{BOUNDARY}\r\n".encode() + b'Content-Disposition: form-data; name="file"; filename="'
                     + name + b'"\r\nContent-Type: video/mp4\r\n\r\n' + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def sandbox(settings, tmp_path):
    """MEDIA_ROOT and FILE_UPLOAD_TEMP_DIR under tmp_path; a small upload limit; files over 4 KiB spooled to disk
    (so both Django's in-memory and temporary-file uploads are exercised)."""
    media = tmp_path / "sandbox" / "media"
    temp = tmp_path / "sandbox" / "upload-tmp"
    media.mkdir(parents=True)
    temp.mkdir()
    settings.MEDIA_ROOT = media
    settings.FILE_UPLOAD_TEMP_DIR = str(temp)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 4096
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    settings.PIPELINE = {**settings.PIPELINE, "MAX_UPLOAD_BYTES": LIMIT}
    return tmp_path / "sandbox"


def everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("endpoint", ["/videos/upload/file/", "/api/videos/"])
def test_fifty_hostile_files_are_refused_and_nothing_is_stored(client, researcher, sandbox, sample_videos,
                                                               endpoint):
    client.force_login(researcher)
    client.raise_request_exception = False
    video = sample_videos["long"].read_bytes()
    assert len(video) < LIMIT
    before = everything_under(sandbox)
    problems = []
    for label, name, content in hostile_files(video):
        response = client.post(endpoint, data=multipart([(name, content)], {"title": "t", "license": "CC BY"}),
                               content_type=f"multipart/form-data; boundary={BOUNDARY}")
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not 400 <= response.status_code < 500:
            problems.append(f"{label}: HTTP {response.status_code} {response.content[:300]!r}")
        elif not (body.get("ok") is False and str(body.get("reason", "")).strip() and body.get("code")):
            problems.append(f"{label}: HTTP {response.status_code} without a clear reason: {body}")
        if SourceVideo.objects.exists():
            problems.append(f"{label}: a SourceVideo row was stored")
            SourceVideo.objects.all().delete()
        left = everything_under(sandbox)
        if left != before:
            problems.append(f"{label}: files left behind: {sorted(set(left) - set(before))}")
        if response.status_code == 413:
            assert body.get("code") == "too_large", label
    assert not problems, "\n".join(problems)
    assert not (sandbox.parent / "x.mp4").exists() and not Path("/tmp/absolute.mp4").exists()


def test_the_upload_page_refuses_all_fifty_in_one_post(client, admin_user, sandbox, sample_videos):
    client.force_login(admin_user)
    files = [(name, content) for _label, name, content in hostile_files(sample_videos["long"].read_bytes())
             if len(content) <= LIMIT]  # one oversized file stops the whole upload; those are checked above
    response = client.post("/videos/upload/", data=multipart(files, {"license": "CC BY"}),
                           content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 400
    results = response.context["results"]
    assert len(results) == len(files) and not any(r.ok for r in results)
    assert all(r.reason for r in results)
    assert not SourceVideo.objects.exists()
    assert everything_under(sandbox) == ["media", "upload-tmp"]


@pytest.mark.parametrize("name", [b"../../x.mp4", b"/etc/passwd.mp4", b"..\\..\\w.mp4", b"a\x00b.mp4",
                                  "evil\u202egpj.mp4".encode()])
def test_a_valid_video_with_a_hostile_name_is_stored_under_its_hash_only(client, researcher, sandbox,
                                                                          sample_videos, name):
    """A good file is accepted whatever its name, but the name is only ever text: the file lands under
    videos/<sha[:2]>/<sha>.mp4 inside MEDIA_ROOT, and the kept name has no path and no control character."""
    client.force_login(researcher)
    data = sample_videos["hd"].read_bytes()
    response = client.post("/api/videos/", data=multipart([(name, data)], {"license": "CC BY"}),
                           content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 201, response.content
    video = SourceVideo.objects.get()
    assert video.file.name == f"videos/{video.sha256[:2]}/{video.sha256}.mp4"
    assert "/" not in video.original_name and "\\" not in video.original_name
    assert not any(ord(c) < 32 or c in "\u202e\u200b" for c in video.original_name)
    assert everything_under(sandbox / "media") == ["videos", f"videos/{video.sha256[:2]}", video.file.name]
    assert everything_under(sandbox / "upload-tmp") == []


def _long_name_upload(client, endpoint):
    # a part header over Django's 1 KiB limit (MultiPartParser.MAX_TOTAL_HEADER_SIZE): the body cannot be parsed
    return client.post(endpoint, data=multipart([(b"y" * 1200 + b".mp4", b"not a video")]),
                       content_type=f"multipart/form-data; boundary={BOUNDARY}")


def test_a_name_too_long_to_parse_is_refused_by_the_api_with_a_reason(client, researcher, sandbox):
    client.force_login(researcher)
    response = _long_name_upload(client, "/api/videos/")
    assert response.status_code == 400 and "header size" in response.json()["detail"]
    assert not SourceVideo.objects.exists() and everything_under(sandbox) == ["media", "upload-tmp"]


def test_a_name_too_long_to_parse_is_refused_by_the_endpoint_with_a_json_reason(client, researcher, sandbox):
    client.force_login(researcher)
    client.raise_request_exception = False
    response = _long_name_upload(client, "/videos/upload/file/")
    assert not SourceVideo.objects.exists() and everything_under(sandbox) == ["media", "upload-tmp"]
    assert response.status_code == 400 and response.json()["ok"] is False and response.json()["reason"]
