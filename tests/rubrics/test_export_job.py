"""A researcher asks for a rubric export; a real Celery worker writes the published-format file into storage."""
import json
import time

import pytest
from rest_framework.test import APIClient

from rubrics import services
from rubrics.models import BenchmarkExport
from tests.helpers import FIXTURE_DIR, import_release_subset

INDICES = (1, 2, 3, 277)


def _expected(name):
    entries = [e for e in json.loads((FIXTURE_DIR / name).read_text(encoding="utf-8")) if e["index"] in INDICES]
    for entry in entries:
        for key, rubric in entry.items():
            if key.startswith("rubrics_"):
                for k in rubric:
                    if k.startswith("w"):
                        rubric[k] = float(rubric[k])
    return entries


def _wait_final(export_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        export = BenchmarkExport.objects.get(pk=export_id)
        if export.is_final:
            return export
        time.sleep(0.2)
    raise AssertionError(f"export {export_id} still {export.status} after {timeout} s")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_worker_writes_the_released_file_and_the_researcher_downloads_it(celery_worker_process, researcher,
                                                                         tmp_path):
    import_release_subset(tmp_path / "release", INDICES)
    api = APIClient()
    api.force_login(researcher)
    created = api.post("/api/exports/", {"style": "released"}, format="json")
    assert created.status_code == 201, created.content
    export = _wait_final(created.json()["id"])
    assert export.status == "done", export.error
    assert (export.task_count, export.criterion_count) == (4, 4 * 15 - 1)
    body = api.get(api.get(f"/api/exports/{export.pk}/").json()["download_url"])
    assert body.status_code == 200
    assert json.loads(b"".join(body.streaming_content)) == _expected("MWBenchRubrics_norm.json")


@pytest.mark.django_db
def test_running_the_export_twice_writes_it_once(researcher, tmp_path):
    import_release_subset(tmp_path / "release", INDICES)
    export = BenchmarkExport.objects.create(style="draft", requested_by=researcher)
    services.benchmark_export_write(export_id=export.pk)
    first = BenchmarkExport.objects.get(pk=export.pk)
    services.benchmark_export_write(export_id=export.pk)  # a re-delivered message
    again = BenchmarkExport.objects.get(pk=export.pk)
    assert (again.status, again.file.name, again.sha256) == ("done", first.file.name, first.sha256)
    with again.file.open("rb") as handle:
        assert json.load(handle) == _expected("MWBenchRubrics.json")


@pytest.mark.django_db
def test_an_unknown_style_is_refused_and_nothing_is_queued(client, researcher):
    client.force_login(researcher)
    response = client.post("/benchmark/exports/", {"style": "final"})
    assert response.status_code == 400 and b"unknown rubric version" in response.content
    assert BenchmarkExport.objects.count() == 0
