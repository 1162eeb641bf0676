"""A Celery worker killed with SIGKILL in the middle of a judge run, and a new one started: every judgement ends
judged exactly once (one Judgement row and one recorded judge call each, none lost, none paid twice), after the run is
resumed the way an operator (or the run page's resume) does it: ``judge_run_start`` takes back the dead worker's claim
once its lease has passed and queues what is pending; messages the dead worker left queued find their judgement done
and change nothing.

tests/judging/test_judge_worker.py runs judge runs through a worker but never kills it; this is that case. The workers
here have a broker of their own (tests/datasets/test_pipeline_worker.py's isolated broker), so that the session's
shared worker does not take these messages.
"""
from __future__ import annotations

import shutil
import signal
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu import Connection

from judging import runs
from judging.models import JudgeRun, Judgement
from judging.tasks import judge_one as judge_one_task
from microverse_site.models import LLMCall
from tests.conftest import _database_url, stop_celery_worker
from tests.datasets.test_pipeline_worker import _isolated_broker, _start_worker, _wait
from tests.fakes.chat_server import Delay
from tests.fakes.fixtures import worker_environment
from tests.judging.test_judge_runs import answer_for
from tests.judging.test_judge_worker import judged_model  # noqa: F401  (fixture)

pytestmark = [pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed"),
              pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LEASE = 3.0  # seconds a claim counts as alive (JUDGE_LEASE_SECONDS), short so that the test need not wait long
CALL_SECONDS = 1.0  # each judge call takes this long at the chat server: time to kill the worker mid-run


def test_a_worker_killed_mid_judge_run_is_replaced_and_every_judgement_is_done_once(
        settings, tmp_path, chat_server, judged_model, monkeypatch):  # noqa: F811
    from django.db import connection

    settings.JUDGE_LEASE_SECONDS = LEASE
    chat_server.responder = answer_for
    chat_server.when(lambda request: True, lambda request: Delay(CALL_SECONDS, answer_for(request.json)))
    broker_url, transport_options, broker_dir = _isolated_broker(tmp_path)
    env = {**worker_environment(), "JUDGE_LEASE_SECONDS": str(LEASE)}
    database_url = _database_url(connection.settings_dict)

    original = judge_one_task.apply_async

    def send(*args, **kwargs):  # the run's tasks go to this test's broker
        with Connection(broker_url, transport_options=transport_options) as broker:
            return original(*args, connection=broker, **kwargs)

    monkeypatch.setattr(judge_one_task, "apply_async", send)
    run = runs.judge_run_create(model=judged_model, judge_model="judge-kill", base_url=chat_server.url,
                                concurrency=1)
    first = _start_worker(database_url, broker_url, broker_dir, tmp_path / "first.log", env)
    second = None
    try:
        assert runs.judge_run_start(run=run) == 9
        # mid-run: some judged, one call in flight
        _wait(lambda: Judgement.objects.filter(run=run, status="scored").count() >= 2
              and Judgement.objects.filter(run=run, status=runs.RUNNING).exists(), 90,
              "two judgements scored and a third in flight", first)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        in_flight = list(Judgement.objects.filter(run=run, status=runs.RUNNING).values_list("pk", flat=True))
        scored_before = Judgement.objects.filter(run=run, status="scored").count()
        assert len(in_flight) == 1 and 2 <= scored_before < 9

        second = _start_worker(database_url, broker_url, broker_dir, tmp_path / "second.log", env)
        # the dead worker's claim holds its slot until the lease passes; then the run is resumed
        claimed_at = Judgement.objects.get(pk=in_flight[0]).updated_at
        _wait(lambda: timezone.now() - claimed_at > timedelta(seconds=LEASE + 0.5), LEASE + 10, "the lease passing")
        assert runs.judge_run_start(run=run) >= 1  # at least the taken-back claim
        assert Judgement.objects.get(pk=in_flight[0]).status != runs.RUNNING or Judgement.objects.get(
            pk=in_flight[0]).updated_at > claimed_at
        _wait(lambda: JudgeRun.objects.get(pk=run.pk).status == "done", 120, "the run finishing", second)
    finally:
        for worker in (first, second):
            if worker is not None:
                stop_celery_worker(worker.process)

    rows = list(Judgement.objects.filter(run=run))
    assert len(rows) == 12  # 3 tasks x 3 dimensions judged + task 277's 3 "no video" rows; no duplicate
    judged = [j for j in rows if not (j.flag_reason or "").startswith("no video")]
    assert len(judged) == 9 and all(j.status == "scored" and j.scores == [1] * 5 for j in judged), (
        [(j.pk, j.status, j.flag_reason) for j in judged])
    # one recorded judge call per judgement: the killed call was made again (it had no answer recorded), nothing
    # answered was asked again
    calls = LLMCall.objects.filter(purpose="judge")
    assert calls.count() == 9 and calls.filter(status="ok").count() == 9
    assert len({j.llm_call_id for j in judged}) == 9
    asked = len(chat_server.chat_requests())
    assert 9 <= asked <= 10, asked  # at most the one killed call twice
