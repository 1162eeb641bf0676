"""Rubric revision end to end on a real task: rounds, proposals, blind review, majority aggregation into a new
immutable version, adjudication, the pages and the API."""
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import ActionLog, Assignment, Decision, ReviewItem
from rubrics import revision
from rubrics.models import (
    BenchmarkTask,
    Criterion,
    RevisionAdjudication,
    RevisionProposal,
    RevisionRound,
    RubricChange,
    RubricVersion,
)
from tests.helpers import import_release_subset

pytestmark = pytest.mark.django_db

MODIFY_A = "Instruction follow-through: the red blood cells visibly stop at the thrombus within the first seconds."
MODIFY_B = "The video shows the blockage halting the flow, and the vessel wall texture stays visible throughout."
SUPPLEMENT = "No text overlays, watermarks or borders cover the microscopic scene."


@pytest.fixture
def task(tmp_path):
    import_release_subset(tmp_path / "release", indices=(1, 2, 3))
    return BenchmarkTask.objects.get(index=1)


@pytest.fixture
def panel(expert, expert2, expert3):
    return [expert, expert2, expert3]


@pytest.fixture
def round(task, admin_user, panel):
    return revision.round_open(task=task, by=admin_user, experts=panel)


def crit(version, dimension, key):
    return version.criteria.get(dimension=dimension, key_number=key)


def snapshot(version):
    return list(version.criteria.order_by("dimension", "position").values_list(
        "dimension", "position", "key_number", "description", "polarity", "weight"))


def propose(round, expert, op, criterion=None, **kw):
    kw.setdefault("rationale", f"{expert.username}: because the paper's rule says so")
    kw.setdefault("base_version_id", round.base_version_id)
    return revision.proposal_save(round=round, expert=expert, op=op,
                                  criterion_id=criterion.pk if criterion is not None else None, **kw)


def run_scenario(round, panel):
    """expert1 and expert2 re-weight X (0.5 -> 1.0 and 0.2), all three delete Y, expert3 supplements a criterion,
    expert1 and expert2 modify Z differently."""
    e1, e2, e3 = panel
    base = round.base_version
    x, y, z = crit(base, "scientific", 4), crit(base, "visual", 3), crit(base, "instruction", 2)
    assert x.weight == 0.5
    p = {
        "w1": propose(round, e1, "weight", x, weight=1.0, rationale="Morphology is central to this prompt."),
        "w2": propose(round, e2, "weight", x, weight=0.2, rationale="Secondary to the haemodynamics."),
        "d1": propose(round, e1, "delete", y, rationale="Duplicates visual criterion 2."),
        "d2": propose(round, e2, "delete", y, rationale="Not judgeable from 8 frames."),
        "d3": propose(round, e3, "delete", y, rationale="Overlaps with the scientific criteria."),
        "s3": propose(round, e3, "supplement", dimension="visual", description=SUPPLEMENT, polarity=1, weight=0.2,
                      rationale="Generated videos often carry overlays."),
        "m1": propose(round, e1, "modify", z, description=MODIFY_A, rationale="Make the stop observable."),
        "m2": propose(round, e2, "modify", z, description=MODIFY_B, rationale="Name both required elements."),
    }
    results = [revision.proposals_submit(round=round, expert=e) for e in panel]
    return p, results, (x, y, z)


def test_three_experts_revise_a_real_rubric_into_a_new_version(task, round, panel):
    base = round.base_version
    assert base.pk == task.current_rubric_id and base.label == "released" and base.criteria.count() == 15
    before_base = snapshot(base)
    draft = RubricVersion.objects.get(task=task, label="draft")
    before_draft = snapshot(draft)
    item = revision.round_item(round)
    assert item.workflow == "rubric_revision"
    assert sorted(item.assignments.values_list("expert__username", flat=True)) == ["expert1", "expert2", "expert3"]

    p, results, (x, y, z) = run_scenario(round, panel)
    assert [r.aggregated for r in results] == [False, False, True]
    assert [r.submitted for r in results] == [3, 3, 2]

    round.refresh_from_db()
    task.refresh_from_db()
    new = round.result_version
    assert round.status == "adjudication" and round.aggregated_at is not None
    assert task.current_rubric_id == new.pk
    assert (new.number, new.label, new.parent_id) == (3, "rev-3", base.pk)

    # the new version: Y gone, X re-weighted to the median of 1.0 and 0.2, Z and everything else unchanged
    assert new.criteria.count() == 14
    assert not new.criteria.filter(dimension="visual", key_number=3).exists()
    assert crit(new, "scientific", 4).weight == pytest.approx(0.6)
    assert crit(new, "instruction", 2).description == z.description
    assert not new.criteria.filter(description=SUPPLEMENT).exists()
    expected = [(d, k, desc, pol, (0.6 if (d, k) == ("scientific", 4) else w))
                for d, _pos, k, desc, pol, w in before_base if (d, k) != ("visual", 3)]
    got = [(d, k, desc, pol, w) for d, _pos, k, desc, pol, w in snapshot(new)]
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    assert [g[4] for g in got] == pytest.approx([e[4] for e in expected])
    assert list(new.criteria.filter(dimension="visual").order_by("position").values_list("position", flat=True)) \
        == [1, 2, 3, 4]

    # RubricChange rows link to the right proposals
    changes = {c.op: c for c in RubricChange.objects.filter(version=new)}
    assert set(changes) == {"delete", "weight"}
    assert set(changes["delete"].proposals.all()) == {p["d1"], p["d2"], p["d3"]}
    assert (changes["delete"].dimension, changes["delete"].key_number) == ("visual", 3)
    assert changes["delete"].after is None and changes["delete"].before["description"] == y.description
    assert set(changes["weight"].proposals.all()) == {p["w1"], p["w2"]}
    assert changes["weight"].before["weight"] == 0.5 and changes["weight"].after["weight"] == pytest.approx(0.6)

    # adjudication items: the lone supplement (minority) and the two different modifications (conflict)
    items = {a.op: a for a in round.adjudications.all()}
    assert set(items) == {"supplement", "modify"}
    assert items["supplement"].reason == "minority proposal (1 of 3)"
    assert list(items["supplement"].proposals.all()) == [p["s3"]]
    assert items["modify"].reason == "conflicting modifications"
    assert items["modify"].criterion == z
    assert set(items["modify"].proposals.all()) == {p["m1"], p["m2"]}
    assert all(a.status == "pending" for a in items.values())

    # old versions untouched, still immutable
    assert snapshot(base) == before_base and snapshot(draft) == before_draft
    with pytest.raises(ValidationError):
        new.save()

    # the review machinery: decisions, a closed item, and one log row per operation with its rationale
    assert set(Decision.objects.filter(item=item).values_list("value", flat=True)) == {"submitted"}
    assert item.assignments.filter(status=Assignment.Status.DONE).count() == 3
    item.refresh_from_db()
    assert item.status == ReviewItem.Status.CLOSED
    assert RevisionProposal.objects.filter(round=round, status="submitted").count() == 8
    log = ActionLog.objects.filter(verb__startswith="proposal_")
    counts = {(r.actor.username, r.verb) for r in log}
    assert ("expert1", "proposal_weight") in counts and ("expert3", "proposal_supplement") in counts
    assert log.filter(verb="proposal_delete").count() == 3
    assert log.filter(verb="proposal_modify").count() == 2
    assert log.filter(verb="proposal_weight").count() == 2
    assert log.filter(verb="proposal_supplement").count() == 1
    weight_row = log.get(verb="proposal_weight", actor=panel[0])
    assert weight_row.rationale == "Morphology is central to this prompt."
    assert weight_row.before["weight"] == 0.5 and weight_row.after["weight"] == 1.0
    assert log.get(verb="proposal_delete", actor=panel[2]).after is None
    assert ActionLog.objects.filter(verb="round_aggregate").count() == 1


def test_admin_accepting_an_adjudication_makes_another_version(task, round, panel, admin_user, expert):
    p, _, (x, y, z) = run_scenario(round, panel)
    round.refresh_from_db()
    rev3 = round.result_version
    conflict = round.adjudications.get(op="modify")
    minority = round.adjudications.get(op="supplement")

    with pytest.raises(ValidationError, match="rationale"):
        revision.adjudication_decide(adjudication=conflict, admin=admin_user, accept=True, rationale="  \n ",
                                     chosen_proposal_id=p["m2"].pk)
    with pytest.raises(ValidationError, match="choose"):
        revision.adjudication_decide(adjudication=conflict, admin=admin_user, accept=True, rationale="ok")
    with pytest.raises(PermissionDenied):
        revision.adjudication_decide(adjudication=conflict, admin=expert, accept=True, rationale="ok",
                                     chosen_proposal_id=p["m2"].pk)

    rev4 = revision.adjudication_decide(adjudication=conflict, admin=admin_user, accept=True,
                                        rationale="Both elements are needed.", chosen_proposal_id=p["m2"].pk)
    task.refresh_from_db()
    assert (rev4.number, rev4.label, rev4.parent_id) == (4, "rev-4", rev3.pk)
    assert task.current_rubric_id == rev4.pk
    assert crit(rev4, "instruction", 2).description == MODIFY_B
    assert crit(rev4, "scientific", 4).weight == pytest.approx(0.6)  # the round's changes carry over
    assert rev4.criteria.count() == 14 and crit(rev3, "instruction", 2).description == z.description
    change = RubricChange.objects.get(version=rev4)
    assert change.adjudication == conflict and list(change.proposals.all()) == [p["m2"]]
    assert change.before["description"] == z.description and change.after["description"] == MODIFY_B
    conflict.refresh_from_db()
    assert (conflict.status, conflict.chosen_proposal, conflict.decided_by) == ("accepted", p["m2"], admin_user)
    round.refresh_from_db()
    assert round.status == "adjudication"  # the supplement is still pending

    assert revision.adjudication_decide(adjudication=minority, admin=admin_user, accept=False,
                                        rationale="Covered by the text-and-borders filter.") is None
    round.refresh_from_db()
    assert round.status == "done"
    task.refresh_from_db()
    assert task.current_rubric_id == rev4.pk
    with pytest.raises(ValidationError, match="already"):
        revision.adjudication_decide(adjudication=minority, admin=admin_user, accept=True, rationale="changed mind")
    verbs = list(ActionLog.objects.filter(actor=admin_user, verb__startswith="adjudicate_")
                 .order_by("id").values_list("verb", "rationale"))
    assert verbs == [("adjudicate_accept", "Both elements are needed."),
                     ("adjudicate_reject", "Covered by the text-and-borders filter.")]


def test_an_accepted_supplement_gets_the_next_key_number_of_its_dimension(task, round, panel, admin_user):
    p, _, _ = run_scenario(round, panel)
    minority = RevisionAdjudication.objects.get(round=round, op="supplement")
    version = revision.adjudication_decide(adjudication=minority, admin=admin_user, accept=True,
                                           rationale="Overlays are a real failure mode.")
    added = version.criteria.get(description=SUPPLEMENT)
    # visual keys in rev-3 are 1, 2, 4, 5 (3 was deleted): the new one is 6, placed last
    assert (added.dimension, added.key_number, added.polarity, added.weight) == ("visual", 6, 1, 0.2)
    assert added.position == version.criteria.filter(dimension="visual").count() == 5
    assert list(RubricChange.objects.get(version=version).proposals.all()) == [p["s3"]]


def test_a_majority_supplement_is_applied(task, admin_user, panel):
    round = revision.round_open(task=task, by=admin_user, experts=panel)
    for e in panel[:2]:
        propose(round, e, "supplement", dimension="scientific", description="Platelets  aggregate at the site.",
                polarity=1, weight=0.5)
    for e in panel:
        revision.proposals_submit(round=round, expert=e)
    round.refresh_from_db()
    assert round.status == "done" and not round.adjudications.exists()
    added = round.result_version.criteria.get(dimension="scientific", key_number=6)
    assert added.description == "Platelets aggregate at the site." and added.weight == 0.5


def test_rationale_is_required_and_whitespace_is_refused(task, round, expert):
    x = crit(round.base_version, "scientific", 4)
    for blank in ("", "   ", "\n\t "):
        with pytest.raises(ValidationError, match="rationale"):
            propose(round, expert, "weight", x, weight=1.0, rationale=blank)
    assert not RevisionProposal.objects.exists()
    api = APIClient()
    api.force_authenticate(expert)
    response = api.post(f"/api/revisions/{round.pk}/proposals/",
                        {"op": "delete", "criterion_id": x.pk, "rationale": "   ",
                         "base_version_id": round.base_version_id}, format="json")
    assert response.status_code == 400 and "rationale" in response.json()["detail"]


def test_malformed_proposals_are_refused(task, round, expert):
    x = crit(round.base_version, "scientific", 4)
    with pytest.raises(ValidationError, match="current weight"):
        propose(round, expert, "weight", x, weight=0.5)
    with pytest.raises(ValidationError, match="unchanged"):
        propose(round, expert, "modify", x, description=x.description)
    with pytest.raises(ValidationError, match="dimension"):
        propose(round, expert, "supplement", description="x", polarity=1, weight=1.0)
    other = crit(RubricVersion.objects.get(task=task, label="draft"), "scientific", 1)
    with pytest.raises(ValidationError, match="not part"):
        propose(round, expert, "delete", other)


def test_a_second_proposal_of_the_same_kind_replaces_the_draft_and_drafts_can_be_deleted(task, round, expert):
    x = crit(round.base_version, "scientific", 4)
    first = propose(round, expert, "weight", x, weight=1.0)
    second = propose(round, expert, "weight", x, weight=0.2, rationale="Changed my mind.")
    assert first.pk == second.pk and RevisionProposal.objects.get().weight == 0.2
    revision.proposal_delete_draft(proposal=second, expert=expert)
    assert not RevisionProposal.objects.exists()


def test_an_expert_not_on_the_panel_is_refused(task, round, make_user, client):
    outsider = make_user("expert4", "expert")
    x = crit(round.base_version, "scientific", 4)
    with pytest.raises(PermissionDenied):
        propose(round, outsider, "delete", x)
    with pytest.raises(PermissionDenied):
        revision.proposals_submit(round=round, expert=outsider)
    client.force_login(outsider)
    assert client.get(f"/revisions/{round.pk}/").status_code == 403
    assert client.get(f"/revisions/{round.pk}/form/", {"op": "delete", "criterion": x.pk}).status_code == 403
    assert client.post(f"/revisions/{round.pk}/proposals/", {"op": "delete", "criterion_id": x.pk,
                                                             "rationale": "x"}).status_code == 403
    assert round.pk not in [r.round.pk for r in client.get("/revisions/").context["rows"]]
    api = APIClient()
    api.force_authenticate(outsider)
    assert api.get(f"/api/revisions/{round.pk}/proposals/").status_code == 403
    assert api.post(f"/api/revisions/{round.pk}/proposals/", {"op": "delete", "criterion_id": x.pk, "rationale": "x",
                                                              "base_version_id": round.base_version_id},
                    format="json").status_code == 403


def test_a_stale_base_version_is_refused_with_409(task, round, panel, admin_user):
    e1 = panel[0]
    x = crit(round.base_version, "scientific", 4)
    draft = RubricVersion.objects.get(task=task, label="draft")
    with pytest.raises(revision.StaleVersion):
        propose(round, e1, "delete", x, base_version_id=draft.pk)
    api = APIClient()
    api.force_authenticate(e1)
    url = f"/api/revisions/{round.pk}/proposals/"
    body = {"op": "delete", "criterion_id": x.pk, "rationale": "Redundant.", "base_version_id": draft.pk}
    response = api.post(url, body, format="json")
    assert response.status_code == 409
    assert "older version" in response.json()["detail"]

    # the task's current version moves on (here: an admin accepts another round's change): the round is stale
    body["base_version_id"] = round.base_version_id
    assert api.post(url, body, format="json").status_code == 201
    newer = RubricVersion.objects.create(task=task, number=9, label="manual", parent=round.base_version)
    task.current_rubric = newer
    task.save(update_fields=["current_rubric"])
    response = api.post(url, {**body, "op": "weight", "weight": 1.0}, format="json")
    assert response.status_code == 409 and "has changed" in response.json()["detail"]
    submit = api.post(f"/api/revisions/{round.pk}/submit/", {}, format="json")
    assert submit.status_code == 409
    client_page = APIClient()
    client_page.force_login(e1)
    page = client_page.post(f"/revisions/{round.pk}/proposals/", {**body, "op": "delete"}, HTTP_HX_REQUEST="true")
    assert page.status_code == 200 and b"has changed" in page.content


def test_experts_revise_blind_until_the_round_is_aggregated(task, round, panel, client):
    e1, e2, e3 = panel
    x = crit(round.base_version, "scientific", 4)
    propose(round, e1, "weight", x, weight=1.0, rationale="SECRET-ONE rationale")
    propose(round, e2, "weight", x, weight=0.2, rationale="SECRET-TWO rationale")
    revision.proposals_submit(round=round, expert=e2)
    assert [p.rationale for p in revision.proposals_visible_to(user=e1, round=round)] == ["SECRET-ONE rationale"]
    # even after submitting, e2 sees only their own until the whole panel is done
    assert [p.rationale for p in revision.proposals_visible_to(user=e2, round=round)] == ["SECRET-TWO rationale"]

    client.force_login(e1)
    page = client.get(f"/revisions/{round.pk}/")
    assert page.status_code == 200 and b"SECRET-ONE" in page.content and b"SECRET-TWO" not in page.content
    partial = client.get(f"/revisions/{round.pk}/", HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b"SECRET-TWO" not in partial.content
    api = APIClient()
    api.force_authenticate(e1)
    listed = api.get(f"/api/revisions/{round.pk}/proposals/").json()
    assert [p["rationale"] for p in listed] == ["SECRET-ONE rationale"]
    client.force_login(e2)
    assert b"SECRET-ONE" not in client.get(f"/revisions/{round.pk}/").content

    revision.proposals_submit(round=round, expert=e1)
    revision.proposals_submit(round=round, expert=e3)
    client.force_login(e1)
    after = client.get(f"/revisions/{round.pk}/").content
    assert b"SECRET-ONE" in after and b"SECRET-TWO" in after
    assert {p["rationale"] for p in api.get(f"/api/revisions/{round.pk}/proposals/").json()} == {
        "SECRET-ONE rationale", "SECRET-TWO rationale"}


def test_roles_on_pages_and_api(task, round, researcher, expert, client):
    urls = ["/revisions/", f"/revisions/{round.pk}/", "/revisions/adjudication/"]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    client.force_login(researcher)
    for url in urls:
        assert client.get(url).status_code == 403, url
    assert client.post("/revisions/open/", {"task": 1, "panel": "auto"}).status_code == 403
    api = APIClient()
    assert api.get("/api/revisions/").status_code in (401, 403)
    api.force_authenticate(researcher)
    assert api.get("/api/revisions/").status_code == 403
    assert api.get(f"/api/revisions/{round.pk}/proposals/").status_code == 403
    client.force_login(expert)
    assert client.get("/revisions/adjudication/").status_code == 403
    assert client.post("/revisions/open/", {"task": 1, "panel": "auto"}).status_code == 403
    api.force_authenticate(expert)
    assert api.get("/api/revisions/adjudications/").status_code == 403
    assert api.post("/api/revisions/", {"task": 2}, format="json").status_code == 403


def test_admin_opens_rounds_with_manual_or_automatic_panels(task, admin_user, panel, client,
                                                           django_assert_max_num_queries):
    client.force_login(admin_user)
    page = client.get("/revisions/")
    assert page.status_code == 200 and b"Open a revision round" in page.content
    response = client.post("/revisions/open/", {"task": 1, "panel": "manual",
                                                "experts": [panel[0].pk, panel[1].pk, panel[2].pk]})
    first = RevisionRound.objects.get(task__index=1)
    assert response.status_code == 302 and response.url == f"/revisions/{first.pk}/"
    assert len(revision.panel_members(first)) == 3
    # a second round on the same task while one is in progress is refused
    client.post("/revisions/open/", {"task": 1, "panel": "auto"})
    assert RevisionRound.objects.filter(task__index=1).count() == 1
    client.post("/revisions/open/", {"task": 2, "panel": "auto"})
    second = RevisionRound.objects.get(task__index=2)
    assert {e.username for e in revision.panel_members(second)} == {"expert1", "expert2", "expert3"}
    assert ActionLog.objects.filter(verb="round_open").count() == 2
    listing = client.get("/revisions/")
    assert {r.round.pk for r in listing.context["rows"]} == {first.pk, second.pk}
    api = APIClient()
    api.force_authenticate(admin_user)
    created = api.post("/api/revisions/", {"task": 3, "experts": ["expert1", "expert2", "expert3"]}, format="json")
    assert created.status_code == 201 and created.json()["task"] == 3
    client.force_login(panel[0])
    with django_assert_max_num_queries(10):
        mine = client.get("/revisions/")
    assert len(mine.context["rows"]) == 3 and b"to do" in mine.content
    assert all(r.on_panel and not r.submitted and r.progress.label == "0 of 3 submitted" for r in mine.context["rows"])


def test_expert_page_htmx_flow_and_the_task_page_shows_the_changes(task, round, panel, client,
                                                                   django_assert_max_num_queries):
    e1 = panel[0]
    x = crit(round.base_version, "scientific", 4)
    client.force_login(e1)
    page = client.get(f"/revisions/{round.pk}/")
    assert page.status_code == 200
    assert b'id="key-map"' in page.content and page.content.count(b"data-criterion=") == 15
    form = client.get(f"/revisions/{round.pk}/form/", {"op": "weight", "criterion": x.pk}, HTTP_HX_REQUEST="true")
    assert form.status_code == 200 and b'name="rationale"' in form.content and b"<html" not in form.content
    saved = client.post(f"/revisions/{round.pk}/proposals/",
                        {"op": "weight", "criterion_id": x.pk, "weight": "1.0", "polarity": "-1",
                         "rationale": "Central and a penalty here.", "base_version_id": round.base_version_id},
                        HTTP_HX_REQUEST="true")
    assert saved.status_code == 200 and b'hx-swap-oob="true"' in saved.content
    assert sorted(RevisionProposal.objects.values_list("op", flat=True)) == ["modify", "weight"]
    blank = client.post(f"/revisions/{round.pk}/proposals/",
                        {"op": "delete", "criterion_id": x.pk, "rationale": "  ",
                         "base_version_id": round.base_version_id}, HTTP_HX_REQUEST="true")
    assert b"rationale is required" in blank.content and RevisionProposal.objects.count() == 2
    modify = RevisionProposal.objects.get(op="modify")
    removed = client.post(f"/revisions/{round.pk}/proposals/{modify.pk}/delete/", HTTP_HX_REQUEST="true")
    assert removed.status_code == 200 and RevisionProposal.objects.count() == 1
    submitted = client.post(f"/revisions/{round.pk}/submit/", {"base_version_id": round.base_version_id},
                            HTTP_HX_REQUEST="true")
    assert b"You submitted 1 proposal" in submitted.content and b"<html" not in submitted.content
    propose(round, panel[1], "weight", x, weight=1.0, rationale="Agree: it matters most.")
    revision.proposals_submit(round=round, expert=panel[1])
    revision.proposals_submit(round=round, expert=panel[2])
    round.refresh_from_db()
    assert crit(round.result_version, "scientific", 4).weight == 1.0

    result = client.get(f"/revisions/{round.pk}/")
    assert b"round-result" in result.content and b"Agree: it matters most." in result.content
    with django_assert_max_num_queries(12):
        task_page = client.get("/tasks/1/", {"version": round.result_version.number, "compare": 2})
    assert task_page.status_code == 200
    text = task_page.content.decode()
    assert "Central and a penalty here." in text and "Agree: it matters most." in text and "expert2" in text
    assert [c.kind for c in task_page.context["changes"]] == ["changed"]


def test_adjudication_queue_page_and_api(task, round, panel, admin_user, client):
    p, _, _ = run_scenario(round, panel)
    conflict = RevisionAdjudication.objects.get(op="modify")
    minority = RevisionAdjudication.objects.get(op="supplement")
    client.force_login(admin_user)
    queue = client.get("/revisions/adjudication/")
    assert queue.status_code == 200
    text = queue.content.decode()
    assert "conflicting modifications" in text and "Make the stop observable." in text and SUPPLEMENT in text
    missing = client.post(f"/revisions/adjudication/{conflict.pk}/decide/",
                          {"decision": "accept", "chosen": p["m1"].pk, "rationale": " "}, HTTP_HX_REQUEST="true")
    assert b"rationale is required" in missing.content
    done = client.post(f"/revisions/adjudication/{conflict.pk}/decide/",
                       {"decision": "accept", "chosen": p["m1"].pk, "rationale": "Observable is better."},
                       HTTP_HX_REQUEST="true")
    assert done.status_code == 200 and b"Accepted" in done.content and b"rev-4" in done.content
    assert BenchmarkTask.objects.get(index=1).current_rubric.label == "rev-4"

    api = APIClient()
    api.force_authenticate(admin_user)
    pending = api.get("/api/revisions/adjudications/").json()
    assert [a["id"] for a in pending] == [minority.pk]
    assert pending[0]["proposals"][0]["rationale"] == "Generated videos often carry overlays."
    assert api.post(f"/api/revisions/adjudications/{minority.pk}/decide/",
                    {"accept": False, "rationale": ""}, format="json").status_code == 400
    decided = api.post(f"/api/revisions/adjudications/{minority.pk}/decide/",
                       {"accept": False, "rationale": "Not a microscale property."}, format="json")
    assert decided.status_code == 200 and decided.json()["status"] == "rejected"
    assert RevisionRound.objects.get(pk=round.pk).status == "done"


def test_api_flow_create_list_submit(task, round, panel):
    x = crit(round.base_version, "scientific", 4)
    api = APIClient()
    for e in panel:
        api.force_authenticate(e)
        created = api.post(f"/api/revisions/{round.pk}/proposals/",
                           {"op": "weight", "criterion_id": x.pk, "weight": 1.0, "rationale": f"{e.username} agrees",
                            "base_version_id": round.base_version_id}, format="json")
        assert created.status_code == 201, created.content
        assert created.json()["criterion_key"] == "scientific-4"
        result = api.post(f"/api/revisions/{round.pk}/submit/", {"base_version_id": round.base_version_id},
                          format="json")
        assert result.status_code == 200
    body = result.json()
    assert body["aggregated"] is True and body["round"]["status"] == "done"
    assert body["round"]["result_version"] == 3
    again = api.post(f"/api/revisions/{round.pk}/submit/", {}, format="json")
    assert again.status_code == 400
    assert Criterion.objects.get(version__number=3, version__task=task, dimension="scientific",
                                 key_number=4).weight == 1.0
