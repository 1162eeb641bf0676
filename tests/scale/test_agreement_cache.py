"""The precomputed agreement report (annotation.agreement_cache): the admin page answers from it for a large
workflow, a new decision schedules exactly one (debounced) recompute once its transaction commits, and a stale report
is shown as stale, with when it was computed and that a recompute is pending."""
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotation import agreement, agreement_cache, agreement_data, services
from annotation.models import Assignment, Decision, Workflow
from rubrics.models import CandidateTask
from tests.annotation.test_agreement_pages import FOUR, TEN, make_panel

pytestmark = pytest.mark.django_db

PAGE_URL = "/manage/agreement/"
WORKFLOW = Workflow.TASK_VOTING


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    # Any workflow with more than 0 decisions counts as large here: the page reads the precomputed report.
    monkeypatch.setattr(agreement_cache, "INLINE_MAX_DECISIONS", 0)
    cache.clear()
    agreement_cache.clear()
    yield
    cache.clear()
    agreement_cache.clear()


@pytest.fixture
def panel(expert, expert2, expert3):
    users = {"expert1": expert, "expert2": expert2, "expert3": expert3}
    return make_panel(WORKFLOW, {users[name]: row for name, row in TEN.items()})


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def enqueued():
    """The recompute tasks sent to the broker (not sent: recorded)."""
    with mock.patch.object(agreement_cache.agreement_recompute, "apply_async") as apply_async:
        yield apply_async


def test_the_page_answers_from_the_precomputed_report(admin_client, panel, enqueued):
    entry = agreement_cache.recompute(WORKFLOW)
    assert entry["report"] == agreement_data.workflow_agreement(WORKFLOW, use_cache=False)  # same as API/command

    with mock.patch("annotation.agreement.agreement_report", wraps=agreement.agreement_report) as computed, \
            CaptureQueriesContext(connection) as captured:
        response = admin_client.get(PAGE_URL)
    assert response.status_code == 200
    assert computed.call_count == 0  # nothing computed
    assert not any('"annotation_decision"."value"' in q["sql"] for q in captured.captured_queries)
    assert response.context["report"] == entry["report"]
    status = response.context["precomputed"]
    assert status["source"] == "precomputed" and status["computed_at"] == entry["computed_at"]
    assert status["stale"] is False and status["pending"] is False
    enqueued.assert_not_called()


def test_with_nothing_stored_the_page_computes_once_and_stores(admin_client, panel, enqueued):
    first = admin_client.get(PAGE_URL).context
    assert first["precomputed"]["source"] == "computed now" and not first["precomputed"]["stale"]
    assert agreement_cache.stored(WORKFLOW)["report"] == first["report"]
    again = admin_client.get(PAGE_URL).context
    assert again["precomputed"]["source"] == "precomputed" and again["report"] == first["report"]


def test_a_new_decision_schedules_one_recompute_after_commit(django_capture_on_commit_callbacks, expert, expert2,
                                                             expert3, admin_user, enqueued):
    items = [services.review_item_open(workflow=WORKFLOW, target=CandidateTask.objects.create(source_title=f"c{n}"))
             for n in range(3)]
    for item in items:
        services.panel_assign(item=item, experts=[expert, expert2, expert3], assigned_by=admin_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.decision_submit(item=items[0], expert=expert, value="keep")
    enqueued.assert_not_called()  # nothing before the commit
    for callback in callbacks:
        callback()
    enqueued.assert_called_once()
    args, kwargs = enqueued.call_args
    assert args == ((WORKFLOW,),) and kwargs["countdown"] == agreement_cache.DEBOUNCE_SECONDS

    # more decisions while one is pending: debounced, nothing more enqueued
    with django_capture_on_commit_callbacks(execute=True):
        services.decision_submit(item=items[0], expert=expert2, value="reject")
        services.decision_submit(item=items[1], expert=expert, value="keep")
    assert enqueued.call_count == 1

    # the task runs: it clears the pending mark first, so the next change schedules the next recompute
    agreement_cache.agreement_recompute.run(WORKFLOW)
    entry = agreement_cache.stored(WORKFLOW)
    assert entry["report"]["n_ratings"] == 3
    assert entry["fingerprint"] == agreement_data.decisions_fingerprint(WORKFLOW)
    with django_capture_on_commit_callbacks(execute=True):
        services.decision_submit(item=items[2], expert=expert3, value="keep")
    assert enqueued.call_count == 2
    assert enqueued.call_args.kwargs["countdown"] == agreement_cache.DEBOUNCE_SECONDS  # a quick recompute


def test_a_slow_recompute_spaces_out_the_next_one(enqueued, expert):
    """Steady voting on a large workflow keeps the worker busy with its report at most 1 / (1 + COST_FACTOR) of the
    time: the next recompute waits COST_FACTOR times the last one's duration when that exceeds the debounce."""
    slow = {"report": {}, "fingerprint": "x", "computed_at": "2026-11-22T00:00:00+00:00", "seconds": 40.0}
    agreement_cache.store().set(agreement_cache.report_key(WORKFLOW), slow, None)
    assert agreement_cache.recompute_delay(WORKFLOW) == agreement_cache.COST_FACTOR * 40.0 == 160.0
    assert agreement_cache.schedule_recompute(WORKFLOW)
    assert enqueued.call_args.kwargs["countdown"] == 160.0
    agreement_cache.store().set(agreement_cache.report_key(WORKFLOW), {**slow, "seconds": 0.2}, None)
    assert agreement_cache.recompute_delay(WORKFLOW) == agreement_cache.DEBOUNCE_SECONDS


def test_other_workflows_are_scheduled_on_their_own(django_capture_on_commit_callbacks, expert, expert2, expert3,
                                                    enqueued):
    with django_capture_on_commit_callbacks(execute=True):
        make_panel(Workflow.CLIP_VERIFICATION, {expert: FOUR["expert1"], expert2: FOUR["expert2"]})
        make_panel(WORKFLOW, {expert3: ["keep"]})
    assert sorted(call.args[0][0] for call in enqueued.call_args_list) == [Workflow.CLIP_VERIFICATION, WORKFLOW]


def test_a_stale_report_is_shown_as_stale_with_a_recompute_pending(admin_client, panel, expert, enqueued):
    old = agreement_cache.recompute(WORKFLOW)
    decision = Decision.objects.get(item=panel[3], expert__username="expert3")
    decision.value = "keep"
    decision.save()  # under the test's transaction no on_commit runs: the page notices the change itself

    response = admin_client.get(PAGE_URL)
    status = response.context["precomputed"]
    assert response.context["report"] == old["report"]  # the old numbers, at once
    assert status["stale"] is True and status["pending"] is True and status["computed_at"] == old["computed_at"]
    enqueued.assert_called_once()  # the page scheduled the recompute
    admin_client.get(PAGE_URL)
    enqueued.assert_called_once()  # ... once

    agreement_cache.agreement_recompute.run(WORKFLOW)
    fresh = admin_client.get(PAGE_URL).context
    assert fresh["precomputed"]["stale"] is False and fresh["precomputed"]["pending"] is False
    assert fresh["report"]["fleiss"]["kappa"] > old["report"]["fleiss"]["kappa"]


def test_a_broker_that_is_down_fails_nothing(django_capture_on_commit_callbacks, expert, expert2, expert3,
                                             admin_user):
    item = services.review_item_open(workflow=WORKFLOW, target=CandidateTask.objects.create(source_title="x"))
    Assignment.objects.create(item=item, expert=expert)
    with mock.patch.object(agreement_cache.agreement_recompute, "apply_async",
                           side_effect=ConnectionError("broker down")) as apply_async:
        with django_capture_on_commit_callbacks(execute=True):
            services.decision_submit(item=item, expert=expert, value="keep")
        assert apply_async.call_count == 1
        assert Decision.objects.filter(item=item).count() == 1
        assert agreement_cache.store().get(agreement_cache.pending_key(WORKFLOW)) is None  # the next change retries
    with mock.patch.object(agreement_cache.agreement_recompute, "apply_async") as apply_async:
        assert agreement_cache.schedule_recompute(WORKFLOW) is True


def test_small_workflows_are_computed_inline(admin_client, panel, enqueued, monkeypatch):
    monkeypatch.setattr(agreement_cache, "INLINE_MAX_DECISIONS", 1000)
    response = admin_client.get(PAGE_URL)
    assert response.context["precomputed"]["source"] == "inline"
    assert response.context["report"] == agreement_data.workflow_agreement(WORKFLOW)
    assert agreement_cache.stored(WORKFLOW) is None
