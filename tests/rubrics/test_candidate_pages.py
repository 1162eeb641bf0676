"""The candidate-task page (/candidates/: upload, status counts with htmx polling, table, retries) and the task page of
a task with no rubric yet (the LLM draft button and its status), driven through the Django test client; the draft runs
in-process against the local chat-completions server (``llm_endpoint``)."""
import csv
import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation import services as review
from annotation.models import ActionLog, ReviewItem
from microverse_site.llm import LLMError
from rubrics import candidate_views, candidates, selectors
from rubrics.models import BenchmarkTask, CandidateTask, RubricVersion

pytestmark = pytest.mark.django_db

Status = CandidateTask.Status
STOP_POLLING = 286
POLL = 'hx-trigger="every 2s"'

ROWS = [
    {"title": "How a Stroke Happens", "description": "A clot blocks a cerebral vessel.",
     "url": "https://example.org/videos/stroke"},
    {"title": "Mitochondria at work", "description": "ATP synthase turning.", "url": "https://example.org/videos/mito"},
    {"title": "Neutrophil chasing a bacterium", "description": "", "url": ""},
]
PROMPTS = ["Inside a cerebral vessel under the microscope, red blood cells meet a clot and stop.",
           "A bean-shaped mitochondrion with folded cristae turns while ATP synthase spins in its membrane.",
           "A neutrophil crawls across a glass slide and engulfs a rod-shaped bacterium."]
LEVELS = ["Organ", "Subcellular-level", "cellular"]
PROMPT_COLUMNS = ("title", "description", "url", "prompt", "level")


def with_prompts(rows=ROWS):
    return [dict(row, prompt=prompt, level=level) for row, prompt, level in zip(rows, PROMPTS, LEVELS)]


def csv_bytes(rows, columns=("title", "description", "url")) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def upload(client, name, data: bytes, *, prompts=False):
    form = {"file": SimpleUploadedFile(name, data)}
    if prompts:
        form["with_prompts"] = "on"
    return client.post(reverse("candidate-import"), form)


def make_candidates(n, status=Status.PENDING, **fields):
    return CandidateTask.objects.bulk_create([
        CandidateTask(source_title=f"Video {status} {i}", source_url=f"https://example.org/{status}/{i}",
                      status=status, **fields) for i in range(n)])


def rubric_answer() -> str:
    data = {}
    for dimension, count in (("scientific", 4), ("visual", 3), ("instruction", 3)):
        data[dimension] = [{"description": f"{dimension.title()} criterion {i}: a specific observable property.",
                            "polarity": 1, "weight": (1.0, 0.5, 0.2)[i % 3]} for i in range(1, count + 1)]
    return json.dumps(data)


@pytest.fixture
def no_llm(settings):
    settings.OPENAI_BASE_URL = ""
    return settings


# ------------------------------------------------------------------------------------------------------ upload


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_upload_without_prompts_queues_the_llm(client, researcher, fmt, django_capture_on_commit_callbacks):
    client.force_login(researcher)
    data = csv_bytes(ROWS) if fmt == "csv" else json.dumps(ROWS).encode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(client, f"videos.{fmt}", data)
    assert response.status_code == 302 and response.url == reverse("candidate-list")
    assert list(CandidateTask.objects.order_by("id").values_list("source_title", "status", "created_by")) == [
        (row["title"], Status.PENDING, researcher.pk) for row in ROWS]
    assert len(callbacks) == 1  # candidates_queue_generation for the three, once the import commits
    log = ActionLog.objects.get(verb="candidates_import")
    assert log.actor == researcher and (log.after["created"], log.after["pending"]) == (3, 3)
    page = client.get(response.url)
    text = page.content.decode()
    assert "Imported 3 candidates from videos." in text and "3 waiting for the LLM" in text
    assert POLL in text  # the LLM has work: the counts refresh
    assert page.context["active"] == 3


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_upload_with_prompts_goes_to_task_voting(client, admin_user, fmt, django_capture_on_commit_callbacks):
    client.force_login(admin_user)
    rows = with_prompts()
    data = (csv_bytes(rows, PROMPT_COLUMNS) if fmt == "csv"
            else json.dumps({"candidates": rows}).encode())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(client, f"videos.{fmt.upper()}", data, prompts=True)
    assert response.status_code == 302
    assert callbacks == []  # no LLM call needed
    assert list(CandidateTask.objects.order_by("id").values_list("prompt", "level", "status")) == [
        (PROMPTS[0], "Organ-level", Status.VOTING), (PROMPTS[1], "Subcellular-level", Status.VOTING),
        (PROMPTS[2], "Cellular-level", Status.VOTING)]
    assert ReviewItem.objects.filter(workflow="task_voting").count() == 3
    page = client.get(reverse("candidate-list"))
    assert "3 to task voting, 0 waiting for the LLM" in page.content.decode()
    assert POLL not in page.content.decode()

    # rows whose URL is already a candidate are skipped (the third row has no URL: it would be new)
    again = rows[:2]
    data = csv_bytes(again, PROMPT_COLUMNS) if fmt == "csv" else json.dumps(again).encode()
    response = upload(client, f"videos.{fmt}", data, prompts=True)
    assert CandidateTask.objects.count() == 3
    assert "its 2 rows are already candidates" in client.get(response.url).content.decode()


MALFORMED = [
    ("notes.txt", b"title\nA stroke\n", False, "unsupported file type .txt; use .csv or .json"),
    ("no-title.csv", b"name,url\nA stroke,https://example.org/1\n", False, "missing column(s) title"),
    ("bad-level.csv", csv_bytes([dict(with_prompts()[0], level="Tissue")], PROMPT_COLUMNS), True,
     "row 1, level: &#x27;Tissue&#x27; is not one of"),
    ("no-level.json", json.dumps([{"title": "A stroke", "prompt": "Cells."}]).encode(), True,
     "row 1, level: required when importing without the LLM"),
    ("broken.json", b'[{"title": "A stroke"', False, "not valid JSON"),
    ("bad-url.csv", b"title,url\nA stroke,https://example.org/1\nMitochondria,not a url\n", False,
     "row 2, url: &#x27;not a url&#x27; is not a valid http(s) URL"),
    ("huge.csv", b"title\n" + b"x" * (candidate_views.MAX_UPLOAD_BYTES + 1), False,
     "the limit is 5.0\xa0MB. Nothing was imported."),
]


@pytest.mark.parametrize("name, data, prompts, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_uploads_show_the_error_and_import_nothing(client, researcher, name, data, prompts, message,
                                                             django_capture_on_commit_callbacks):
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(client, name, data, prompts=prompts)
    assert response.status_code == 400
    text = response.content.decode()
    assert 'id="upload-errors"' in text and message in text, text[text.find("upload-errors"):][:600]
    if not name.startswith("huge"):
        assert "Nothing was imported." in text
    assert CandidateTask.objects.count() == 0
    assert not ActionLog.objects.filter(verb="candidates_import").exists()
    assert callbacks == []


# ------------------------------------------------------------------------------------------------- permissions


def test_experts_get_403_and_anonymous_users_go_to_login(client, expert):
    [failed] = make_candidates(1, Status.FAILED)
    task = BenchmarkTask.objects.create(index=9001, prompt="Cells divide.", requirement="", level="Cellular-level")
    gets = [reverse("candidate-list"), reverse("candidate-status")]
    posts = [reverse("candidate-import"), reverse("candidate-retry", args=[failed.pk]),
             reverse("candidate-retry-failed"), reverse("task-draft-rubric", args=[task.index])]
    for url in gets + posts:
        response = client.post(url) if url in posts else client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    client.force_login(expert)
    for url in gets:
        assert client.get(url).status_code == 403, url
    for url in posts:
        assert client.post(url).status_code == 403, url
    assert CandidateTask.objects.get(pk=failed.pk).status == Status.FAILED
    assert not ActionLog.objects.filter(verb=selectors.RUBRIC_DRAFT_REQUEST_VERB).exists()


# ------------------------------------------------------------------------------------- counts, polling, table


def test_status_counts_and_polling_stop_when_nothing_is_pending(client, researcher, expert, expert2):
    make_candidates(2, Status.PENDING)
    make_candidates(1, Status.GENERATING)
    make_candidates(3, Status.REJECTED)
    [failed] = make_candidates(1, Status.FAILED, generation_error="prompt writing failed: HTTP 503: busy")
    [voting] = make_candidates(1, Status.VOTING, prompt="Chromosomes separate.", level="Cellular-level")
    item = review.review_item_open(workflow="task_voting", target=voting)
    review.panel_assign(item=item, experts=[expert, expert2], assigned_by=None)
    review.decision_submit(item=item, expert=expert, value="keep")  # one vote: still in voting

    client.force_login(researcher)
    page = client.get(reverse("candidate-list"))
    assert page.status_code == 200
    assert {value: n for value, _, n in page.context["counts"]} == {
        "pending": 2, "generating": 1, "voting": 1, "accepted": 0, "rejected": 3, "failed": 1}
    text = page.content.decode()
    assert POLL in text
    assert "prompt writing failed: HTTP 503: busy" in text  # the failure reason
    assert f'action="{reverse("candidate-retry", args=[failed.pk])}"' in text
    assert "Retry all 1 failed" in text
    # statuses only: neither who voted nor how
    assert expert.username not in text and "keep" not in text.lower().replace("keep or reject", "")

    status_url = reverse("candidate-status")
    polled = client.get(status_url, HTTP_HX_REQUEST="true")
    assert polled.status_code == 200 and POLL in polled.content.decode() and b"<html" not in polled.content

    CandidateTask.objects.filter(status__in=[Status.PENDING, Status.GENERATING]).update(status=Status.FAILED)
    stopped = client.get(status_url, HTTP_HX_REQUEST="true")
    assert stopped.status_code == STOP_POLLING
    assert POLL not in stopped.content.decode()
    assert re.search(r'data-status="failed"><a [^>]*>4</a>', stopped.content.decode())
    assert POLL not in client.get(reverse("candidate-list")).content.decode()


def test_filter_by_status_pagination_and_task_links(client, admin_user):
    make_candidates(candidate_views.PAGE_SIZE + 5, Status.REJECTED)
    task = BenchmarkTask.objects.create(index=4242, prompt="Cells divide.", requirement="", level="Cellular-level")
    [accepted] = make_candidates(1, Status.ACCEPTED, task=task, prompt="Cells divide.", level="Cellular-level")
    client.force_login(admin_user)
    page = client.get(reverse("candidate-list"), {"status": "accepted"})
    assert [c.pk for c in page.context["page"]] == [accepted.pk]
    assert f'href="{reverse("task-detail", args=[4242])}"' in page.content.decode()
    first = client.get(reverse("candidate-list"), {"status": "rejected"})
    assert first.context["page"].paginator.count == candidate_views.PAGE_SIZE + 5
    assert len(first.context["page"]) == candidate_views.PAGE_SIZE and "page=2" in first.content.decode()
    assert len(client.get(reverse("candidate-list"), {"status": "rejected", "page": 2}).context["page"]) == 5
    assert client.get(reverse("candidate-list"), {"status": "nonsense"}).context["page"].paginator.count == (
        candidate_views.PAGE_SIZE + 6)


def test_query_count_does_not_grow_with_the_candidates(client, researcher):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("candidate-list")).status_code == 200
        return len(captured)

    def add(n, offset):
        for i in range(n):
            task = BenchmarkTask.objects.create(index=offset + i, prompt="p", requirement="", level="Organ-level")
            CandidateTask.objects.create(source_title=f"a{offset + i}", status=Status.ACCEPTED, task=task)
        CandidateTask.objects.bulk_create([CandidateTask(source_title=f"f{offset + i}", status=Status.FAILED,
                                                         generation_error="boom") for i in range(n)])

    client.force_login(researcher)
    add(2, 100)
    small = queries()
    add(20, 1000)
    assert queries() == small


# ------------------------------------------------------------------------------------------------------ retry


def test_retry_puts_a_failed_candidate_back_and_queues_it(client, researcher, django_capture_on_commit_callbacks):
    [failed] = make_candidates(1, Status.FAILED, generation_error="level classification failed: bad JSON")
    [voting] = make_candidates(1, Status.VOTING)
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("candidate-retry", args=[failed.pk]), {"status": "failed", "page": "1"})
    assert response.status_code == 302 and response.url == reverse("candidate-list") + "?status=failed&page=1"
    failed.refresh_from_db()
    assert (failed.status, failed.generation_error) == (Status.PENDING, "")
    assert len(callbacks) == 1  # candidates_queue_generation, when the retry commits
    assert ActionLog.objects.get(verb="candidates_retry").actor == researcher

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("candidate-retry", args=[voting.pk]))
    assert callbacks == [] and CandidateTask.objects.get(pk=voting.pk).status == Status.VOTING
    assert "has not failed" in client.get(response.url).content.decode()
    assert client.post(reverse("candidate-retry", args=[10**6])).status_code == 404


def test_retry_all_failed(client, admin_user, django_capture_on_commit_callbacks):
    make_candidates(3, Status.FAILED, generation_error="HTTP 503")
    make_candidates(2, Status.REJECTED)
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("candidate-retry-failed"))
    assert response.status_code == 302
    assert len(callbacks) == 3
    assert {k: v for k, v in selectors.candidate_status_counts().items() if v} == {"pending": 3, "rejected": 2}
    assert ActionLog.objects.get(verb="candidates_retry").after["count"] == 3
    assert "3 failed candidates are queued" in client.get(response.url).content.decode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(reverse("candidate-retry-failed"))
    assert callbacks == []


# -------------------------------------------------------------------------------------- a task with no rubric


@pytest.fixture
def bare_task(db):
    """A task as task voting creates it: no rubric version yet."""
    return BenchmarkTask.objects.create(index=9001, prompt="A mitochondrion turns while ATP synthase spins.",
                                        requirement="", level="Subcellular-level")


def test_a_task_without_rubric_renders_with_the_draft_button_for_researchers_and_admins(
        client, bare_task, expert, researcher, admin_user):
    url = reverse("task-detail", args=[bare_task.index])
    draft_url = reverse("task-draft-rubric", args=[bare_task.index])
    for user, offered in ((researcher, True), (admin_user, True), (expert, False)):
        client.force_login(user)
        page = client.get(url)
        assert page.status_code == 200, user
        text = page.content.decode()
        assert "No rubric yet" in text and bare_task.prompt in text
        assert ("Draft a rubric with the LLM" in text) is offered and (draft_url in text) is offered, user
        assert POLL not in text
    partial = client.get(url, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and b"No rubric yet" in partial.content and b"<html" not in partial.content


def test_the_draft_is_refused_without_an_endpoint(client, bare_task, researcher, no_llm,
                                                  django_capture_on_commit_callbacks):
    client.force_login(researcher)
    page = client.get(reverse("task-detail", args=[bare_task.index])).content.decode()
    assert "No LLM endpoint is configured" in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("task-draft-rubric", args=[bare_task.index]))
    assert response.status_code == 302 and response.url == reverse("task-detail", args=[bare_task.index])
    assert callbacks == []
    assert not ActionLog.objects.filter(verb=selectors.RUBRIC_DRAFT_REQUEST_VERB).exists()
    assert "no draft was asked for" in client.get(response.url).content.decode()


def test_a_draft_end_to_end_against_the_chat_server(client, bare_task, researcher, expert, llm_endpoint,
                                                    django_capture_on_commit_callbacks):
    llm_endpoint.responder = lambda body: rubric_answer()
    client.force_login(researcher)
    task_url = reverse("task-detail", args=[bare_task.index])
    status_url = reverse("task-draft-status", args=[bare_task.index])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("task-draft-rubric", args=[bare_task.index]))
    assert response.status_code == 302 and response.url == task_url
    assert len(callbacks) == 1  # draft_rubric sent to the "llm" queue when the request commits
    assert ActionLog.objects.get(verb=selectors.RUBRIC_DRAFT_REQUEST_VERB).actor == researcher

    page = client.get(task_url).content.decode()
    assert "The LLM is drafting a rubric" in page and POLL in page and "Draft a rubric with the LLM" not in page
    pending = client.get(status_url, HTTP_HX_REQUEST="true")
    assert pending.status_code == 200 and POLL in pending.content.decode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(reverse("task-draft-rubric", args=[bare_task.index]))  # a second click asks nothing more
    assert callbacks == []

    version = candidates.candidate_draft_rubric(task_id=bare_task.pk)  # what the worker runs
    assert version is not None and len(llm_endpoint.chat_requests()) == 1

    done = client.get(status_url, HTTP_HX_REQUEST="true")
    assert done.status_code == STOP_POLLING and done["HX-Refresh"] == "true"
    client.force_login(expert)
    page = client.get(task_url)
    assert page.status_code == 200 and page.context["version"] == version
    text = page.content.decode()
    assert "No rubric yet" not in text and "llm-draft" in text
    for criterion in version.criteria.all():
        assert criterion.description in text
    assert sum(len(items) for items in page.context["criteria"].values()) == 10


def test_a_failed_draft_stops_polling_and_offers_the_button_again(client, bare_task, admin_user, llm_endpoint,
                                                                  django_capture_on_commit_callbacks):
    llm_endpoint.responder = lambda body: "not a rubric"
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("task-draft-rubric", args=[bare_task.index]))
    with pytest.raises(LLMError):
        candidates.candidate_draft_rubric(task_id=bare_task.pk)
    status = client.get(reverse("task-draft-status", args=[bare_task.index]), HTTP_HX_REQUEST="true")
    assert status.status_code == STOP_POLLING and "HX-Refresh" not in status
    text = status.content.decode()
    assert "The last draft failed: invalid answer" in text and "Draft a rubric with the LLM" in text
    assert POLL not in text
    assert not RubricVersion.objects.filter(task=bare_task).exists()
