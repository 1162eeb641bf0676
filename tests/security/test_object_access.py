"""Object access: what one user may read or change of another's work.

* an expert cannot read another expert's undisclosed decision (the item API, the queue page, the votes partial)
  before their own vote, and an expert off the panel cannot read or write the item at all;
* an expert cannot read, delete or submit another expert's revision drafts;
* an expert cannot score, choose or stream media on another expert's human-evaluation items;
* a researcher (or admin) cannot act as an expert on a panel, even when a panel row names them;
* ids of objects a user may not see answer the same as ids that do not exist (no existence leak), and no refusal
  carries the object's data.
"""
from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Assignment, Decision
from judging.models import HumanScore, PairwisePreference
from rubrics.models import RevisionProposal
from tests.security import ADMIN, EXPERT, NOROLE, OTHER, RESEARCHER, login, shared_world

pytestmark = pytest.mark.django_db

world = pytest.fixture(scope="module")(shared_world)

SECRET_VOTE = "SECRET-VOTE-COMMENT-of-expert3"
OTHER_DRAFT = "DRAFT-OF-EXPERT3"


def api_as(user) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


def text(response) -> str:
    return response.content.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------------- decisions


def test_a_panel_expert_cannot_read_another_vote_before_voting(client, world):
    item = world.ids["item_id"]
    expert = world.users[EXPERT]
    response = api_as(expert).get(f"/api/review/items/{item}/")
    assert response.status_code == 200
    body = response.json()
    assert body["others_visible"] is False and body["decisions"] == []
    assert SECRET_VOTE not in text(response) and "expert3" not in text(response)
    login(client, expert)
    page = client.get(reverse("review-queue", args=["task_voting"]), {"item": item})
    assert page.status_code == 200
    assert SECRET_VOTE not in text(page) and "expert3" not in text(page)
    # after their own vote the others' votes are shown (blind review, not secrecy)
    voted = api_as(expert).post(f"/api/review/items/{item}/decision/", {"value": "reject"}, format="json")
    assert voted.status_code == 201
    assert SECRET_VOTE in text(api_as(expert).get(f"/api/review/items/{item}/"))


def test_an_expert_off_the_panel_can_neither_read_nor_vote(client, world):
    item = world.ids["item_id"]
    other = world.users[OTHER]
    api = api_as(other)
    read = api.get(f"/api/review/items/{item}/")
    assert read.status_code == 403 and SECRET_VOTE not in text(read) and "Mitochondria" not in text(read)
    before = Decision.objects.count()
    assert api.post(f"/api/review/items/{item}/decision/", {"value": "keep"}, format="json").status_code == 403
    assert api.post(f"/api/review/items/{item}/pass/", {}, format="json").status_code == 403
    login(client, other)
    assert client.post(f"/review/task_voting/items/{item}/decision/", {"value": "keep"}).status_code == 403
    assert client.post(f"/review/task_voting/items/{item}/pass/").status_code == 403
    assert Decision.objects.count() == before
    assert not Decision.objects.filter(expert=other).exists()
    # the queue page with the item's id shows nothing of it
    page = client.get(reverse("review-queue", args=["task_voting"]), {"item": item})
    assert SECRET_VOTE not in text(page) and "Mitochondrial fission" not in text(page)


def test_an_unknown_item_and_a_foreign_item_look_the_same_to_an_outsider(world):
    api = api_as(world.users[OTHER])
    foreign = api.post(f"/api/review/items/{world.ids['item_id']}/decision/", {"value": "keep"}, format="json")
    missing = api.post("/api/review/items/999999/decision/", {"value": "keep"}, format="json")
    assert foreign.status_code in (403, 404) and missing.status_code in (403, 404)
    assert "Mitochondria" not in text(foreign)


# -------------------------------------------------------------------------------------------- revision drafts


def test_an_expert_sees_only_their_own_drafts(client, world):
    round_id = world.ids["round_id"]
    expert = world.users[EXPERT]
    response = api_as(expert).get(f"/api/revisions/{round_id}/proposals/")
    assert response.status_code == 200
    assert "DRAFT-OF-EXPERT1" in text(response)
    assert OTHER_DRAFT not in text(response) and "expert3 reason" not in text(response)
    login(client, expert)
    page = client.get(reverse("revision-round", args=[round_id]))
    assert page.status_code == 200 and OTHER_DRAFT not in text(page)
    # an expert off the panel sees neither
    outsider = api_as(world.users[OTHER]).get(f"/api/revisions/{round_id}/proposals/")
    assert outsider.status_code == 403 and "DRAFT-OF" not in text(outsider)
    login(client, world.users[OTHER])
    page = client.get(reverse("revision-round", args=[round_id]))
    assert page.status_code == 403 and "DRAFT-OF" not in text(page)


def test_an_expert_cannot_delete_or_submit_another_experts_draft(client, world):
    round_id, theirs = world.ids["round_id"], world.ids["other_proposal_id"]
    expert = world.users[EXPERT]
    assert api_as(expert).delete(f"/api/revisions/{round_id}/proposals/{theirs}/").status_code == 404
    login(client, expert)
    client.post(reverse("revision-proposal-delete", args=[round_id, theirs]))
    proposal = RevisionProposal.objects.get(pk=theirs)
    assert proposal.status == RevisionProposal.Status.DRAFT
    # submitting one's own drafts leaves the other expert's drafts as drafts
    assert api_as(expert).post(f"/api/revisions/{round_id}/submit/", {}, format="json").status_code == 200
    proposal.refresh_from_db()
    assert proposal.status == RevisionProposal.Status.DRAFT
    # an outsider cannot delete the panel's drafts either
    mine = world.ids["proposal_id"]
    assert api_as(world.users[OTHER]).delete(f"/api/revisions/{round_id}/proposals/{mine}/").status_code == 403
    assert RevisionProposal.objects.filter(pk=mine).exists()


def test_an_expert_off_the_panel_cannot_propose(world):
    round_ = world.objects["round"]
    criterion = world.objects["criterion"]
    before = RevisionProposal.objects.count()
    response = api_as(world.users[OTHER]).post(f"/api/revisions/{round_.pk}/proposals/", {
        "op": "delete", "criterion": criterion.pk, "rationale": "I am not on this panel",
        "base_version_id": round_.base_version_id}, format="json")
    assert response.status_code == 403
    assert RevisionProposal.objects.count() == before


# ------------------------------------------------------------------------------------------ human evaluation


def test_human_scores_and_choices_are_the_assigned_experts_only(client, world):
    other = world.users[OTHER]
    video = world.objects["generated_video"]
    criteria = video.task.current_rubric.criteria.all()
    login(client, other)
    data = {f"c_{c.pk}": "1" for c in criteria}
    assert client.post(reverse("judging-human-submit", args=[world.ids["human_item_id"]]), data).status_code == 403
    assert client.post(reverse("judging-pairwise-submit", args=[world.ids["pair_item_id"]]),
                       {"choice": "left"}).status_code == 403
    assert not HumanScore.objects.filter(expert=other).exists()
    assert not PairwisePreference.objects.filter(expert=other).exists()
    # the assigned expert's media link does not work for another expert, nor does a forged one
    assert client.get(reverse("judging-media", args=[world.ids["token"]])).status_code == 403
    assert client.get(reverse("judging-media", args=["WzEsMV0:forged:signature"])).status_code == 403
    # another expert's queue never shows the assigned expert's scores
    HumanScore.objects.bulk_create(HumanScore(expert=world.users[EXPERT], video=video, criterion=c, score=1)
                                   for c in criteria)
    page = client.get(reverse("judging-human"))
    assert page.status_code == 200 and "SecretModelAlpha" not in text(page)
    assert "HiddenModelBeta" not in text(client.get(reverse("judging-pairwise")))


# ------------------------------------------------------------------------------------ researchers and admins


def test_a_researcher_on_a_panel_row_still_cannot_act_as_an_expert(client, world):
    """The service refuses to put a non-expert on a panel; even a row written around it grants nothing."""
    researcher = world.users[RESEARCHER]
    item = world.objects["item"]
    Assignment.objects.create(item=item, expert=researcher, position=99)
    api = api_as(researcher)
    assert api.get(f"/api/review/items/{item.pk}/").status_code == 403
    assert api.post(f"/api/review/items/{item.pk}/decision/", {"value": "keep"}, format="json").status_code == 403
    login(client, researcher)
    assert client.post(f"/review/task_voting/items/{item.pk}/decision/", {"value": "keep"}).status_code == 403
    assert client.get(reverse("review-queue", args=["task_voting"])).status_code == 403
    round_id = world.ids["round_id"]
    assert api.get(f"/api/revisions/{round_id}/proposals/").status_code == 403
    assert api.post(f"/api/revisions/{round_id}/submit/", {}, format="json").status_code == 403
    assert client.post(reverse("judging-human-submit", args=[world.ids["human_item_id"]])).status_code == 403
    assert not Decision.objects.filter(expert=researcher).exists()


def test_an_admin_reads_every_item_but_does_not_vote_for_the_panel(world):
    admin = api_as(world.users[ADMIN])
    item = world.ids["item_id"]
    assert admin.get(f"/api/review/items/{item}/").status_code == 200
    assert admin.post(f"/api/review/items/{item}/decision/", {"value": "keep"}, format="json").status_code == 403
    assert not Decision.objects.filter(expert=world.users[ADMIN]).exists()


def test_ids_of_objects_a_role_may_not_see_answer_like_missing_ones(world):
    """403 whether or not the object exists (no probing for ids), and the refusal carries none of its data."""
    expert = api_as(world.users[EXPERT])
    for existing, missing in [(f"/api/videos/{world.ids['video_id']}/", "/api/videos/999999/"),
                              (f"/api/jobs/{world.ids['job_id']}/", "/api/jobs/999999/"),
                              (f"/api/exports/{world.ids['export_id']}/", "/api/exports/999999/")]:
        a, b = expert.get(existing), expert.get(missing)
        assert a.status_code == b.status_code == 403, existing
        assert a.json() == b.json()
    nobody = api_as(world.users[NOROLE])
    assert nobody.get("/api/tasks/1/").status_code == nobody.get("/api/tasks/99999/").status_code == 403


def test_only_admins_change_roles_and_nobody_grants_themselves_one(client, world):
    for role in (EXPERT, RESEARCHER, NOROLE):
        user = world.users[role]
        login(client, user)
        assert client.post(reverse("user-set-roles", args=[user.pk]), {"roles": ["admin"]}).status_code == 403
        assert not user.groups.filter(name="admin").exists()


def test_caption_regenerate_does_not_redirect_off_site(client, world):
    login(client, world.users[RESEARCHER])
    response = client.post(reverse("caption-regenerate", args=[world.ids["clip_id"]]),
                           {"next": "https://evil.example/phish"})
    assert not response.url.startswith(("http://", "https://", "//"))
