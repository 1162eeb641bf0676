"""Task voting: experts keep or reject candidate tasks; 2 of 3 keeps make a BenchmarkTask, 2 rejects reject it.

Pages (queue with htmx partials, admins' panels page) and the API, with blind review and permissions."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from annotation import selectors, services
from annotation.models import ActionLog, Assignment, Decision, ReviewItem, WorkflowConfig
from rubrics.models import BenchmarkTask, CandidateTask, Level

pytestmark = pytest.mark.django_db

WF = "task_voting"
QUEUE_URL = "/review/task_voting/"
PANELS_URL = "/review/task_voting/panels/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def make_candidate(n: int, level=Level.CELLULAR):
    candidate = CandidateTask.objects.create(
        status=CandidateTask.Status.VOTING, level=level,
        prompt=f"Candidate prompt {n}: mitochondria divide inside a HeLa cell under fluorescence.",
        source_title=f"Mitochondrial fission, video {n}", source_url=f"https://example.org/videos/{n}",
    )
    return candidate, services.review_item_open(workflow=WF, target=candidate)


@pytest.fixture
def panel(expert, expert2, expert3, admin_user):
    """Three candidates, each on the panel expert1, expert2, expert3 (in that queue order)."""
    items = []
    for n in range(1, 4):
        candidate, item = make_candidate(n)
        services.panel_assign(item=item, experts=[expert, expert2, expert3], assigned_by=admin_user)
        items.append((candidate, item))
    return items


def vote(client, user, item, value, comment="", htmx=True):
    client.force_login(user)
    return client.post(f"/review/task_voting/items/{item.pk}/decision/", {"value": value, "comment": comment},
                       **(HTMX if htmx else {}))


def api_for(user):
    api = APIClient()
    api.force_authenticate(user)
    return api


# ------------------------------------------------------------------------------------------------- outcomes


def test_two_keeps_of_three_create_exactly_one_task_with_the_next_index(client, panel, expert, expert2, expert3):
    BenchmarkTask.objects.create(index=459, prompt="existing", requirement="r", level=Level.ORGAN)
    candidate, item = panel[0]
    assert vote(client, expert, item, "keep").status_code == 200
    assert BenchmarkTask.objects.count() == 1
    response = vote(client, expert2, item, "keep", comment="clear microscale subject")
    assert response.status_code == 200
    candidate.refresh_from_db()
    item.refresh_from_db()
    assert item.status == ReviewItem.Status.ACCEPTED
    assert candidate.status == CandidateTask.Status.ACCEPTED
    task = BenchmarkTask.objects.get(index=460)
    assert candidate.task == task
    assert (task.prompt, task.level, task.source_title, task.source_url) == (
        candidate.prompt, candidate.level, candidate.source_title, candidate.source_url)
    assert "now benchmark task" in response.content.decode() and "#460" in response.content.decode()
    # the third expert's late vote is recorded (agreement) but creates nothing and changes no outcome
    assert vote(client, expert3, item, "reject").status_code == 200
    item.refresh_from_db()
    assert item.status == ReviewItem.Status.ACCEPTED
    assert BenchmarkTask.objects.count() == 2
    assert Decision.objects.filter(item=item).count() == 3
    assert ActionLog.objects.filter(verb="task_created", item=item).count() == 1
    assert ActionLog.objects.filter(verb="item_accepted", item=item).count() == 1
    log = ActionLog.objects.get(verb="task_created")
    assert log.after["task_index"] == 460 and log.after["candidate"] == candidate.pk
    # a second accepted candidate takes the next index
    candidate2, item2 = panel[1]
    vote(client, expert, item2, "keep")
    vote(client, expert3, item2, "keep")
    candidate2.refresh_from_db()
    assert candidate2.task.index == 461


def test_two_rejects_reject_the_candidate_and_admins_still_see_it_with_its_votes(
        client, panel, expert, expert2, admin_user):
    candidate, item = panel[0]
    vote(client, expert, item, "reject", comment="not microscale")
    vote(client, expert2, item, "reject", comment="an organ diagram")
    candidate.refresh_from_db()
    item.refresh_from_db()
    assert item.status == ReviewItem.Status.REJECTED
    assert candidate.status == CandidateTask.Status.REJECTED and candidate.task is None
    assert BenchmarkTask.objects.count() == 0
    assert ActionLog.objects.filter(verb="item_rejected", item=item).count() == 1
    client.force_login(admin_user)
    page = client.get(PANELS_URL)
    assert page.status_code == 200
    rejected = page.context["rejected_rows"]
    assert [r.candidate for r in rejected] == [candidate]
    assert [(d.expert.username, d.value) for d in rejected[0].decisions] == [("expert1", "reject"),
                                                                             ("expert2", "reject")]
    html = page.content.decode()
    assert "not microscale" in html and "an organ diagram" in html


def test_split_decisions_and_open_panels_show_who_is_still_to_vote(client, panel, expert, expert2, admin_user):
    (_, split_item), (_, waiting_item), _ = panel
    vote(client, expert, split_item, "keep")
    vote(client, expert2, split_item, "reject")
    vote(client, expert, waiting_item, "keep")
    client.force_login(admin_user)
    page = client.get(PANELS_URL)
    assert [r.item for r in page.context["split_rows"]] == [split_item]
    assert page.context["split_count"] == 1
    rows = {r.item.pk: r for r in page.context["open_rows"]}
    assert len(rows) == 3
    assert [e.username for e in rows[split_item.pk].waiting_for] == ["expert3"]
    assert [e.username for e in rows[waiting_item.pk].waiting_for] == ["expert2", "expert3"]
    assert (rows[waiting_item.pk].keeps, rows[waiting_item.pk].rejects) == (1, 0)


# --------------------------------------------------------------------------------------------- blind review


def test_blind_review_on_the_page_the_partial_and_the_api(client, panel, expert, expert2):
    _, item = panel[0]
    vote(client, expert, item, "keep", comment="SECRET-COMMENT-OF-EXPERT1")

    client.force_login(expert2)
    for response in (client.get(QUEUE_URL), client.get(f"{QUEUE_URL}?item={item.pk}"),
                     client.get(f"{QUEUE_URL}?item={item.pk}", **HTMX)):
        html = response.content.decode()
        assert response.status_code == 200
        assert response.context["item"] == item
        assert "SECRET-COMMENT-OF-EXPERT1" not in html
        assert "expert1" not in html
        assert "vote-other" not in html
        assert "votes stay hidden" in html
    api = api_for(expert2)
    detail = api.get(f"/api/review/items/{item.pk}/").json()
    assert detail["decisions"] == [] and detail["others_visible"] is False and detail["your_decision"] is None
    assert detail["state"] == "open" and detail["can_vote"] is True
    assert "SECRET" not in api.get("/api/review/task_voting/queue/").content.decode()

    # expert2 votes: the answer shows both votes, and so do the page and the API afterwards
    response = vote(client, expert2, item, "reject")
    assert "SECRET-COMMENT-OF-EXPERT1" in response.content.decode()
    page = client.get(f"{QUEUE_URL}?item={item.pk}").content.decode()
    assert "SECRET-COMMENT-OF-EXPERT1" in page and "vote-other" in page
    detail = api.get(f"/api/review/items/{item.pk}/").json()
    assert detail["others_visible"] is True
    assert sorted((d["expert"], d["value"]) for d in detail["decisions"]) == [("expert1", "keep"),
                                                                             ("expert2", "reject")]


def test_an_item_decided_before_the_third_vote_says_decided_but_not_which_way(client, panel, expert, expert2,
                                                                              expert3):
    _, item = panel[0]
    vote(client, expert, item, "keep")
    vote(client, expert2, item, "keep")
    client.force_login(expert3)
    response = client.get(QUEUE_URL)
    html = response.content.decode()
    assert response.context["item"] == item and response.context["state"] == "decided"
    assert "already decided" in html
    assert "expert1" not in html and "vote-other" not in html
    partial = client.get(QUEUE_URL, **HTMX).content.decode()
    assert "already decided" in partial and "accepted" not in partial and "keep" not in partial.replace(
        'value="keep"', "").replace("Keep", "").replace('class="keep"', "")
    detail = api_for(expert3).get(f"/api/review/items/{item.pk}/").json()
    assert detail["state"] == "decided" and detail["decisions"] == []
    queue = api_for(expert3).get("/api/review/task_voting/queue/").json()
    assert queue["results"][0]["state"] == "decided"
    # the late vote is taken; now the outcome and the votes are visible to expert3
    api_answer = api_for(expert3).post(f"/api/review/items/{item.pk}/decision/", {"value": "reject"}, format="json")
    assert api_answer.status_code == 201
    assert api_answer.json()["outcome"] == "accepted" and len(api_answer.json()["decisions"]) == 3
    # but it cannot change any more
    change = api_for(expert3).post(f"/api/review/items/{item.pk}/decision/", {"value": "keep"}, format="json")
    assert change.status_code == 409
    assert Decision.objects.get(item=item, expert=expert3).value == "reject"


# ------------------------------------------------------------------------------------ queue, progress, htmx


def test_queue_shows_progress_and_advances_to_the_next_item_without_a_reload(client, panel, expert):
    (c1, i1), (c2, i2), (c3, i3) = panel
    client.force_login(expert)
    page = client.get(QUEUE_URL)
    html = page.content.decode()
    assert page.context["item"] == i1
    assert "0 of 3" in html and c1.prompt in html and c1.source_url in html and c1.source_title in html
    for key in ("a", "r", "x", "c", "n", "?"):  # no "p" on the first item
        assert f'data-hotkey="{key}"' in html, key
    assert 'data-hotkey="j"' not in html and 'data-hotkey="k"' not in html

    response = vote(client, expert, i1, "keep")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and 'id="review-panel"' in html
    assert response.context["item"] == i2 and "1 of 3" in html and c2.prompt in html
    assert response["HX-Replace-Url"] == f"{QUEUE_URL}?item={i2.pk}"
    assert 'data-hotkey="p"' in html and 'data-hotkey="n"' in html

    # resumable: a fresh visit opens where they left off; previous goes back to the voted item
    page = client.get(QUEUE_URL)
    assert page.context["item"] == i2 and page.context["previous_item"] == i1.pk
    assert page.context["next_item"] == i3.pk
    back = client.get(f"{QUEUE_URL}?item={i1.pk}", **HTMX)
    assert back.context["own"].value == "keep" and back.context["can_vote"] is True

    vote(client, expert, i2, "reject")
    last = vote(client, expert, i3, "keep")
    html = last.content.decode()
    assert last.status_code == 200 and 'id="queue-done"' in html and "All done" in html and "3 of 3" in html
    assert 'data-item=""' in html and "vote-form" not in html


def test_plain_form_post_without_javascript_redirects_to_the_next_item(client, panel, expert):
    (_, i1), (_, i2), _ = panel
    response = vote(client, expert, i1, "keep", htmx=False)
    assert response.status_code == 302 and response.url == f"{QUEUE_URL}?item={i2.pk}"


def test_review_home_lists_the_workflows_with_progress(client, panel, expert):
    vote(client, expert, panel[0][1], "keep")
    page = client.get("/review/")
    assert page.status_code == 200
    row = next(r for r in page.context["rows"] if r["workflow"] == WF)
    assert row["progress"].label == "1 of 3"
    assert "1 of 3" in page.content.decode() and QUEUE_URL in page.content.decode()


def test_changing_a_vote_is_logged_with_before_and_after(client, panel, expert):
    _, item = panel[0]
    vote(client, expert, item, "keep")
    vote(client, expert, item, "reject", comment="on second thought, a diagram")
    decision = Decision.objects.get(item=item, expert=expert)
    assert decision.value == "reject"
    change = ActionLog.objects.get(verb="decision_change", item=item)
    assert change.actor == expert
    assert change.before["value"] == "keep" and change.after["value"] == "reject"
    assert change.after["comment"] == "on second thought, a diagram"


def test_double_submit_second_tab_and_retry_make_one_decision(client, panel, expert):
    _, item = panel[0]
    for _ in range(3):  # double click, second tab, retry (page)
        assert vote(client, expert, item, "keep", comment="fine").status_code == 200
    api = api_for(expert)
    again = api.post(f"/api/review/items/{item.pk}/decision/", {"value": "keep", "comment": "fine"}, format="json")
    assert again.status_code == 200 and again.json()["changed"] is False and again.json()["created"] is False
    assert Decision.objects.filter(item=item).count() == 1
    assert ActionLog.objects.filter(item=item, verb__in=["decide", "decision_change"]).count() == 1
    assert selectors.queue_progress(expert=expert, workflow=WF).label == "1 of 3"


def test_api_first_decision_is_201_then_200(panel, expert):
    _, item = panel[0]
    api = api_for(expert)
    first = api.post(f"/api/review/items/{item.pk}/decision/", {"value": "keep"}, format="json")
    assert first.status_code == 201
    body = first.json()
    assert body["created"] is True and body["outcome"] == "open" and body["decision"]["value"] == "keep"
    assert body["next_item"] == panel[1][1].pk
    assert api.post(f"/api/review/items/{item.pk}/decision/", {"value": "maybe"}, format="json").status_code == 400
    queue = api.get("/api/review/task_voting/queue/").json()
    assert queue["progress"] == {"done": 1, "assigned": 3, "label": "1 of 3"}
    assert queue["count"] == 3 and queue["next_item"] == panel[1][1].pk
    assert [r["status"] for r in queue["results"]] == ["done", "assigned", "assigned"]
    assert queue["results"][1]["candidate"]["prompt"] == panel[1][0].prompt


def test_pass_reassigns_the_item_to_a_fourth_expert(client, panel, expert3, make_user):
    expert4 = make_user("expert4", "expert")
    (_, i1), (_, i2), _ = panel
    client.force_login(expert3)
    response = client.post(f"/review/task_voting/items/{i1.pk}/pass/", {"comment": "not my field"}, **HTMX)
    assert response.status_code == 200
    assert response.context["item"] == i2 and "2 of 2" not in response.content.decode()
    assert Assignment.objects.get(item=i1, expert=expert3).status == Assignment.Status.PASSED
    assert Assignment.objects.get(item=i1, expert=expert4).status == Assignment.Status.ASSIGNED
    assert selectors.queue_progress(expert=expert3, workflow=WF).label == "0 of 2"
    assert ActionLog.objects.get(verb="pass", item=i1).rationale == "not my field"
    assert ActionLog.objects.get(verb="reassign", item=i1).after == {"expert": "expert4"}
    # the passing expert is off the panel now
    assert client.get(f"{QUEUE_URL}?item={i1.pk}").status_code == 404
    assert vote(client, expert3, i1, "keep").status_code == 403
    # API pass: i2 goes to expert4 as well
    answer = api_for(expert3).post(f"/api/review/items/{i2.pk}/pass/", {}, format="json")
    assert answer.status_code == 200 and answer.json()["reassigned"] is True
    assert Assignment.objects.filter(expert=expert4, status=Assignment.Status.ASSIGNED).count() == 2
    # Every assignment (panel and reassignment) carries its item's workflow: the queues are read by it.
    assert set(Assignment.objects.values_list("workflow", flat=True)) == {WF}


# ----------------------------------------------------------------------------------------------- permissions


def test_permissions(client, panel, expert, researcher, admin_user, make_user):
    _, item = panel[0]
    outsider = make_user("expert9", "expert")
    item_url = f"/api/review/items/{item.pk}/"
    decision_page_url = f"/review/task_voting/items/{item.pk}/decision/"

    # anonymous: pages send to login, the API refuses
    for url in ["/review/", QUEUE_URL, PANELS_URL]:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response.url, url
    assert client.post(decision_page_url, {"value": "keep"}).status_code == 302
    anonymous = APIClient()
    assert anonymous.get(item_url).status_code in (401, 403)
    assert anonymous.post(f"{item_url}decision/", {"value": "keep"}).status_code in (401, 403)
    assert anonymous.get("/api/review/task_voting/queue/").status_code in (401, 403)

    # researcher: 403 everywhere here
    client.force_login(researcher)
    for url in ["/review/", QUEUE_URL, PANELS_URL]:
        assert client.get(url).status_code == 403, url
    assert client.post(decision_page_url, {"value": "keep"}).status_code == 403
    api = api_for(researcher)
    assert api.get(item_url).status_code == 403
    assert api.get("/api/review/task_voting/queue/").status_code == 403
    assert api.post(f"{item_url}decision/", {"value": "keep"}).status_code == 403
    assert api.post("/api/review/task_voting/auto-assign/").status_code == 403

    # an expert not on the item's panel
    client.force_login(outsider)
    assert client.get(f"{QUEUE_URL}?item={item.pk}").status_code == 404
    assert client.post(decision_page_url, {"value": "keep"}).status_code == 403
    assert client.post(f"/review/task_voting/items/{item.pk}/pass/").status_code == 403
    api = api_for(outsider)
    assert api.get(item_url).status_code == 403
    assert api.post(f"{item_url}decision/", {"value": "keep"}, format="json").status_code == 403
    assert api.post(f"{item_url}pass/", {}, format="json").status_code == 403

    # experts get 403 on admin pages and endpoints
    client.force_login(expert)
    assert client.get(PANELS_URL).status_code == 403
    assert client.post(f"{PANELS_URL}auto-assign/").status_code == 403
    assert client.post(f"{PANELS_URL}config/", {"panel_size": 5, "quorum": 3}).status_code == 403
    assert api_for(expert).post("/api/review/task_voting/auto-assign/").status_code == 403

    assert Decision.objects.count() == 0
    assert not WorkflowConfig.objects.exists()
    # admins see any item with every decision
    vote(client, expert, item, "keep")
    detail = api_for(admin_user).get(item_url).json()
    assert [d["expert"] for d in detail["decisions"]] == ["expert1"] and detail["state"] == "open"
    # unknown workflow
    client.force_login(expert)
    assert client.get("/review/no_such_workflow/").status_code == 404


# ------------------------------------------------------------------------------------------------ admin page


def test_admin_assigns_by_hand_and_automatically(client, admin_user, expert, expert2, expert3):
    (_, i1), (_, i2) = make_candidate(1), make_candidate(2)
    client.force_login(admin_user)
    response = client.post(f"{PANELS_URL}items/{i1.pk}/assign/", {"experts": [expert.pk, expert2.pk]})
    assert response.status_code == 302
    assert sorted(i1.assignments.values_list("expert__username", flat=True)) == ["expert1", "expert2"]
    # a non-expert and an overfull panel are refused with a message, nothing changes
    client.post(f"{PANELS_URL}items/{i1.pk}/assign/", {"experts": [admin_user.pk]})
    assert i1.assignments.count() == 2
    page = client.get(PANELS_URL)
    assert "does not have the expert role" in page.content.decode()
    # auto-assign fills i1's third seat and i2's panel: 1 + 3 assignments
    client.post(f"{PANELS_URL}auto-assign/")
    assert i1.assignments.count() == 3 and i2.assignments.count() == 3
    assert ActionLog.objects.get(verb="auto_assign").after == {"assignments": 4}
    answer = api_for(admin_user).post("/api/review/task_voting/auto-assign/")
    assert answer.status_code == 200 and answer.json() == {"workflow": WF, "assignments": 0}


def test_admin_sets_panel_size_and_quorum_which_must_be_a_strict_majority(client, admin_user):
    client.force_login(admin_user)
    assert client.get(PANELS_URL).context["rule"].quorum == 2
    client.post(f"{PANELS_URL}config/", {"panel_size": 4, "quorum": 2})
    assert not WorkflowConfig.objects.exists()
    assert "not a strict majority" in client.get(PANELS_URL).content.decode()
    client.post(f"{PANELS_URL}config/", {"panel_size": "five", "quorum": 3})
    assert not WorkflowConfig.objects.exists()
    client.post(f"{PANELS_URL}config/", {"panel_size": 5, "quorum": 3})
    config = WorkflowConfig.objects.get(workflow=WF)
    assert (config.panel_size, config.quorum) == (5, 3)
    assert services.workflow_rule(WF).quorum == 3
    log = ActionLog.objects.get(verb="workflow_config")
    assert log.before == {"panel_size": 3, "quorum": 2} and log.after == {"panel_size": 5, "quorum": 3}
    assert "3 of 5" in client.get(PANELS_URL).content.decode()


# ---------------------------------------------------------------------------------------------- query counts


def _fill_queue(expert, expert2, expert3, admin_user, start: int, count: int):
    for n in range(start, start + count):
        _, item = make_candidate(n)
        services.panel_assign(item=item, experts=[expert, expert2, expert3], assigned_by=admin_user)


def test_queue_page_and_partial_make_the_same_number_of_queries_at_two_sizes(
        client, expert, expert2, expert3, admin_user, django_assert_max_num_queries):
    client.force_login(expert)
    counts = []
    for start, size in ((1, 3), (100, 40)):
        _fill_queue(expert, expert2, expert3, admin_user, start, size)
        first = selectors.queue(expert=expert, workflow=WF).first().item
        vote(client, expert, first, "keep")  # one done, so both "previous" and the vote box have something
        second = selectors.next_assignment(expert=expert, workflow=WF).item
        with django_assert_max_num_queries(12):
            with CaptureQueriesContext(connection) as page:
                assert client.get(f"{QUEUE_URL}?item={second.pk}").status_code == 200
        with CaptureQueriesContext(connection) as partial:
            assert client.get(f"{QUEUE_URL}?item={first.pk}", **HTMX).status_code == 200
        counts.append((len(page), len(partial)))
    assert counts[0] == counts[1], counts


def test_panels_page_query_count_does_not_grow_with_the_items(client, expert, expert2, expert3, admin_user):
    client.force_login(admin_user)
    counts = []
    for start, size in ((1, 3), (100, 20)):
        _fill_queue(expert, expert2, expert3, admin_user, start, size)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(PANELS_URL).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_openapi_schema_lists_the_review_endpoints(client, admin_user):
    client.force_login(admin_user)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in ["/api/review/items/{item_id}/", "/api/review/items/{item_id}/decision/",
                 "/api/review/items/{item_id}/pass/", "/api/review/{workflow}/queue/",
                 "/api/review/{workflow}/auto-assign/"]:
        assert path in schema["paths"], path


@pytest.mark.django_db
def test_an_admin_on_the_panel_is_blind_until_voting_too(make_user, expert, expert2):
    from annotation import selectors, services
    from rubrics.models import CandidateTask

    panel_admin = make_user("panel-admin", "admin")
    panel_admin.groups.add(*expert.groups.all())  # an admin who also serves as an expert
    candidate = CandidateTask.objects.create(status="voting", prompt="Cells divide.", level="Cellular-level",
                                             source_title="Mitosis")
    item = services.review_item_open(workflow="task_voting", target=candidate)
    services.panel_assign(item=item, experts=[expert, panel_admin], assigned_by=None)
    services.decision_submit(item=item, expert=expert, value="keep")
    assert list(selectors.decisions_visible_to(user=panel_admin, item=item)) == []
    services.decision_submit(item=item, expert=panel_admin, value="reject")
    assert selectors.decisions_visible_to(user=panel_admin, item=item).count() == 2
    off_panel_admin = make_user("other-admin", "admin")
    assert selectors.decisions_visible_to(user=off_panel_admin, item=item).count() == 2
