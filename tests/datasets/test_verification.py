"""Clip verification: items for kept clips, blind 2-of-3 decisions with rejection reasons and micro labels, the outcome
(verified / dropped by experts) and its selectors, the expert queue page, and agreement for the workflow."""
from __future__ import annotations

import hashlib
import itertools

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.urls import include, path

from annotation import agreement_data, services
from annotation.models import ActionLog, Decision, ReviewItem, Workflow
from datasets import verification
from datasets.models import Clip, SourceVideo

pytestmark = pytest.mark.django_db

# The site's URLs plus the caption pages (until microverse_site/urls.py includes datasets.review_urls, the same
# routes come from here; once it does, the first match is the site's own and nothing changes).
urlpatterns = [path("", include("microverse_site.urls")), path("", include("datasets.review_urls"))]

QUEUE = "/review/clip_verification/"
_sha = itertools.count(1)


def make_video(title: str = "Neutrophil chasing a bacterium", description: str = "A classic 1950s film.",
               **fields) -> SourceVideo:
    n = next(_sha)
    return SourceVideo.objects.create(title=title, description=description, license="CC BY 4.0",
                                      sha256=hashlib.sha256(f"video-{n}".encode()).hexdigest(),
                                      file=f"videos/test-{n}.mp4", width=160, height=120, fps=12.0,
                                      frame_count=240, duration=20.0, codec="h264", **fields)


def make_clip(video: SourceVideo | None = None, *, position: int = 0, verdict: str = Clip.Verdict.KEPT,
              **fields) -> Clip:
    video = video or make_video()
    start = position * 24
    defaults = dict(fps=12.0, embedder="frame-histogram", micro_probability=0.91, classifier_version="tiny-v1",
                    border_top=0.0, border_bottom=0.0, border_left=0.01, border_right=0.0, text_area_fraction=0.0)
    defaults.update(fields)
    return Clip.objects.create(video=video, position=position, start_frame=start, end_frame=start + 24,
                               verdict=verdict, **defaults)


def open_item(clip: Clip, experts, admin) -> ReviewItem:
    verification.verification_open(clip_ids=[clip.pk])
    item = verification.items().get(object_id=clip.pk)
    services.panel_assign(item=item, experts=experts, assigned_by=admin)
    return item


@pytest.fixture
def panel(expert, expert2, expert3, admin_user):
    return [expert, expert2, expert3]


# ------------------------------------------------------------------------------------------------------ items


def test_items_open_for_kept_clips_only_once(admin_user):
    video = make_video()
    kept = make_clip(video, position=0)
    make_clip(video, position=1, verdict=Clip.Verdict.DROPPED, micro_probability=0.1)
    make_clip(video, position=2, verdict=Clip.Verdict.PENDING, text_area_fraction=None)
    assert verification.verification_open(user=admin_user) == 1
    assert verification.verification_open(user=admin_user) == 0  # idempotent
    items = list(verification.items())
    assert [(i.object_id, i.status) for i in items] == [(kept.pk, ReviewItem.Status.OPEN)]
    assert ActionLog.objects.filter(verb="verification_open").count() == 1
    counts = verification.counts()
    assert counts["kept_clips"] == 1 and counts["not_opened"] == 0 and counts["open"] == 1
    assert counts["unassigned"] == 1


# -------------------------------------------------------------------------------------------------- decisions


def test_two_keeps_of_three_verify_the_clip_with_the_majority_micro_label(panel, admin_user):
    one, two, three = panel
    clip = make_clip()
    item = open_item(clip, panel, admin_user)
    first = verification.decision_submit(item=item, expert=one, value="keep", micro="true")
    assert first.outcome == "open" and first.decision.extra == {"micro": True}
    assert verification.expert_outcome(clip)["status"] == ReviewItem.Status.OPEN
    second = verification.decision_submit(item=item, expert=two, value="keep")  # unset: a kept clip is micro
    assert second.outcome == "accepted" and second.decision.extra == {"micro": True}
    # the third vote still counts for agreement and labels, not for the (locked) outcome
    third = verification.decision_submit(item=item, expert=three, value="reject", reason="meaningless")
    assert third.outcome == "accepted" and third.decision.extra == {}

    item.refresh_from_db()
    assert item.status == ReviewItem.Status.ACCEPTED
    assert list(verification.verified_clips()) == [clip] and not verification.rejected_clips().exists()
    assert verification.is_verified(clip.pk)
    log = ActionLog.objects.get(verb="clip_verified")
    assert log.item_id == item.pk and log.after == {"clip": clip.pk, "video": clip.video_id, "micro": True}
    assert verification.micro_labels() == {clip.pk: True}
    outcome = verification.expert_outcome(clip)
    assert (outcome["status"], outcome["keeps"], outcome["rejects"], outcome["micro"]) == ("accepted", 2, 1, True)
    clip.refresh_from_db()
    assert clip.verdict == Clip.Verdict.KEPT  # the pipeline's verdict is the pipeline's


def test_two_rejections_drop_the_clip_with_the_majority_reason_and_non_micro_label(panel, admin_user):
    one, two, three = panel
    clip = make_clip()
    item = open_item(clip, panel, admin_user)
    verification.decision_submit(item=item, expert=one, value="reject", reason="not_microscale")
    verification.decision_submit(item=item, expert=two, value="keep")
    result = verification.decision_submit(item=item, expert=three, value="reject", reason="not_microscale",
                                          note="A whole mouse, not a cell.")
    assert result.outcome == "rejected"
    decisions = {d.expert_id: d for d in Decision.objects.filter(item=item)}
    assert decisions[one.pk].extra == {"micro": False} and decisions[two.pk].extra == {"micro": True}
    assert decisions[three.pk].comment == "A whole mouse, not a cell."
    log = ActionLog.objects.get(verb="clip_dropped_by_experts")
    assert log.after["reason"] == "not_microscale" and log.after["reasons"] == {"not_microscale": 2}
    assert list(verification.rejected_clips()) == [clip] and not verification.verified_clips().exists()
    outcome = verification.expert_outcome(clip)
    assert outcome["status"] == "rejected" and outcome["reason"] == "not_microscale" and outcome["micro"] is False
    assert verification.micro_labels() == {clip.pk: False}
    assert verification.rejection_reason_counts()["not_microscale"] == 1


def test_the_majority_reason_is_the_most_given_then_the_first_given(panel, admin_user):
    one, two, three = panel
    clip = make_clip()
    item = open_item(clip, panel, admin_user)
    verification.decision_submit(item=item, expert=one, value="reject", reason="text_or_borders")
    verification.decision_submit(item=item, expert=two, value="reject", reason="physically_inconsistent")
    assert ActionLog.objects.get(verb="clip_dropped_by_experts").after["reason"] == "text_or_borders"
    verification.decision_submit(item=item, expert=three, value="reject", reason="physically_inconsistent")
    assert verification.expert_outcome(clip)["reason"] == "physically_inconsistent"  # read now: 2 against 1


@pytest.mark.parametrize("fields, message", [
    ({"value": "reject", "reason": "other"}, "needs a note"),
    ({"value": "reject", "reason": "other", "note": "   "}, "needs a note"),
    ({"value": "reject"}, "Choose a rejection reason"),
    ({"value": "reject", "reason": "ugly"}, "Choose a rejection reason"),
    ({"value": "maybe"}, "keep or reject"),
    ({"value": "keep", "reason": "meaningless"}, "no rejection reason"),
    ({"value": "keep", "micro": "false"}, "kept clip is microscale"),
    ({"value": "reject", "reason": "not_microscale", "micro": True}, "cannot be labelled micro"),
    ({"value": "keep", "micro": "perhaps"}, "micro or non-micro"),
])
def test_invalid_decisions_are_refused_and_record_nothing(panel, admin_user, fields, message):
    clip = make_clip()
    item = open_item(clip, panel, admin_user)
    with pytest.raises(ValidationError, match=message):
        verification.decision_submit(item=item, expert=panel[0], **fields)
    assert not Decision.objects.exists()


def test_other_with_a_note_and_an_explicit_label_is_taken(panel, admin_user):
    clip = make_clip()
    item = open_item(clip, panel, admin_user)
    result = verification.decision_submit(item=item, expert=panel[0], value="reject", reason="other",
                                          note="Loops back to the start mid-division.", micro="false")
    decision = result.decision
    assert (decision.value, decision.reason, decision.comment, decision.extra) == (
        "reject", "other", "Loops back to the start mid-division.", {"micro": False})
    with pytest.raises(ValidationError):
        verification.decision_submit(item=ReviewItem.objects.create(
            workflow=Workflow.TASK_VOTING, content_type=item.content_type, object_id=clip.pk),
            expert=panel[0], value="keep")


# -------------------------------------------------------------------------------------------------- the page


def hx(client, url, data=None):
    headers = {"HTTP_HX_REQUEST": "true"}
    return client.post(url, data, **headers) if data is not None else client.get(url, **headers)


@pytest.mark.urls(__name__)
def test_queue_page_shows_the_clip_and_its_stage_results_and_stays_blind(client, panel, admin_user):
    one, two, _ = panel
    video = make_video(title="Kinesin walking on a microtubule", description="Animation by a cell biology lab.")
    clip = make_clip(video, micro_probability=None, classifier_version="", text_found="", file="clips/k/0.mp4")
    item = open_item(clip, panel, admin_user)

    client.force_login(one)
    page = client.get(QUEUE)
    html = page.content.decode()
    assert page.status_code == 200
    assert "Kinesin walking on a microtubule" in html and "Animation by a cell biology lab." in html
    assert 'src="/media/clips/k/0.mp4"' in html and "autoplay loop muted playsinline controls" in html
    assert "unclassified" in html and "left 1.0%" in html
    for n, (_, label) in enumerate(verification.REASONS, start=1):
        assert label in html and f'data-reason-key="{n}"' in html

    # "other" without a note: refused, and the same clip comes back with what was typed
    refused = hx(client, f"/review/clip_verification/items/{item.pk}/decision/",
                 {"value": "reject", "reason": "other", "note": "", "micro": "false"})
    html = refused.content.decode()
    assert refused.status_code == 200 and "Not saved" in html and "needs a note" in html
    assert f'data-item="{item.pk}"' in html and not Decision.objects.exists()

    saved = hx(client, f"/review/clip_verification/items/{item.pk}/decision/",
               {"value": "reject", "reason": "other", "note": "Rendered, not filmed", "micro": "false"})
    assert "Saved: reject (Other (note required)), non-micro." in saved.content.decode()

    client.force_login(two)
    html = client.get(QUEUE).content.decode()
    assert f'data-item="{item.pk}"' in html
    assert "Rendered, not filmed" not in html and "expert1" not in html  # blind until expert2 decides
    html = hx(client, f"/review/clip_verification/items/{item.pk}/decision/", {"value": "keep", "micro": ""}
              ).content.decode()
    assert "Saved: keep, micro." in html and "Rendered, not filmed" in html  # now the others' votes show


@pytest.mark.urls(__name__)
def test_review_home_links_the_new_queues_and_panels_stay_task_voting_only(client, expert, admin_user):
    client.force_login(expert)
    html = client.get("/review/").content.decode()
    assert 'href="/review/clip_verification/"' in html and 'href="/review/caption_check/"' in html
    client.force_login(admin_user)
    assert client.get("/review/clip_verification/panels/").status_code == 404
    assert client.get("/review/task_voting/panels/").status_code == 200


@pytest.mark.urls(__name__)
def test_researchers_open_items_and_admins_assign_from_the_captions_page(client, researcher, panel, admin_user):
    make_clip()
    client.force_login(researcher)
    page = client.get("/captions/")
    assert page.status_code == 200 and 'data-count="not_opened"><strong>1</strong>' in page.content.decode()
    client.post("/captions/verification/open/")
    assert verification.items().count() == 1
    assert client.post("/captions/assign/clip_verification/").status_code == 403  # admins only
    client.force_login(admin_user)
    client.post("/captions/assign/clip_verification/")
    assert verification.items().get().assignments.count() == 3


# -------------------------------------------------------------------------------------------------- agreement


@pytest.mark.urls(__name__)
def test_agreement_report_for_clip_verification_has_numbers(client, panel, admin_user):
    cache.clear()
    votes = [  # one row per clip: the three experts' decisions
        ("keep", "keep", "keep"), ("reject", "reject", "keep"), ("keep", "keep", "reject"),
        ("reject", "reject", "reject"), ("keep", "reject", "keep"), ("reject", "reject", "reject"),
    ]
    video = make_video()
    for position, row in enumerate(votes):
        item = open_item(make_clip(video, position=position), panel, admin_user)
        for expert, value in zip(panel, row):
            verification.decision_submit(item=item, expert=expert, value=value,
                                         reason="meaningless" if value == "reject" else "")
    report = agreement_data.workflow_agreement(Workflow.CLIP_VERIFICATION, bootstrap=50)
    assert report["n_items"] == 6 and report["n_ratings"] == 18 and report["panel_size"] == 3
    assert report["categories"] == ["keep", "reject"]
    assert report["fleiss"]["kappa"] is not None and report["krippendorff"]["alpha"] is not None
    assert len(report["pairwise"]) == 3 and all(p["kappa"] is not None for p in report["pairwise"])
    assert 0 < report["percent_agreement"]["value"] < 100

    client.force_login(admin_user)
    html = client.get("/manage/agreement/?workflow=clip_verification").content.decode()
    assert "Clip verification: 18 decisions on 6 items by 3 experts" in html


@pytest.mark.urls(__name__)
def test_an_expert_can_be_served_the_clips_the_classifier_is_least_sure_of_first(client, expert, admin_user):
    video = make_video()
    probabilities = [0.95, 0.52, 0.10, None, 0.61]
    items = [open_item(make_clip(video, position=i, micro_probability=p), [expert], admin_user)
             for i, p in enumerate(probabilities)]
    client.force_login(expert)
    queue_order = client.get("/review/clip_verification/").context["item"]
    assert queue_order.pk == items[0].pk  # the queue's own order: first assigned first
    least_sure = client.get("/review/clip_verification/", {"order": "least-sure"}).context["item"]
    assert least_sure.pk == items[1].pk  # p = 0.52 is closest to 0.5
    # The choice is remembered: after deciding, the next served is the next least sure (p = 0.61), not the queue's.
    response = client.post(f"/review/clip_verification/items/{items[1].pk}/decision/",
                           {"value": "keep", "micro": "1"}, HTTP_HX_REQUEST="true")
    assert response.context["item"].pk == items[4].pk
    assert client.get("/review/clip_verification/", {"order": ""}).context["item"].pk == items[0].pk
