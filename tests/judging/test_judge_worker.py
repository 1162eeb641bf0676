"""Judge runs end to end THROUGH A REAL CELERY WORKER against the session's local chat-completions server, which
injects faults (a timeout, 429 with Retry-After, 500, non-JSON, wrong-length and non-0/1 scores): every judgement
ends scored or flagged with its reason, a rerun adds no row and asks nothing again, tokens are recorded, and a
cancelled run's queued tasks do nothing. Runs on whichever database and broker the suite runs on."""
import shutil
import time

import pytest
from django.core.files.storage import default_storage

from judging import runs, videos
from judging.models import GeneratedVideo, JudgeRun, Judgement
from judging.tasks import judge_one as judge_one_task
from microverse_site.models import LLMCall
from tests.fakes.chat_server import Delay, NotJSON, RateLimited, ServerError
from tests.fakes.fixtures import worker_environment
from tests.helpers import import_release_subset
from tests.judging.test_judge_runs import about, answer_for

# The worker inherits this environment when it starts (collection time, before any test): its LLM calls reach the
# session's chat server, with a 10 s timeout per attempt.
WORKER_LLM_ENV = worker_environment()

pytestmark = [pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed"),
              pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TIMEOUT = float(WORKER_LLM_ENV["LLM_TIMEOUT_SECONDS"])


def wait_until(condition, timeout=120.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def tail(worker, lines=80):
    return "\n".join(worker.log().splitlines()[-lines:])


@pytest.fixture
def judged_model(tmp_path):
    """Videos for tasks 1, 2 and 3 in the DEFAULT storage (the worker reads them there); removed afterwards."""
    from datasets.video_io import make_test_video

    import_release_subset(tmp_path / "release", (1, 2, 3, 277))
    folder = tmp_path / "Worker-Model"
    for index in (1, 2, 3):
        make_test_video(folder / f"{index}.mp4", frames=24, size=(96, 64))
    model = videos.model_register(name=f"worker-model-{time.time_ns()}")
    videos.videos_register_folder(model=model, folder=folder)
    yield model
    for video in GeneratedVideo.objects.filter(model=model):
        for name in [video.file.name, *(video.frames or [])]:
            if name and default_storage.exists(name):
                default_storage.delete(name)


def test_a_run_through_the_worker_with_faults(celery_worker_process, chat_server, judged_model):
    assert chat_server.url == WORKER_LLM_ENV["OPENAI_BASE_URL"]
    assert "judging.tasks.judge_one" in celery_worker_process.log()
    server = chat_server
    server.responder = answer_for
    server.when(about(1, "Scientific Accuracy"), RateLimited(0.3), times=1)
    server.when(about(1, "Visual Quality"), ServerError(500), times=1)
    server.when(about(1, "Instruction Following"), Delay(TIMEOUT + 1.0), times=1)  # times out once
    server.when(about(2, "Scientific Accuracy"), NotJSON(), times=None)
    server.when(about(2, "Visual Quality"), '{"scores": [1, 0, 1], "reasoning": "three"}', times=None)
    server.when(about(2, "Instruction Following"), '{"scores": [1, 0, 1], "reasoning": "three"}', times=1)
    server.when(about(3, "Scientific Accuracy"), '{"scores": [1, 0, 1, 0, 2], "reasoning": "two"}', times=None)
    server.when(about(3, "Visual Quality"), '{"scores": [true, 1, 1, 1, 1], "reasoning": "bool"}', times=1)
    server.when(about(3, "Instruction Following"), ServerError(500), times=None)

    run = runs.judge_run_create(model=judged_model, judge_model="judge-w", base_url=chat_server.url, concurrency=2)
    assert runs.judge_run_start(run=run) == 9 and run.status == "running"
    assert wait_until(lambda: JudgeRun.objects.get(pk=run.pk).status == "done", timeout=180), (
        runs.judge_run_progress(run), tail(celery_worker_process))

    rows = {(j.task.index, j.dimension): j for j in
            Judgement.objects.filter(run=run).select_related("task", "llm_call")}
    assert len(rows) == 12 and {j.status for j in rows.values()} == {"scored", "flagged"}
    scored = [(1, "scientific"), (1, "visual"), (1, "instruction"), (2, "instruction"), (3, "visual")]
    for key in scored:
        assert rows[key].status == "scored" and rows[key].scores == [1] * 5, (key, rows[key].flag_reason)
        assert rows[key].llm_call.status == "ok" and rows[key].llm_call.prompt_tokens > 0
        assert rows[key].llm_call.completion_tokens > 0
    assert rows[(1, "scientific")].llm_call.attempts == 2 and rows[(1, "instruction")].llm_call.attempts == 2
    reasons = {key: rows[key].flag_reason for key in rows if rows[key].status == "flagged"}
    assert "not chat-completion JSON" in reasons[(2, "scientific")] and "gave up after 4 attempts" in reasons[
        (2, "scientific")]
    assert reasons[(2, "visual")].startswith('invalid answer: "scores" has 3 entries but there are 5 criteria')
    assert reasons[(3, "scientific")].startswith('invalid answer: "scores" entry 5 is 2')
    assert reasons[(3, "instruction")].startswith("HTTP 500") and "gave up after 4 attempts" in reasons[
        (3, "instruction")]
    assert all(reasons[(277, d)].startswith("no video") for d in ("scientific", "visual", "instruction"))
    assert all(rows[key].scores is None for key in reasons)
    assert LLMCall.objects.filter(purpose="judge").count() == 9
    assert LLMCall.objects.filter(purpose="judge", status="ok").count() == 5

    # a rerun: nothing missing, nothing asked, no new row
    asked = len(server.chat_requests())
    again = runs.judge_run_create(model=judged_model, judge_model="judge-w", base_url=chat_server.url, concurrency=2)
    assert again.pk == run.pk and runs.judge_run_start(run=again) == 0
    assert JudgeRun.objects.get(pk=run.pk).status == "done"
    # a worker that died after the answer was recorded: the judgement is pending again; the answer is reused
    Judgement.objects.filter(pk=rows[(1, "visual")].pk).update(status="pending", scores=None)
    assert runs.judge_run_start(run=run) == 1
    assert wait_until(lambda: Judgement.objects.get(pk=rows[(1, "visual")].pk).status == "scored"), tail(
        celery_worker_process)
    assert wait_until(lambda: JudgeRun.objects.get(pk=run.pk).status == "done")
    assert len(server.chat_requests()) == asked
    assert Judgement.objects.filter(run=run).count() == 12 and LLMCall.objects.filter(purpose="judge").count() == 9


def test_cancelled_run_tasks_do_nothing_in_the_worker(celery_worker_process, chat_server, judged_model):
    chat_server.responder = answer_for
    run = runs.judge_run_create(model=judged_model, judge_model="judge-w", base_url=chat_server.url)
    assert runs.judge_run_cancel(run=run)
    pk = Judgement.objects.filter(run=run, status="pending").order_by("pk").first().pk
    result = judge_one_task.apply_async(args=[pk], queue="llm")
    celery_worker_process.wait_for_log(f"judging.tasks.judge_one[{result.id}] succeeded", timeout=60)
    assert "'cancelled'" in celery_worker_process.log().split(result.id)[-1].splitlines()[0]
    assert Judgement.objects.get(pk=pk).status == "pending" and not chat_server.chat_requests()
    # resumed: the worker judges what is pending
    assert runs.judge_run_start(run=run) == 9
    assert wait_until(lambda: JudgeRun.objects.get(pk=run.pk).status == "done", timeout=120), tail(
        celery_worker_process)
    assert runs.judge_run_progress(run)["scored"] == 9
