"""Ingesting source videos (datasets.ingest): the service, folders and manifests, the command, the page and the API.

Every refusal is checked for its message and for leaving nothing behind: no SourceVideo row, no action-log row, no
file under MEDIA_ROOT (pointed at tmp_path) and no temporary file.
"""
import hashlib
import io
import json
import shutil

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from annotation.models import ActionLog
from datasets import ingest
from datasets.ingest import IngestError, license_allowed, manifest_rows, video_ingest
from datasets.models import SourceVideo
from tests.datasets.ingest_fixtures import media, sample_videos, stored_files, upload_limit  # noqa: F401

pytestmark = pytest.mark.django_db

CC = {"license": "CC BY 4.0"}


def ingest_path(path, *, name=None, metadata=CC, user=None):
    with open(path, "rb") as f:
        return video_ingest(fileobj=f, original_name=name or path.name, metadata=metadata, user=user)


def assert_nothing_stored(media_root):
    assert SourceVideo.objects.count() == 0
    assert not ActionLog.objects.filter(verb="video_ingest").exists()
    assert stored_files(media_root) == []
    assert list((media_root.parent / "upload-tmp").iterdir()) == []


# ------------------------------------------------------------------------------------------------- the service


def test_an_hd_video_with_a_reuse_license_is_stored_under_its_hash_and_admitted(media, sample_videos, researcher):
    path = sample_videos["hd"]
    metadata = {"title": "Mitosis in HeLa cells", "description": "Time-lapse", "license": "cc by 4.0",
                "source_url": "https://example.org/v/1", "views": "1,234", "likes": 56, "comments": "0"}
    video = ingest_path(path, metadata=metadata, user=researcher)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert video.sha256 == sha and video.size_bytes == path.stat().st_size
    assert video.file.name == f"videos/{sha[:2]}/{sha}.mp4"
    assert stored_files(media) == [f"videos/{sha[:2]}/{sha}.mp4"]
    assert (media / video.file.name).read_bytes() == path.read_bytes()
    assert (video.width, video.height, video.fps, video.frame_count) == (1280, 720, 24.0, 3)
    assert video.duration == pytest.approx(0.125) and video.codec in ("h264", "avc1")
    assert (video.title, video.description, video.license, video.source_url) == (
        "Mitosis in HeLa cells", "Time-lapse", "cc by 4.0", "https://example.org/v/1")
    assert (video.views, video.likes, video.comments) == (1234, 56, 0)
    assert video.admission == SourceVideo.Admission.ADMITTED and video.admission_reason == ""
    assert video.original_name == "hd.mp4" and video.uploaded_by == researcher
    log = ActionLog.objects.get(verb="video_ingest")
    assert (log.actor, log.target_type, log.target_id) == (researcher, "sourcevideo", str(video.pk))
    assert log.after["sha256"] == sha and log.after["admission"] == "admitted"
    assert list((media.parent / "upload-tmp").iterdir()) == []


def test_the_title_defaults_to_the_file_name(media, sample_videos):
    video = ingest_path(sample_videos["hd"], name="Kinesin walking.MP4", metadata={"license": "CC0"})
    assert video.title == "Kinesin walking" and video.admission == "admitted"


def test_a_video_breaking_the_rules_is_kept_with_every_reason(media, sample_videos):
    video = ingest_path(sample_videos["small"], metadata={"license": "All rights reserved"})
    assert video.admission == SourceVideo.Admission.REFUSED
    assert "License “All rights reserved” is not one that permits reuse" in video.admission_reason
    assert "Height 120 px is below the minimum of 720 px" in video.admission_reason
    assert len(stored_files(media)) == 1  # kept, with its reason

    sd = ingest_path(sample_videos["sd"], metadata=CC)
    assert sd.admission == "refused" and sd.admission_reason == "Height 480 px is below the minimum of 720 px."

    unlicensed = ingest_path(sample_videos["hd"], metadata={})
    assert unlicensed.admission == "refused" and "No license is given" in unlicensed.admission_reason


def test_admission_rules_follow_the_settings(media, sample_videos, settings):
    settings.PIPELINE = {**settings.PIPELINE, "MIN_HEIGHT": 100, "ALLOWED_LICENSES": ["Public domain"]}
    assert ingest_path(sample_videos["small"], metadata={"license": "public DOMAIN"}).admission == "admitted"
    assert "Height must be at least 100 pixels." in ingest.admission_rules()


@pytest.mark.parametrize("text, allowed", [
    ("CC BY", True), ("cc-by 4.0", True), ("CC BY-SA 3.0 IGO", True), ("CC0 1.0", True),
    ("Creative Commons Attribution license (reuse allowed)", True), ("Public Domain", True),
    ("CC BY-ND 4.0", False), ("CC BY-NC-ND 4.0", False), ("Creative Commons Attribution-NoDerivs 3.0", False),
    ("Standard YouTube License", False), ("", False), ("CCBY", False),
])
def test_license_matching(text, allowed, settings):
    assert license_allowed(text) is allowed


def test_a_prefix_does_not_add_license_elements():
    assert license_allowed("CC BY 4.0", ["CC BY"]) is True
    assert license_allowed("CC BY-NC 4.0", ["CC BY"]) is False
    assert license_allowed("CC BY-ND 4.0", ["CC BY-ND"]) is True


@pytest.mark.parametrize("case, code, message", [
    ("empty", "empty", "The file is empty (0 bytes); nothing was stored."),
    ("truncated", "unreadable", "The video is truncated: it declares 48 frames"),
    ("text", "unreadable", "The file is not a video: its contents are not any known video container"),
    ("fake-mp4-header", "unreadable", "The file is not a video that can be decoded"),
    ("oversized", "too_large", "The file is larger than the limit of 1.0\xa0KB"),
])
def test_bad_files_are_refused_with_a_reason_and_nothing_is_stored(media, sample_videos, upload_limit, tmp_path,
                                                                    case, code, message):
    path = tmp_path / "bad.mp4"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        shutil.copy(sample_videos["truncated"], path)
    elif case == "text":
        path.write_text("Not a video at all, just a note with a .mp4 name.\n" * 10)
    elif case == "fake-mp4-header":
        path.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 2000)
    else:
        upload_limit(1024)
        shutil.copy(sample_videos["hd"], path)
    with pytest.raises(IngestError) as error:
        ingest_path(path, metadata=CC)
    assert error.value.code == code
    assert message in error.value.reason
    assert_nothing_stored(media)


def test_an_oversized_stream_is_cut_off_at_the_limit(media, upload_limit):
    class Endless(io.RawIOBase):
        def __init__(self):
            self.read_bytes = 0

        def readable(self):
            return True

        def read(self, n=-1):
            self.read_bytes += n
            return b"\x00" * n

    upload_limit(3 * ingest.CHUNK_BYTES)
    stream = Endless()
    with pytest.raises(IngestError, match="larger than the limit of 3.0\xa0MB"):
        video_ingest(fileobj=stream, original_name="stream.mp4", metadata=CC, user=None)
    assert stream.read_bytes <= 4 * ingest.CHUNK_BYTES
    assert_nothing_stored(media)


@pytest.mark.parametrize("name, kept", [
    ("../../etc/passwd.mp4", "passwd.mp4"),
    ("..\\..\\windows\\system32\\evil.mp4", "evil.mp4"),
    ("/absolute/path/clip.mp4", "clip.mp4"),
    ("細胞分裂 (ＨＤ).mp4", "細胞分裂 (ＨＤ).mp4"),
    ("e\u0301toile\u202egpj.mp4", "\u00e9toilegpj.mp4"),  # NFC, and the right-to-left override removed
    ("line\nbreak\x00.mp4", "linebreak.mp4"),
    ("..", "upload"),
])
def test_file_names_are_text_never_paths(media, sample_videos, tmp_path, name, kept):
    video = ingest_path(sample_videos["hd"], name=name)
    assert video.original_name == kept
    assert video.file.name == f"videos/{video.sha256[:2]}/{video.sha256}.mp4"
    assert stored_files(media) == [video.file.name]
    assert not (tmp_path / "etc").exists() and not (tmp_path.parent / "etc").exists()


def test_a_bad_file_with_a_traversal_name_is_refused_and_nothing_is_stored(media, tmp_path):
    path = tmp_path / "x.mp4"
    path.write_text("plain text")
    with pytest.raises(IngestError, match="not a video"):
        ingest_path(path, name="../../../etc/passwd.mp4")
    assert_nothing_stored(media)


def test_a_duplicate_is_refused_naming_the_first(media, sample_videos):
    first = ingest_path(sample_videos["hd"], metadata={"title": "First", **CC})
    with pytest.raises(IngestError) as error:
        ingest_path(sample_videos["hd"], name="copy.mp4", metadata={"title": "Copy", **CC})
    assert error.value.code == "duplicate"
    assert f"already ingested as video #{first.pk} “First”" in error.value.reason
    assert SourceVideo.objects.count() == 1 and len(stored_files(media)) == 1


@pytest.mark.parametrize("metadata, message", [
    ({"views": -1}, "Views must be a whole number of zero or more"),
    ({"likes": "many"}, "Likes must be a whole number"),
    ({"comments": 2.5}, "Comments must be a whole number"),
    ({"source_url": "javascript:alert(1)"}, "is not a valid http(s) URL"),
    ({"source_url": "not a url"}, "is not a valid http(s) URL"),
    ({"license": "x" * 121}, "License is longer than 120 characters"),
])
def test_bad_metadata_is_refused_and_nothing_is_stored(media, sample_videos, metadata, message):
    with pytest.raises(IngestError) as error:
        ingest_path(sample_videos["hd"], metadata=metadata)
    assert error.value.code == "invalid_metadata" and message in error.value.reason
    assert_nothing_stored(media)


# ------------------------------------------------------------------------------------------ folders, manifests


@pytest.fixture
def source_folder(tmp_path, sample_videos):
    folder = tmp_path / "sources"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(sample_videos["hd"], folder / "sub" / "good.mp4")
    shutil.copy(sample_videos["sd"], folder / "sd.mp4")
    (folder / "fake.mp4").write_text("text, not video")
    (folder / "notes.txt").write_text("not picked up")
    (tmp_path / "outside.mp4").write_bytes(sample_videos["small"].read_bytes())
    return folder


def test_folder_ingest_reports_each_file_and_goes_on_after_a_bad_one(media, source_folder, researcher):
    results = ingest.folder_ingest(source_folder, user=researcher, metadata=CC, recursive=True)
    assert [(r.name, r.ok) for r in results] == [("fake.mp4", False), ("sd.mp4", True), ("sub/good.mp4", True)]
    assert "not a video" in results[0].reason
    assert results[1].video.admission == "refused" and results[2].video.admission == "admitted"
    assert results[2].video.title == "good" and results[2].video.license == "CC BY 4.0"
    assert len(stored_files(media)) == 2
    assert [r.name for r in ingest.folder_ingest(source_folder, user=None)] == ["fake.mp4", "sd.mp4"]


MANIFEST_ROWS = [
    {"file": "sub/good.mp4", "title": "Good one", "description": "Cells", "license": "CC BY-SA 4.0",
     "url": "https://example.org/good", "views": 10, "likes": 2, "comments": 1},
    {"file": "../outside.mp4", "title": "Escapes", "license": "CC BY"},
    {"file": "/etc/passwd", "title": "Absolute", "license": "CC BY"},
    {"file": "sub/../../outside.mp4", "title": "Sneaky", "license": "CC BY"},
    {"file": "missing.mp4", "title": "Missing", "license": "CC BY"},
    {"file": "fake.mp4", "title": "Fake", "license": "CC BY"},
    {"file": "sd.mp4", "title": "", "license": "CC BY", "views": "-3"},
]


def write_manifest(folder, kind):
    if kind == "json":
        path = folder / "manifest.json"
        path.write_text(json.dumps({"videos": MANIFEST_ROWS}))
    else:
        import csv

        path = folder / "manifest.csv"
        columns = ["file", "title", "description", "license", "url", "views", "likes", "comments"]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(MANIFEST_ROWS)
    return path


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_manifest_rows_resolve_inside_the_folder_and_refuse_escapes(source_folder, kind):
    rows = manifest_rows(write_manifest(source_folder, kind))
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert rows[0]["path"] == (source_folder / "sub" / "good.mp4").resolve() and rows[0]["error"] == ""
    assert rows[0]["source_url"] == "https://example.org/good" and str(rows[0]["views"]) == "10"
    assert "leaves the manifest's folder" in rows[1]["error"] and rows[1]["path"] is None
    assert "absolute path" in rows[2]["error"]
    assert "leaves the manifest's folder" in rows[3]["error"]
    assert "no such file" in rows[4]["error"]


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_manifest_ingest_ingests_good_rows_and_reports_the_rest(media, source_folder, researcher, kind):
    results = ingest.manifest_ingest(write_manifest(source_folder, kind), user=researcher)
    assert [r.ok for r in results] == [True, False, False, False, False, False, False]
    video = results[0].video
    assert (video.title, video.description, video.license, video.source_url, video.views, video.likes,
            video.comments) == ("Good one", "Cells", "CC BY-SA 4.0", "https://example.org/good", 10, 2, 1)
    assert video.admission == "admitted"
    assert "not a video" in results[5].reason and "Views must be" in results[6].reason
    assert stored_files(media) == [video.file.name]
    assert SourceVideo.objects.count() == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"), ('{"a": 1}', "list of objects"), ('[{"title": "no file"}]', "no 'file' column"),
])
def test_an_unusable_manifest_is_refused_whole(tmp_path, content, message):
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(IngestError, match=message):
        manifest_rows(path)


# ------------------------------------------------------------------------------------------------ the command


def run_command(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ingest_videos", *map(str, args), stdout=out, stderr=err, no_color=True)
        code = 0
    except CommandError as error:
        code = error.returncode
        err.write(str(error))
    return code, out.getvalue(), err.getvalue()


def test_the_command_ingests_a_folder_line_by_line_with_a_summary(media, source_folder, researcher):
    code, out, err = run_command(source_folder, "--recursive", "--license", "CC BY 4.0", "--user", "researcher")
    lines = out.splitlines()
    assert lines[0].startswith("REFUSED   fake.mp4: The file is not a video")
    assert lines[1].startswith("KEPT, NOT ADMITTED  sd.mp4: video #") and "Height 480 px" in lines[1]
    assert lines[2].startswith("ADMITTED  sub/good.mp4: video #") and "1280x720, 24.00 fps, 3 frames" in lines[2]
    assert lines[3] == ("3 file(s): 1 ingested and admitted, 1 ingested but refused by an admission rule, "
                        "1 refused (nothing stored).")
    assert code == 1 and "1 of 3 file(s) refused" in err
    assert SourceVideo.objects.filter(uploaded_by=researcher).count() == 2


def test_the_command_ingests_one_file_and_a_manifest(media, source_folder):
    code, out, _ = run_command(source_folder / "sub" / "good.mp4", "--license", "CC0", "--title", "One")
    assert code == 0 and out.startswith("ADMITTED  good.mp4") and "1 file(s): 1 ingested and admitted" in out
    assert SourceVideo.objects.get().title == "One"
    code, out, _ = run_command(write_manifest(source_folder, "csv"))
    assert code == 1
    assert "REFUSED   sub/good.mp4: This file was already ingested as video #" in out
    assert "REFUSED   ../outside.mp4: '../outside.mp4' leaves the manifest's folder" in out
    assert "7 file(s): 0 ingested and admitted, 0 ingested but refused by an admission rule, 7 refused" in out


def test_the_command_refuses_a_missing_path_and_an_unknown_user(media, tmp_path):
    assert run_command(tmp_path / "nope")[0] == 1
    code, _, err = run_command(tmp_path, "--user", "nobody")
    assert code == 1 and "No user named 'nobody'" in err


# ------------------------------------------------------------------------------------------ the page and the API


def upload(name, content, content_type="video/mp4"):
    return SimpleUploadedFile(name, content, content_type=content_type)


def test_only_researchers_and_admins_see_the_upload_page(client, researcher, admin_user, expert, media):
    assert client.get("/videos/upload/").status_code == 302  # to the login page
    client.force_login(expert)
    assert client.get("/videos/upload/").status_code == 403
    assert client.post("/videos/upload/file/", {"file": upload("a.mp4", b"x")}).status_code == 403
    for user in (researcher, admin_user):
        client.force_login(user)
        page = client.get("/videos/upload/")
        assert page.status_code == 200
        html = page.content.decode()
        assert "Height must be at least 720 pixels." in html and 'id="overall-progress"' in html
        assert 'data-endpoint="/videos/upload/file/"' in html
    assert_nothing_stored(media)


def test_the_upload_endpoint_answers_json_per_file(client, researcher, media, sample_videos):
    client.force_login(researcher)
    good = client.post("/videos/upload/file/", {"file": upload("../../cells.mp4", sample_videos["hd"].read_bytes()),
                                                "title": "", "license": "CC BY", "views": "7", "likes": "",
                                                "comments": "", "source_url": "", "description": ""})
    assert good.status_code == 201
    body = good.json()
    video = SourceVideo.objects.get()
    assert body["ok"] is True and body["name"] == "cells.mp4"
    assert body["video"]["id"] == video.pk and body["video"]["admission"] == "admitted"
    assert body["video"]["title"] == "cells" and body["video"]["url"].endswith(f"/{video.pk}/")
    assert (video.views, video.uploaded_by) == (7, researcher)

    text = client.post("/videos/upload/file/", {"file": upload("notes.mp4", b"hello " * 100), "license": "CC BY"})
    assert text.status_code == 400 and text.json()["code"] == "unreadable"
    assert "not a video" in text.json()["reason"]
    again = client.post("/videos/upload/file/", {"file": upload("again.mp4", sample_videos["hd"].read_bytes())})
    assert again.status_code == 409 and "already ingested" in again.json()["reason"]
    missing = client.post("/videos/upload/file/", {"title": "no file"})
    assert missing.status_code == 400 and "No file was sent" in missing.json()["reason"]
    assert SourceVideo.objects.count() == 1 and len(stored_files(media)) == 1


def test_an_oversized_upload_is_cut_off_by_the_upload_handler(client, researcher, media, upload_limit):
    upload_limit(100 * 1024)
    client.force_login(researcher)
    response = client.post("/videos/upload/file/", {"file": upload("big.mp4", b"\x00" * (300 * 1024))})
    assert response.status_code == 413, response.content
    assert "big.mp4: the file is larger than the limit of 100.0\xa0KB" in response.json()["reason"]
    api = client.post("/api/videos/", {"file": upload("big.mp4", b"\x00" * (300 * 1024))})
    assert api.status_code == 413 and api.json()["code"] == "too_large"
    assert_nothing_stored(media)


def test_the_upload_endpoint_checks_csrf(researcher, media, sample_videos):
    client = Client(enforce_csrf_checks=True)
    client.force_login(researcher)
    page = client.get("/videos/upload/")
    token = page.cookies["csrftoken"].value
    data = {"file": upload("a.mp4", sample_videos["hd"].read_bytes())}
    assert client.post("/videos/upload/file/", data).status_code == 403
    assert_nothing_stored(media)
    data = {"file": upload("a.mp4", sample_videos["hd"].read_bytes())}
    assert client.post("/videos/upload/file/", data, headers={"X-CSRFToken": token}).status_code == 201


def test_the_page_without_script_posts_every_file_with_shared_metadata(client, admin_user, media, sample_videos):
    client.force_login(admin_user)
    response = client.post("/videos/upload/", {
        "file": [upload("one.mp4", sample_videos["hd"].read_bytes()), upload("two.mp4", b"text"),
                 upload("three.mp4", sample_videos["small"].read_bytes())],
        "license": "CC BY 4.0", "title": "", "views": "3"})
    assert response.status_code == 400  # one refused
    html = response.content.decode()
    assert "<strong>one.mp4</strong>: ingested as" in html and "admitted" in html
    assert "<strong>two.mp4</strong>: refused — The file is not a video" in html
    assert "kept but not admitted: Height 120 px is below the minimum of 720 px." in html
    assert sorted(SourceVideo.objects.values_list("title", "views")) == [("one", 3), ("three", 3)]


def test_the_api_lists_and_ingests_for_researchers_and_admins_only(client, researcher, expert, media,
                                                                    sample_videos):
    client.force_login(expert)
    assert client.get("/api/videos/").status_code == 403
    assert client.post("/api/videos/", {"file": upload("a.mp4", sample_videos["hd"].read_bytes())}).status_code == 403
    client.force_login(researcher)
    created = client.post("/api/videos/", {"file": upload("a.mp4", sample_videos["hd"].read_bytes()),
                                           "license": "CC BY", "source_url": "https://example.org/a", "likes": 4})
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["title"], body["width"], body["height"], body["admission"], body["likes"]) == (
        "a", 1280, 720, "admitted", 4)
    assert body["file_url"].startswith("/media/videos/") and body["uploaded_by"] == "researcher"
    refused = client.post("/api/videos/", {"file": upload("b.mp4", b"")})
    assert refused.status_code == 400 and refused.json() == {
        "ok": False, "reason": "The file is empty (0 bytes); nothing was stored.", "code": "empty"}
    client.post("/api/videos/", {"file": upload("c.mp4", sample_videos["small"].read_bytes())})
    listing = client.get("/api/videos/").json()
    assert listing["count"] == 2 and [v["title"] for v in listing["results"]] == ["c", "a"]
    assert [v["title"] for v in client.get("/api/videos/?admission=refused").json()["results"]] == ["c"]
    assert client.get(f"/api/videos/{body['id']}/").json()["sha256"] == body["sha256"]


def test_the_api_takes_a_token(researcher, media, sample_videos):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=researcher)
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/videos/", {"file": upload("a.mp4", sample_videos["hd"].read_bytes())},
                           headers={"Authorization": f"Token {token.key}"})
    assert response.status_code == 201 and SourceVideo.objects.get().uploaded_by == researcher


def test_the_api_schema_documents_the_upload(client, researcher):
    client.force_login(researcher)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    post = schema["paths"]["/api/videos/"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"] and "413" in post["responses"]


def test_uploads_spooled_to_disk_are_read_in_place_and_cleaned_up(client, researcher, media, sample_videos,
                                                                   settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload becomes a TemporaryUploadedFile in upload-tmp
    client.force_login(researcher)
    bad = client.post("/videos/upload/file/", {"file": upload("bad.mp4", sample_videos["truncated"].read_bytes())})
    assert bad.status_code == 400 and "truncated" in bad.json()["reason"]
    assert_nothing_stored(media)
    good = client.post("/videos/upload/file/", {"file": upload("good.mp4", sample_videos["hd"].read_bytes())})
    assert good.status_code == 201
    video = SourceVideo.objects.get()
    assert (media / video.file.name).read_bytes() == sample_videos["hd"].read_bytes()
    assert oct((media / video.file.name).stat().st_mode & 0o777) == oct(settings.FILE_UPLOAD_PERMISSIONS or 0o644)
    assert list((media.parent / "upload-tmp").iterdir()) == []
