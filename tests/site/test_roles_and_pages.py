"""Pages and API endpoints check the role; each role's home lists what it can do."""
import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.helpers import import_release_subset

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks(tmp_path):
    return import_release_subset(tmp_path / "release")


def test_anonymous_users_are_sent_to_login(client, tasks):
    for url in ["/", "/tasks/", "/tasks/1/", "/benchmark/", "/manage/users/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("login")), url


def test_a_user_without_role_gets_403(client, django_user_model, tasks):
    nobody = django_user_model.objects.create_user("nobody", password="pw-for-tests-123")
    client.force_login(nobody)
    assert client.get("/").status_code == 200  # the home page says to ask for a role
    assert client.get("/tasks/").status_code == 403
    assert client.get("/api/tasks/").status_code == 403


@pytest.mark.parametrize("role_fixture", ["expert", "admin_user", "researcher"])
def test_every_role_reads_tasks_and_rubrics(client, request, role_fixture, tasks):
    client.force_login(request.getfixturevalue(role_fixture))
    page = client.get("/tasks/1/")
    assert page.status_code == 200
    assert page.context["version"].label == "released"
    assert sum(len(v) for v in page.context["criteria"].values()) == 15
    assert client.get("/tasks/?q=thrombotic").context["page"].paginator.count == 1


def test_only_admins_manage_users(client, expert, researcher, admin_user, tasks):
    for user in (expert, researcher):
        client.force_login(user)
        assert client.get("/manage/users/").status_code == 403
        assert client.post(f"/manage/users/{user.pk}/roles/", {"roles": ["admin"]}).status_code == 403
        assert not user.groups.filter(name="admin").exists()
    client.force_login(admin_user)
    assert client.get("/manage/users/").status_code == 200
    response = client.post(f"/manage/users/{expert.pk}/roles/", {"roles": ["expert", "researcher"]})
    assert response.status_code == 302
    assert sorted(expert.groups.values_list("name", flat=True)) == ["expert", "researcher"]


def test_an_admin_cannot_remove_their_own_admin_role(client, admin_user):
    client.force_login(admin_user)
    client.post(f"/manage/users/{admin_user.pk}/roles/", {"roles": ["expert"]})
    assert admin_user.groups.filter(name="admin").exists()


def test_home_lists_what_each_role_can_do(client, expert, admin_user, researcher, tasks):
    client.force_login(expert)
    assert b"As expert" in client.get("/").content
    client.force_login(admin_user)
    body = client.get("/").content
    assert b"As admin" in body and b"/manage/users/" in body
    client.force_login(researcher)
    assert b"As researcher" in client.get("/").content


def test_task_list_filters_by_level_and_searches(client, expert, tasks):
    client.force_login(expert)
    organ = client.get("/tasks/", {"level": "Organ-level"}).context["page"].paginator.count
    cellular = client.get("/tasks/", {"level": "Cellular-level"}).context["page"].paginator.count
    assert organ + cellular + client.get("/tasks/", {"level": "Subcellular-level"}).context["page"].paginator.count == 4
    assert client.get("/tasks/", {"q": "277"}).context["page"][0].index == 277
    assert client.get("/tasks/", {"q": "no-such-word-anywhere"}).context["page"].paginator.count == 0
    # htmx asks for the results partial only
    partial = client.get("/tasks/", {"q": "thrombotic"}, HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b"#1" in partial.content


def test_task_page_switches_versions_and_shows_the_diff(client, expert, tasks):
    client.force_login(expert)
    page = client.get("/tasks/1/", {"version": 1, "compare": 2})
    assert page.context["version"].label == "draft"
    changes = page.context["changes"]
    # task 1: draft weights (2.0, 1.0, 0.7, ...) differ from the tiered released ones on most criteria
    assert changes and all(c.kind == "changed" and c.fields == ("weight",) for c in changes)
    assert client.get("/tasks/1/", {"version": 99}).status_code == 404
    assert client.get("/tasks/9999/").status_code == 404
    htmx = client.get("/tasks/1/", {"version": 2}, HTTP_HX_REQUEST="true")
    assert b"<html" not in htmx.content and b"Rubric" in htmx.content


def test_task_page_query_count_is_constant(client, expert, tasks, django_assert_max_num_queries):
    client.force_login(expert)
    with django_assert_max_num_queries(12):
        assert client.get("/tasks/1/", {"version": 1, "compare": 2}).status_code == 200
    with django_assert_max_num_queries(10):
        assert client.get("/tasks/").status_code == 200


def test_api_lists_tasks_with_token_auth_and_checks_roles(expert, researcher, tasks):
    api = APIClient()
    assert api.get("/api/tasks/").status_code in (401, 403)
    token = Token.objects.create(user=researcher)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    data = api.get("/api/tasks/", {"level": "Subcellular-level"}).json()
    assert data["count"] == sum(1 for r in api.get("/api/tasks/").json()["results"] if r["level"] == "Subcellular-level")
    version = api.get("/api/tasks/277/versions/2/").json()
    assert version["label"] == "released"
    assert [c["dimension"] for c in version["criteria"]].count("instruction") == 4
    assert [v["label"] for v in api.get("/api/tasks/1/versions/").json()] == ["draft", "released"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=expert).key}")
    assert api.post("/api/exports/", {"style": "released"}, format="json").status_code == 403
    assert api.get("/api/exports/").status_code == 403


def test_openapi_schema_and_docs_are_served(client, researcher):
    client.force_login(researcher)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/tasks/" in paths and "/api/tasks/{task_index}/versions/{number}/" in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()


def test_csrf_is_enforced_on_forms(researcher):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(researcher)
    assert strict.post("/benchmark/exports/", {"style": "released"}).status_code == 403


def test_task_page_warns_when_criteria_numbers_cannot_be_scored(client, expert, tmp_path):
    # Task 60's scientific criteria are numbered 11, 22, 33, 44, 55 in the release.
    import_release_subset(tmp_path / "r", indices=(1, 60))
    client.force_login(expert)
    assert client.get("/tasks/60/").context["unreachable_dimensions"] == ["scientific"]
    assert b"never scored" in client.get("/tasks/60/").content
    assert client.get("/tasks/1/").context["unreachable_dimensions"] == []


def test_page_url_names_are_not_shadowed_by_the_api_router():
    assert reverse("task-list") == "/tasks/"
    assert reverse("task-detail", args=[1]) == "/tasks/1/"
    assert reverse("api-task-detail", args=[1]) == "/api/tasks/1/"
