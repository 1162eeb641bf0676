"""Ingest through django-storages' S3 backend against a real S3-compatible server on loopback (moto's server mode,
a real HTTP server in a thread; nothing is patched)."""
import hashlib

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.ingest import IngestError, video_ingest
from datasets.models import SourceVideo
from tests.datasets.ingest_fixtures import sample_videos, upload_limit  # noqa: F401

pytestmark = pytest.mark.django_db

BUCKET = "microverse-test-media"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_server, settings, tmp_path):
    """An empty bucket on the moto server, with STORAGES["default"] pointing at it (S3Storage); Django's
    setting_changed handler resets ``default_storage`` to the new backend."""
    import boto3

    s3 = boto3.resource("s3", endpoint_url=s3_server, **CREDENTIALS)
    bucket = s3.Bucket(BUCKET)
    bucket.create()
    settings.MEDIA_ROOT = tmp_path / "media-unused"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": s3_server, "access_key": "testing",
                    "secret_key": "testing", "region_name": "us-east-1", "default_acl": None,
                    "querystring_auth": True, "file_overwrite": False},
    }}
    try:
        yield bucket
    finally:
        bucket.objects.all().delete()
        bucket.delete()


def objects(bucket) -> dict[str, int]:
    return {o.key: o.size for o in bucket.objects.all()}


def test_default_storage_is_the_s3_backend(bucket):
    from storages.backends.s3 import S3Storage

    assert default_storage.exists("videos/none.mp4") is False  # resolves the lazy object, asks the server
    assert isinstance(default_storage._wrapped, S3Storage)


def test_an_ingested_video_lands_in_the_bucket(bucket, sample_videos, researcher, tmp_path):
    data = sample_videos["hd"].read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    video = video_ingest(fileobj=SimpleUploadedFile("../../x.mp4", data), original_name="../../x.mp4",
                         metadata={"license": "CC BY 4.0"}, user=researcher)
    key = f"videos/{sha[:2]}/{sha}.mp4"
    assert video.file.name == key and video.admission == "admitted"
    assert objects(bucket) == {key: len(data)}
    assert bucket.Object(key).get()["Body"].read() == data
    assert video.file.url.startswith(f"{bucket.meta.client.meta.endpoint_url}/{BUCKET}/{key}?")
    assert not (tmp_path / "media-unused").exists()
    with video.file.open("rb") as f:  # read back through the storage API
        assert hashlib.sha256(f.read()).hexdigest() == sha


def test_refused_files_leave_the_bucket_empty(bucket, sample_videos, upload_limit):
    for name, content in (("empty.mp4", b""), ("text.mp4", b"plain text " * 50),
                          ("truncated.mp4", sample_videos["truncated"].read_bytes())):
        with pytest.raises(IngestError):
            video_ingest(fileobj=SimpleUploadedFile(name, content), original_name=name, metadata={}, user=None)
    upload_limit(1000)
    with pytest.raises(IngestError, match="larger than the limit"):
        video_ingest(fileobj=SimpleUploadedFile("big.mp4", sample_videos["hd"].read_bytes()),
                     original_name="big.mp4", metadata={}, user=None)
    assert objects(bucket) == {}
    assert SourceVideo.objects.count() == 0


def test_a_failed_database_write_removes_the_stored_object(bucket, sample_videos, monkeypatch):
    from datasets import ingest

    def boom(**kwargs):
        raise RuntimeError("database down")

    monkeypatch.setattr(ingest, "log_action", boom)
    with pytest.raises(RuntimeError, match="database down"):
        video_ingest(fileobj=SimpleUploadedFile("a.mp4", sample_videos["hd"].read_bytes()), original_name="a.mp4",
                     metadata={}, user=None)
    assert objects(bucket) == {} and SourceVideo.objects.count() == 0
