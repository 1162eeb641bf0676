"""Candidate tasks (pipeline 1) and LLM rubric drafts (pipeline 2) against the real local chat server.

Imports through the real command (CSV and JSON, with and without prompts, malformed files), generation in-process and
through a real Celery worker, failures with their reasons, and rubric drafts.
"""
import csv
import io
import json
import re
import time

import pytest
from django.core.management import CommandError, call_command

from annotation.models import ActionLog, ReviewItem
from microverse_site.llm import LLMError
from microverse_site.models import LLMCall
from rubrics import candidates
from rubrics import llm_prompts as p
from rubrics.candidate_tasks import draft_rubric
from rubrics.models import BenchmarkTask, CandidateTask, Criterion, RubricVersion
from tests.fakes.chat_server import ServerError
from tests.fakes.fixtures import worker_environment
from tests.helpers import import_release_subset

# A Celery worker inherits the environment of the test process when it starts; this runs at collection time, before
# any test (and so before celery_worker_process), so the worker's LLM calls reach the session's chat server.
WORKER_LLM_ENV = worker_environment()

Status = CandidateTask.Status

ROWS = [
    {"title": "How a Stroke Happens: Understanding the Brain's Blood Flow",
     "description": "Animation of a clot blocking a cerebral vessel.",
     "url": "https://www.youtube.com/watch?v=nBkNs1oNIdw"},
    {"title": "Mitochondria: the powerhouse of the cell", "description": "ATP synthase at work.",
     "url": "https://example.org/videos/mito"},
    {"title": "Neutrophil chasing a bacterium", "description": "", "url": ""},
]
PROMPTS = [
    "Within the human brain vasculature under the microscope, translucent red blood cells flow along a vessel and "
    "suddenly meet a clot that halts the flow; the fibrous vessel wall and the packed cells are clearly visible.",
    "Inside a cell under the electron microscope, a bean-shaped mitochondrion with folded cristae turns slowly while "
    "ATP synthase complexes spin in its inner membrane, rendered in soft translucent greens and golds.",
    "On a glass slide under the light microscope, a neutrophil crawls across the field and chases a rod-shaped "
    "bacterium, its granular cytoplasm flowing into pseudopods until it engulfs the bacterium.",
]
LEVELS = ["Organ-level", "Subcellular-level", "Cellular-level"]


def _title_of(body) -> str:
    match = re.search(r"Source video title: (.*)", body["messages"][1]["content"])
    return match.group(1).strip() if match else ""


def rubric_answer(counts=(5, 4, 3)) -> str:
    data = {}
    for dimension, count in zip(("scientific", "visual", "instruction"), counts):
        data[dimension] = [{"description": f"{dimension.title()} point {i}: a specific observable property {i}.",
                            "polarity": -1 if i == count and count > 3 else 1,
                            "weight": (1.0, 0.5, 0.2)[i % 3]} for i in range(1, count + 1)]
    return json.dumps(data)


def paper_responder(body) -> str:
    """Answers like a well-behaved model: a paragraph for Appendix A, level JSON for B, a rubric for G."""
    system = body["messages"][0]["content"]
    if system == p.TASK_PROMPT_SYSTEM:
        title = _title_of(body)
        if title.startswith("JUNK"):
            return "- a bullet\n- another bullet"
        for row, prompt in zip(ROWS, PROMPTS):
            if row["title"] == title:
                return prompt
        return ("Under the microscope, " + title + " unfolds as a continuous scene with clearly visible cells, "
                "soft translucent membranes and fine textured surfaces lit by a gentle glow.")
    if system == p.TASK_LEVEL_SYSTEM:
        text = body["messages"][1]["content"]  # the question (a repair turn appends messages after it)
        if "LEVEL-JUNK" in text:
            return "It is cellular, I think."
        level = "Subcellular-level" if "mitochondri" in text else ("Organ-level" if "vessel" in text
                                                                    else "Cellular-level")
        return json.dumps({"level": level, "confidence": 8, "reason": "The main subject sets the scale."})
    if system == p.RUBRIC_SYSTEM:
        return rubric_answer()
    return "unexpected request"


@pytest.fixture
def llm_server(llm_endpoint):
    llm_endpoint.responder = paper_responder
    return llm_endpoint


def write_csv(path, rows, columns=("title", "description", "url")):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def with_prompts(rows=ROWS):
    return [dict(row, prompt=prompt, level=level) for row, prompt, level in zip(rows, PROMPTS, LEVELS)]


def run_command(*args) -> str:
    out = io.StringIO()
    call_command("import_candidates", *map(str, args), stdout=out)
    return out.getvalue()


def voting_items():
    return ReviewItem.objects.filter(workflow="task_voting")


# --------------------------------------------------------------------------------------------------- import


@pytest.mark.django_db
def test_csv_with_prompts_goes_straight_to_task_voting(tmp_path, chat_server):
    path = write_csv(tmp_path / "candidates.csv", with_prompts(), ("title", "description", "url", "prompt", "level"))
    out = run_command(path, "--with-prompts")
    assert "Imported 3 candidates" in out and "3 to task voting, 0 waiting for the LLM" in out
    got = list(CandidateTask.objects.order_by("id").values_list("source_title", "source_url", "prompt", "level",
                                                                  "status"))
    assert got == [(r["title"], r["url"], pr, lv, Status.VOTING) for r, pr, lv in zip(ROWS, PROMPTS, LEVELS)]
    assert sorted(voting_items().values_list("object_id", flat=True)) == sorted(
        CandidateTask.objects.values_list("id", flat=True))
    log = ActionLog.objects.get(verb="candidates_import")
    assert log.after["created"] == 3 and log.after["to_voting"] == 3 and log.actor is None
    assert chat_server.chat_requests() == []


@pytest.mark.django_db
def test_json_with_prompts_records_the_importer(tmp_path, admin_user, chat_server):
    rows = with_prompts()
    rows[2]["level"] = "cellular"  # labels are accepted without regard to case and suffix
    path = tmp_path / "candidates.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    run_command(path, "--with-prompts", "--user", admin_user.username)
    assert list(CandidateTask.objects.order_by("id").values_list("level", flat=True)) == LEVELS
    assert set(CandidateTask.objects.values_list("created_by", flat=True)) == {admin_user.pk}
    assert ActionLog.objects.get(verb="candidates_import").actor == admin_user
    assert voting_items().count() == 3
    assert chat_server.chat_requests() == []


@pytest.mark.django_db
def test_import_without_prompts_queues_one_task_per_candidate_on_commit(django_capture_on_commit_callbacks,
                                                                         chat_server):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        summary = candidates.candidates_import(rows=ROWS + [with_prompts()[0] | {"url": "https://e.org/4"}],
                                               user=None, with_llm=True)
    assert (summary.created, summary.to_voting, summary.pending) == (4, 1, 3)
    assert len(callbacks) == 1
    assert list(CandidateTask.objects.order_by("id").values_list("status", flat=True)) == [Status.PENDING] * 3 + [
        Status.VOTING]
    assert voting_items().count() == 1
    assert chat_server.chat_requests() == []


@pytest.mark.django_db
def test_command_without_prompts_leaves_candidates_pending_and_queued(tmp_path, chat_server):
    out = run_command(write_csv(tmp_path / "c.csv", ROWS))
    assert "3 waiting for the LLM (queued on 'llm')" in out
    assert set(CandidateTask.objects.values_list("status", flat=True)) == {Status.PENDING}
    assert voting_items().count() == 0


@pytest.mark.django_db
def test_command_now_generates_in_process_with_a_progress_line_each(tmp_path, llm_server):
    out = run_command(write_csv(tmp_path / "c.csv", ROWS), "--now")
    ids = list(CandidateTask.objects.order_by("id").values_list("id", flat=True))
    for number, (candidate_id, level) in enumerate(zip(ids, LEVELS), start=1):
        assert f"[{number}/3] candidate {candidate_id}: to task voting ({level})" in out
    assert "Generated 3: 3 to task voting, 0 failed." in out
    got = list(CandidateTask.objects.order_by("id").values_list("prompt", "level", "status"))
    assert got == [(prompt, level, Status.VOTING) for prompt, level in zip(PROMPTS, LEVELS)]
    assert voting_items().count() == 3
    assert LLMCall.objects.filter(status="ok").count() == 6


@pytest.mark.django_db
def test_importing_the_same_file_twice_adds_nothing(tmp_path, chat_server):
    path = write_csv(tmp_path / "c.csv", with_prompts(), ("title", "description", "url", "prompt", "level"))
    run_command(path, "--with-prompts")
    out = run_command(path, "--with-prompts")
    # Rows are matched by URL; the third row has none, so it is imported again.
    assert "Imported 1 candidates" in out and "Skipped 2 rows whose URL is already a candidate." in out
    assert CandidateTask.objects.count() == 4


def _bad_json(rows):
    return json.dumps(rows)


MALFORMED = [
    ("no-title.csv", "name,description,url\nA stroke,d,https://e.org/1\n", [], r"missing column\(s\) title"),
    ("bad-level.json", _bad_json([with_prompts()[0], dict(with_prompts()[1], level="Tissue-level")]),
     ["--with-prompts"], r"row 2, level: 'Tissue-level' is not one of Organ-level, Cellular-level, Subcellular-level"),
    ("rows.txt", "title\nA stroke\n", [], r"unsupported file type \.txt; use \.csv or \.json"),
    ("rows", "title\nA stroke\n", [], r"unsupported file type \(no extension\)"),
    ("broken.json", '[{"title": "A stroke"', [], r"not valid JSON \("),
    ("object.json", '{"title": "A stroke"}', [], r"must be a list of objects"),
    ("numbers.json", "[1, 2]", [], r"row 1: must be an object"),
    ("bad-url.csv", "title,url\nA stroke,https://e.org/1\nMitochondria,not a url\n", [],
     r"row 2, url: 'not a url' is not a valid http\(s\) URL"),
    ("empty-title.csv", "title,url\nA stroke,https://e.org/1\n  ,https://e.org/2\n", [], r"row 2, title: required"),
    ("no-level-column.csv", "title,prompt\nA stroke,Something\n", ["--with-prompts"], r"missing column\(s\) level"),
    ("missing-prompt.json", _bad_json(with_prompts()[:2] + [dict(ROWS[2], level="Cellular-level")]),
     ["--with-prompts"], r"row 3, prompt: required when importing without the LLM"),
    ("too-many-fields.csv", "title,url\nA stroke,https://e.org/1,extra\n", [], r"row 1: 3 fields, but the header"),
    ("bad-quote.csv", 'title,url\n"A stroke,https://e.org/1\n', [], r"not valid CSV"),
    ("latin1.csv", "title\nCaf\xe9 cells\n".encode("latin-1"), [], r"not UTF-8 text"),
    ("empty.csv", "", [], r"the file is empty"),
    ("title-number.json", '[{"title": 12}]', [], r"row 1, title: must be text, not int"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("name, content, args, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_import_nothing_and_say_why_in_one_line(tmp_path, name, content, args, message, chat_server):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError) as caught:
        run_command(path, *args)
    text = str(caught.value)
    assert "\n" not in text
    assert re.search(message, text), text
    assert text.startswith(str(path)) and text.endswith("(nothing was imported)")
    assert CandidateTask.objects.count() == 0
    assert not ActionLog.objects.filter(verb="candidates_import").exists()
    assert voting_items().count() == 0


@pytest.mark.django_db
def test_unknown_user_and_missing_file(tmp_path):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run_command(write_csv(tmp_path / "c.csv", ROWS), "--user", "nobody")
    with pytest.raises(CommandError, match="cannot read"):
        run_command(tmp_path / "absent.csv")


# ------------------------------------------------------------------------------------------------ generation


def _import(rows=ROWS, **kwargs):
    return candidates.candidates_import(rows=rows, user=None, with_llm=True, enqueue=False, **kwargs)


@pytest.mark.django_db
def test_generation_writes_prompt_and_level_and_opens_task_voting(llm_server):
    [candidate_id, *_] = _import().pending_ids
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.VOTING
    candidate = CandidateTask.objects.get(pk=candidate_id)
    assert (candidate.prompt, candidate.level, candidate.status, candidate.generation_error) == (
        PROMPTS[0], "Organ-level", Status.VOTING, "")
    assert voting_items().filter(object_id=candidate_id).exists()
    prompt_request, level_request = llm_server.chat_requests()
    assert prompt_request.model == level_request.model == "gpt-4o"
    for value in (ROWS[0]["title"], ROWS[0]["description"], ROWS[0]["url"], "one paragraph"):
        assert value in prompt_request.text
    assert PROMPTS[0] in level_request.text and "Organ-level" in level_request.text
    assert list(LLMCall.objects.order_by("id").values_list("purpose", "status")) == [("task_prompt", "ok"),
                                                                                     ("task_level", "ok")]


@pytest.mark.django_db
def test_generation_is_idempotent(llm_server):
    [candidate_id, *_] = _import().pending_ids
    candidates.candidate_generate(candidate_id=candidate_id)
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.VOTING
    assert candidates.candidate_generate(candidate_id=10**9) == "missing"
    assert len(llm_server.chat_requests()) == 2
    assert voting_items().count() == 1


@pytest.mark.django_db
def test_generation_asks_only_for_what_is_missing(llm_server):
    [candidate_id] = _import(rows=[dict(ROWS[1], prompt=PROMPTS[1])]).pending_ids
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.VOTING
    [request] = llm_server.chat_requests()
    assert request.messages[0]["content"] == p.TASK_LEVEL_SYSTEM
    assert CandidateTask.objects.get(pk=candidate_id).level == "Subcellular-level"


@pytest.mark.django_db
def test_a_junk_answer_ends_failed_with_the_reason(llm_server):
    [candidate_id] = _import(rows=[{"title": "JUNK video"}]).pending_ids
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.FAILED
    candidate = CandidateTask.objects.get(pk=candidate_id)
    assert candidate.status == Status.FAILED
    assert candidate.generation_error == ("prompt writing failed: invalid answer: the answer uses bullet points or a "
                                          "numbered list; write one paragraph of prose")
    assert len(llm_server.chat_requests()) == 2  # the question and one repair turn
    call = LLMCall.objects.get()
    assert (call.purpose, call.status) == ("task_prompt", "invalid")
    assert not voting_items().exists()


@pytest.mark.django_db
def test_a_failed_level_keeps_the_prompt_and_a_retry_asks_only_for_the_level(llm_server):
    [candidate_id] = _import(rows=[{"title": "LEVEL-JUNK cells"}]).pending_ids
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.FAILED
    candidate = CandidateTask.objects.get(pk=candidate_id)
    assert candidate.generation_error.startswith("level classification failed: invalid answer: the answer is not "
                                                 "valid JSON")
    assert "LEVEL-JUNK cells" in candidate.prompt
    assert len(llm_server.chat_requests()) == 3

    llm_server.reset()
    llm_server.responder = lambda body: json.dumps({"level": "Cellular-level", "confidence": 6, "reason": "Cells."})
    assert candidates.candidate_retry(candidate_id=candidate_id, enqueue=False)
    assert not candidates.candidate_retry(candidate_id=candidate_id, enqueue=False)  # only FAILED ones
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.VOTING
    [request] = llm_server.chat_requests()
    assert request.messages[0]["content"] == p.TASK_LEVEL_SYSTEM
    assert CandidateTask.objects.get(pk=candidate_id).level == "Cellular-level"


@pytest.mark.django_db
def test_an_endpoint_that_keeps_failing_ends_failed_with_the_reason(llm_endpoint, settings):
    settings.LLM_MAX_ATTEMPTS = 2
    llm_endpoint.when(lambda request: True, ServerError(503))
    [candidate_id] = _import(rows=[ROWS[0]]).pending_ids
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.FAILED
    error = CandidateTask.objects.get(pk=candidate_id).generation_error
    assert error.startswith("prompt writing failed: HTTP 503: ") and error.endswith("(gave up after 2 attempts)")


@pytest.mark.django_db
def test_a_redelivered_task_reclaims_a_candidate_left_generating(llm_server):
    [candidate_id] = _import(rows=[ROWS[2]]).pending_ids
    CandidateTask.objects.filter(pk=candidate_id).update(status=Status.GENERATING)  # its worker died mid-call
    assert candidates.candidate_generate(candidate_id=candidate_id) == Status.GENERATING
    assert llm_server.chat_requests() == []
    assert candidates.candidate_generate(candidate_id=candidate_id, reclaim=True) == Status.VOTING


# ------------------------------------------------------------------------------------------------ rubric drafts


def _task(index=9001):
    return BenchmarkTask.objects.create(index=index, prompt=PROMPTS[1], level="Subcellular-level",
                                        requirement="Show ATP synthase turning in the inner membrane.")


@pytest.mark.django_db
def test_rubric_draft_creates_version_one_with_its_criteria(llm_server):
    task = _task()
    assert draft_rubric(task.pk) == "drafted"  # the Celery task, run in this process
    version = RubricVersion.objects.get(task=task)
    assert (version.number, version.label, version.parent) == (1, "llm-draft", None)
    task.refresh_from_db()
    assert task.current_rubric == version
    counts = {d: version.criteria.filter(dimension=d).count() for d in ("scientific", "visual", "instruction")}
    assert counts == {"scientific": 5, "visual": 4, "instruction": 3}
    expected = json.loads(rubric_answer())
    for dimension, items in expected.items():
        rows = list(Criterion.objects.filter(version=version, dimension=dimension).order_by("position")
                    .values_list("position", "key_number", "description", "polarity", "weight"))
        assert rows == [(i, i, c["description"], c["polarity"], c["weight"]) for i, c in enumerate(items, start=1)]
    [request] = llm_server.chat_requests()
    assert PROMPTS[1] in request.text and "Show ATP synthase" in request.text and "Subcellular-level" in request.text
    assert ActionLog.objects.filter(verb="rubric_llm_draft").count() == 1

    assert draft_rubric(task.pk) == "skipped"
    assert candidates.candidate_draft_rubric(task_id=task.pk) is None
    assert len(llm_server.chat_requests()) == 1
    assert RubricVersion.objects.filter(task=task).count() == 1


@pytest.mark.django_db
def test_rubric_draft_skips_a_task_that_has_a_rubric(tmp_path, llm_server):
    import_release_subset(tmp_path, indices=(1,))
    task = BenchmarkTask.objects.get(index=1)
    assert candidates.candidate_draft_rubric(task_id=task.pk) is None
    assert llm_server.chat_requests() == []


@pytest.mark.django_db
def test_an_invalid_rubric_creates_no_version(llm_endpoint):
    llm_endpoint.responder = lambda body: rubric_answer(counts=(5, 2, 5))
    task = _task()
    with pytest.raises(LLMError, match='invalid answer: "visual" has 2 criteria; it needs 3 to 8'):
        candidates.candidate_draft_rubric(task_id=task.pk)
    assert draft_rubric(task.pk) == "failed"
    assert not RubricVersion.objects.filter(task=task).exists()
    assert list(LLMCall.objects.values_list("status", flat=True)) == ["invalid", "invalid"]


# ------------------------------------------------------------------------------------------------ real worker


def wait_until(condition, timeout=60.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_generation_and_drafting_through_a_real_worker(celery_worker_process, llm_server):
    log = celery_worker_process.log()
    assert "rubrics.generate_candidate" in log, "the worker must register the LLM tasks (rubrics/tasks.py)"
    assert llm_server.url == WORKER_LLM_ENV["OPENAI_BASE_URL"]

    summary = candidates.candidates_import(rows=ROWS + [{"title": "JUNK clip", "url": "https://e.org/junk"}],
                                           user=None, with_llm=True)
    assert summary.pending == 4  # queued when the import committed

    def settled():
        return not CandidateTask.objects.filter(status__in=[Status.PENDING, Status.GENERATING]).exists()

    assert wait_until(settled), (list(CandidateTask.objects.values_list("id", "status")), _tail(celery_worker_process))
    got = list(CandidateTask.objects.order_by("id").values_list("prompt", "level", "status"))
    assert got[:3] == [(prompt, level, Status.VOTING) for prompt, level in zip(PROMPTS, LEVELS)]
    junk = CandidateTask.objects.get(source_title="JUNK clip")
    assert junk.status == Status.FAILED and "invalid answer: the answer uses bullet points" in junk.generation_error
    assert sorted(voting_items().values_list("object_id", flat=True)) == summary.pending_ids[:3]
    assert all(r.authorization.endswith(WORKER_LLM_ENV["OPENAI_API_KEY"]) for r in llm_server.chat_requests())
    assert LLMCall.objects.filter(purpose="task_prompt").count() == 4

    task = _task(index=9002)
    candidates.rubric_draft_queue(task_id=task.pk)
    assert wait_until(lambda: RubricVersion.objects.filter(task=task, label="llm-draft").exists()), _tail(
        celery_worker_process)
    assert Criterion.objects.filter(version__task=task).count() == 12
    assert BenchmarkTask.objects.get(pk=task.pk).current_rubric.label == "llm-draft"


def _tail(worker, lines=60):
    return "\n".join(worker.log().splitlines()[-lines:])


@pytest.mark.django_db(transaction=True)
def test_an_accepted_candidate_gets_its_rubric_drafted_when_an_endpoint_is_configured(llm_endpoint, chat_server,
                                                                                    expert, expert2, settings):
    """Voting acceptance queues the Appendix G draft; run the queued task in-process (no worker in this test)."""
    from annotation import services as review
    from rubrics.candidate_tasks import draft_rubric

    queued = []
    original = draft_rubric.apply_async
    draft_rubric.apply_async = lambda args=None, **kw: queued.append(args)
    try:
        candidates.candidates_import(
            rows=[{"title": "Mitosis", "url": "https://e.org/m", "prompt": "Chromosomes separate under the microscope.",
                   "level": "Cellular-level"}], user=None, with_llm=False)
        item = review.review_item_open(workflow="task_voting", target=CandidateTask.objects.get())
        review.panel_assign(item=item, experts=[expert, expert2], assigned_by=None)
        review.decision_submit(item=item, expert=expert, value="keep")
        review.decision_submit(item=item, expert=expert2, value="keep")
    finally:
        draft_rubric.apply_async = original
    task = CandidateTask.objects.get().task
    assert queued == [[task.pk]]
