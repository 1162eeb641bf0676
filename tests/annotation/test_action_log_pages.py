"""The admin's action log: the page (filters, pages, rubric-operation counts per expert), the CSV export, the API, the
Django admin, and the append-only guarantee at every layer (model, database trigger, admin, API)."""
import csv
import datetime as dt
import io
import json
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotation import services
from annotation.models import ActionLog, Workflow
from rubrics.models import CandidateTask
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

LOG_URL = "/manage/log/"
CSV_URL = "/manage/log.csv"
API_URL = "/api/log/"
OPS = ("proposal_delete", "proposal_modify", "proposal_weight", "proposal_supplement")


def at(day: int, hour: int = 12):
    """A moment in June 2025 in the site's time zone."""
    return timezone.make_aware(dt.datetime(2025, 6, day, hour, 0))


def log_at(moment, **fields):
    """An ActionLog row written through the service, as if at `moment` (created_at is auto_now_add)."""
    with mock.patch("django.utils.timezone.now", return_value=moment):
        return services.log_action(**fields)


@pytest.fixture
def item(db):
    return services.review_item_open(workflow=Workflow.TASK_VOTING, target=CandidateTask.objects.create(
        source_title="Mitosis in HeLa cells"))


@pytest.fixture
def rows(expert, expert2, expert3, admin_user, item):
    """A known log: rubric operations by three experts on 1-3 June, decisions and an assignment on 4-5 June."""
    made = []
    plan = {  # expert -> counts of delete, modify, weight, supplement
        expert: (3, 1, 0, 2),
        expert2: (0, 2, 4, 1),
        expert3: (1, 0, 0, 0),
    }
    for user, counts in plan.items():
        for verb, n in zip(OPS, counts):
            for k in range(n):
                made.append(log_at(at(1 + k % 3, 9 + k), actor=user, verb=verb, workflow=Workflow.RUBRIC_REVISION,
                                   before={"weight": 1.0}, after={"weight": 0.5},
                                   rationale=f"{verb} #{k} by {user.username}"))
    made.append(log_at(at(4), actor=expert, verb="decide", item=item, after={"value": "keep"},
                       rationale="clearly microscale", request_id="req-abc"))
    made.append(log_at(at(5), actor=expert2, verb="decide", item=item, after={"value": "reject"},
                       rationale="=HYPERLINK(\"http://evil\")"))
    made.append(log_at(at(5, 15), actor=admin_user, verb="assign", item=item, after={"expert": "expert3"}))
    return made


def client_for(client, user):
    client.force_login(user)
    return client


# ----------------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("url", [LOG_URL, CSV_URL])
def test_anonymous_goes_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.mark.parametrize("url", [LOG_URL, CSV_URL, API_URL])
def test_expert_and_researcher_are_refused(client, expert, researcher, url):
    for user in (expert, researcher):
        client.force_login(user)
        assert client.get(url).status_code == 403


def test_api_refuses_anonymous(client):
    assert client.get(API_URL).status_code in (401, 403)


# ------------------------------------------------------------------------------------------------------- the page


def test_page_lists_rows_newest_first_with_every_column(client, admin_user, rows):
    response = client_for(client, admin_user).get(LOG_URL)
    assert response.status_code == 200
    page = response.context["page"]
    assert page.paginator.count == len(rows)
    created = [row.created_at for row in page.object_list]
    assert created == sorted(created, reverse=True)
    assert page.object_list[0].verb == "assign"
    html = response.content.decode()
    for header in ("Who", "Verb", "Workflow", "Item", "Before → after", "Rationale", "When", "Request id"):
        assert f">{header}</th>" in html
    assert "req-abc" in html and "clearly microscale" in html
    assert "{&quot;weight&quot;: 1.0}</span> → " in html  # before → after, as JSON


def test_page_filters_by_expert_workflow_verb_and_dates(client, admin_user, expert, expert2, rows):
    client = client_for(client, admin_user)

    def verbs_and_actors(**params):
        page = client.get(LOG_URL, params).context["page"]
        assert page.paginator.count <= 50
        return [(r.actor.username if r.actor else None, r.verb) for r in page.object_list]

    assert {a for a, _ in verbs_and_actors(expert=expert.pk)} == {"expert1"}
    assert len(verbs_and_actors(expert=expert.pk)) == 3 + 1 + 2 + 1
    # the verb menu lists every verb in the log once, in order
    choices = [v for v, _ in client.get(LOG_URL).context["filter"].form.fields["verb"].choices if v]
    assert choices == sorted({r.verb for r in rows})
    assert {v for _, v in verbs_and_actors(workflow=Workflow.TASK_VOTING)} == {"decide", "assign"}
    assert verbs_and_actors(verb="proposal_weight") == [("expert2", "proposal_weight")] * 4
    assert verbs_and_actors(expert=expert2.pk, verb="decide") == [("expert2", "decide")]
    # date range, both ends inclusive days
    assert [v for _, v in verbs_and_actors(since="2025-06-04")] == ["assign", "decide", "decide"]
    assert [v for _, v in verbs_and_actors(since="2025-06-04", until="2025-06-04")] == ["decide"]
    assert len(verbs_and_actors(until="2025-06-01")) == sum(1 for r in rows if r.created_at.day == 1)


def test_invalid_filter_shows_the_error_and_no_rows(client, admin_user, rows):
    response = client_for(client, admin_user).get(LOG_URL, {"verb": "no-such-verb"})
    assert response.status_code == 200
    assert response.context["page"].paginator.count == 0
    assert 'id="filter-errors"' in response.content.decode()


def test_pages_of_fifty_keep_the_filters(client, admin_user, expert):
    for n in range(60):
        log_at(at(1) + dt.timedelta(minutes=n), actor=expert, verb="proposal_modify", rationale=f"row {n}")
    log_at(at(2), actor=expert, verb="decide")
    client = client_for(client, admin_user)
    first = client.get(LOG_URL, {"verb": "proposal_modify"})
    assert len(first.context["page"].object_list) == 50
    assert first.context["page"].object_list[0].rationale == "row 59"
    html = first.content.decode()
    assert 'href="?verb=proposal_modify&page=2"' in html
    second = client.get(LOG_URL, {"verb": "proposal_modify", "page": 2})
    assert [r.rationale for r in second.context["page"].object_list] == [f"row {n}" for n in range(9, -1, -1)]


def test_rubric_operation_counts_per_expert_chart_and_table(client, admin_user, expert, rows):
    response = client_for(client, admin_user).get(LOG_URL)
    chart = response.context["chart"]
    assert chart["labels"] == ["expert1", "expert2", "expert3"]
    assert [d["label"] for d in chart["datasets"]] == ["Delete", "Modify", "Adjust weight", "Supplement"]
    by_label = {d["label"]: d["data"] for d in chart["datasets"]}
    assert by_label == {"Delete": [3, 0, 1], "Modify": [1, 2, 0], "Adjust weight": [0, 4, 0],
                        "Supplement": [2, 1, 0]}
    # the same numbers reach the browser (json_script) and the table
    html = response.content.decode()
    start = html.index('<script id="ops-chart-data" type="application/json">') + len(
        '<script id="ops-chart-data" type="application/json">')
    assert json.loads(html[start:html.index("</script>", start)]) == chart
    assert response.context["ops_table"] == [("expert1", [3, 1, 0, 2], 6), ("expert2", [0, 2, 4, 1], 7),
                                             ("expert3", [1, 0, 0, 0], 1)]
    assert response.context["ops_totals"] == [4, 3, 4, 3]
    # the chart follows the expert and date filters but not the verb filter
    only_expert1 = client.get(LOG_URL, {"expert": expert.pk, "verb": "decide"}).context["chart"]
    assert only_expert1["labels"] == ["expert1"]
    assert [d["data"] for d in only_expert1["datasets"]] == [[3], [1], [0], [2]]
    first_day = client.get(LOG_URL, {"until": "2025-06-01"}).context["ops_table"]
    assert sum(total for _, _, total in first_day) == sum(
        1 for r in rows if r.created_at.day == 1 and r.verb in OPS)


def test_log_page_query_count_does_not_grow_with_the_log(client, admin_user, expert, expert2, item):
    client = client_for(client, admin_user)

    def add_rows(n):
        for k in range(n):
            user = (expert, expert2)[k % 2]
            services.log_action(actor=user, verb=OPS[k % 4], workflow=Workflow.RUBRIC_REVISION, rationale="r")
            services.log_action(actor=user, verb="decide", item=item, after={"value": "keep"})

    def queries(params=None):
        client.get(LOG_URL, params or {})  # warm up (session, content types)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(LOG_URL, params or {}).status_code == 200
        return len(captured)

    add_rows(3)
    small, small_filtered = queries(), queries({"expert": expert.pk, "workflow": Workflow.TASK_VOTING})
    for n in range(6):
        make_user(f"extra{n}", "expert")
    add_rows(80)
    assert queries() == small
    assert queries({"expert": expert.pk, "workflow": Workflow.TASK_VOTING}) == small_filtered


# -------------------------------------------------------------------------------------------------------- the CSV


def read_csv(response):
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8"))))


def test_csv_export_has_a_header_and_every_filtered_row(client, admin_user, expert, item, rows):
    client = client_for(client, admin_user)
    everything = read_csv(client.get(CSV_URL))
    assert everything[0] == ["id", "when", "who", "verb", "workflow", "item", "target_type", "target_id", "before",
                             "after", "rationale", "request_id"]
    assert len(everything) == 1 + len(rows)
    assert int(everything[1][0]) == rows[-1].pk  # newest first, like the page
    decided = read_csv(client.get(CSV_URL, {"expert": expert.pk, "verb": "decide"}))
    assert len(decided) == 2
    row = dict(zip(decided[0], decided[1]))
    assert row["who"] == "expert1" and row["verb"] == "decide" and row["workflow"] == Workflow.TASK_VOTING
    assert row["item"] == str(item.pk)
    assert row["target_type"] == "candidatetask"
    assert json.loads(row["after"]) == {"value": "keep"} and row["before"] == ""
    assert row["rationale"] == "clearly microscale" and row["request_id"] == "req-abc"
    assert dt.datetime.fromisoformat(row["when"]) == at(4)
    by_date = read_csv(client.get(CSV_URL, {"since": "2025-06-05"}))
    assert [r[3] for r in by_date[1:]] == ["assign", "decide"]


def test_csv_cells_cannot_start_a_spreadsheet_formula(client, admin_user, expert2, rows):
    exported = read_csv(client_for(client, admin_user).get(CSV_URL, {"expert": expert2.pk, "verb": "decide"}))
    assert exported[1][10] == "'=HYPERLINK(\"http://evil\")"


def test_csv_export_streams_a_large_log(client, admin_user, expert):
    ActionLog.objects.bulk_create(ActionLog(actor=expert, verb="decide", rationale=f"r{n}") for n in range(4500))
    exported = read_csv(client_for(client, admin_user).get(CSV_URL))
    assert len(exported) == 4501


# ---------------------------------------------------------------------------------------------- append-only


def test_the_model_refuses_update_and_delete(rows):
    row = ActionLog.objects.get(pk=rows[0].pk)
    row.verb = "tampered"
    with pytest.raises(ValidationError):
        row.save()
    with pytest.raises(ValidationError):
        row.delete()
    assert ActionLog.objects.get(pk=row.pk).verb == rows[0].verb


def test_the_database_refuses_a_raw_update(rows):
    """SQLite and PostgreSQL both have an UPDATE trigger (migration annotation/0002)."""
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE annotation_actionlog SET verb = 'x'")
    assert not ActionLog.objects.filter(verb="x").exists()


def test_bulk_update_and_delete_are_refused_on_every_database(rows):
    # QuerySet.update()/delete() bypass Model.save()/delete(); the log's queryset refuses them itself.
    with pytest.raises(ValidationError, match="append-only"):
        ActionLog.objects.filter(pk=rows[0].pk).update(rationale="rewritten")
    with pytest.raises(ValidationError, match="append-only"):
        ActionLog.objects.filter(pk=rows[0].pk).delete()
    assert ActionLog.objects.get(pk=rows[0].pk).rationale == rows[0].rationale
    assert ActionLog.objects.count() == len(rows)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="only PostgreSQL has the DELETE trigger (the SQLite "
                    "test runner empties tables with DELETE)")
def test_postgresql_refuses_a_raw_delete(rows):
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM annotation_actionlog")
    assert ActionLog.objects.count() == len(rows)


@pytest.fixture
def superuser(db):
    return make_user("root", None, is_superuser=True, is_staff=True)


def test_django_admin_shows_the_log_read_only_even_to_a_superuser(client, superuser, rows):
    client.force_login(superuser)
    row = rows[0]
    changelist = client.get("/django-admin/annotation/actionlog/")
    assert changelist.status_code == 200
    assert "action-checkbox" not in changelist.content.decode()  # no bulk actions (no "delete selected")
    detail = client.get(f"/django-admin/annotation/actionlog/{row.pk}/change/")
    assert detail.status_code == 200
    html = detail.content.decode()
    assert 'name="_save"' not in html and "deletelink" not in html
    assert client.post(f"/django-admin/annotation/actionlog/{row.pk}/change/",
                       {"verb": "tampered", "rationale": "x"}).status_code == 403
    assert client.get(f"/django-admin/annotation/actionlog/{row.pk}/delete/").status_code == 403
    assert client.post(f"/django-admin/annotation/actionlog/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/django-admin/annotation/actionlog/add/").status_code == 403
    assert client.post("/django-admin/annotation/actionlog/", {
        "action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}).status_code in (200, 302, 403)
    assert ActionLog.objects.count() == len(rows)
    assert ActionLog.objects.get(pk=row.pk).verb == row.verb


def test_django_admin_permissions_are_off_for_everyone(rf, superuser):
    from django.contrib import admin

    model_admin = admin.site._registry[ActionLog]
    request = rf.get("/")
    request.user = superuser
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert model_admin.has_view_permission(request)
    assert not model_admin.get_actions(request)


# --------------------------------------------------------------------------------------------------------- the API


def test_api_lists_the_log_with_filters(client, admin_user, expert, rows):
    client = client_for(client, admin_user)
    data = client.get(API_URL).json()
    assert data["count"] == len(rows)
    first = data["results"][0]
    assert set(first) == {"id", "actor", "verb", "workflow", "item", "target_type", "target_id", "before", "after",
                          "rationale", "request_id", "created_at"}
    assert first["verb"] == "assign" and first["actor"] == "admin"
    decided = client.get(API_URL, {"expert": expert.pk, "verb": "decide"}).json()
    assert [(r["actor"], r["verb"], r["request_id"]) for r in decided["results"]] == [("expert1", "decide", "req-abc")]
    assert client.get(API_URL, {"since": "2025-06-05"}).json()["count"] == 2


def test_api_has_only_get(client, admin_user, rows):
    client = client_for(client, admin_user)
    row_url = f"{API_URL}{rows[0].pk}/"
    assert client.post(API_URL, {"verb": "x"}, content_type="application/json").status_code == 405
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)(API_URL, {"verb": "x"}, content_type="application/json").status_code == 405
        assert getattr(client, method)(row_url, {"verb": "x"},
                                       content_type="application/json").status_code in (404, 405)
    assert "GET" in client.options(API_URL)["Allow"] and "POST" not in client.options(API_URL)["Allow"]
    assert ActionLog.objects.count() == len(rows)
    assert ActionLog.objects.get(pk=rows[0].pk).verb == rows[0].verb
