"""Human evaluation: sampling and assignments, criterion-by-criterion scoring, blind pairwise choices (side mapping,
ratios with Wilson intervals), the blind expert pages and the token-guarded media view."""
from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.urls import reverse
from statsmodels.stats.proportion import proportion_confint

from annotation.models import ActionLog, Assignment, ReviewItem
from judging import human
from judging.models import GeneratedVideo, HumanScore, ModelUnderTest, PairwiseComparison, PairwisePreference
from rubrics.models import BenchmarkTask
from tests.helpers import import_release_subset

MODEL_NAMES = ("SecretModelAlpha", "HiddenModelBeta")
VIDEO_BYTES = bytes(range(256)) * 40  # 10,240 bytes; the media view does not parse it


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    return settings.MEDIA_ROOT


@pytest.fixture
def videos(db, tmp_path, media_root):
    """Two models, one video each for tasks 1, 2, 3 and 277 stored as <ModelName>/<index>.mp4."""
    import_release_subset(tmp_path, (1, 2, 3, 277))
    made = {}
    for name in MODEL_NAMES:
        model = ModelUnderTest.objects.create(name=name)
        for task in BenchmarkTask.objects.order_by("index"):
            video = GeneratedVideo(model=model, task=task)
            video.file.save(f"{name}/{task.index}.mp4", ContentFile(VIDEO_BYTES), save=True)
            made[(name, task.index)] = video
    return made


def all_scores(video, value=1):
    return {c.pk: value for c in human.video_criteria(video)}


# ------------------------------------------------------------------------------------------------- sampling


def test_sample_is_seeded_assigns_two_experts_and_is_idempotent(videos, expert, expert2, expert3, admin_user):
    first = human.human_eval_sample(n=3, seed=7, assigned_by=admin_user)
    assert len(first) == 3
    items = ReviewItem.objects.filter(workflow="human_eval")
    assert items.count() == 3
    assert all(item.assignments.count() == 2 for item in items)
    loads = sorted(Assignment.objects.filter(item__workflow="human_eval").values_list("expert_id", flat=True))
    assert max(loads.count(e) for e in set(loads)) - min(loads.count(e) for e in set(loads)) <= 1  # balanced
    again = human.human_eval_sample(n=3, seed=7, assigned_by=admin_user)
    assert [v.pk for v in again] == [v.pk for v in first]
    assert Assignment.objects.filter(item__workflow="human_eval").count() == 6
    assert ActionLog.objects.filter(verb="human_eval_sample").count() == 2
    beta = ModelUnderTest.objects.get(name="HiddenModelBeta")
    only_beta = human.human_eval_sample(n=10, seed=1, models=[beta])
    assert {v.model_id for v in only_beta} == {beta.pk} and len(only_beta) == 4


def test_sample_skips_unreadable_videos(videos, expert):
    GeneratedVideo.objects.exclude(pk=videos[(MODEL_NAMES[0], 1)].pk).update(status="missing")
    assert [v.pk for v in human.human_eval_sample(n=5, seed=0, experts_per_item=1)] == [
        videos[(MODEL_NAMES[0], 1)].pk]


# --------------------------------------------------------------------------------------------- scoring a video


@pytest.fixture
def assigned(videos, expert, expert2):
    video = videos[(MODEL_NAMES[0], 1)]
    item = ReviewItem.objects.create(workflow="human_eval", content_type_id=_ct(GeneratedVideo), object_id=video.pk)
    for n, who in enumerate((expert, expert2), start=1):
        Assignment.objects.create(item=item, expert=who, position=n)
    return video


def _ct(model):
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.get_for_model(model).pk


def test_score_requires_every_criterion(assigned, expert):
    scores = all_scores(assigned)
    assert len(scores) == 15
    missing = dict(list(scores.items())[1:])
    with pytest.raises(ValidationError, match="1 of 15 missing"):
        human.human_score_submit(expert=expert, video=assigned, scores=missing)
    with pytest.raises(ValidationError, match="not in this video's rubric"):
        human.human_score_submit(expert=expert, video=assigned, scores={**scores, 999999: 1})
    with pytest.raises(ValidationError, match="0 or 1"):
        human.human_score_submit(expert=expert, video=assigned, scores={**scores, next(iter(scores)): 2})
    with pytest.raises(ValidationError, match="0 or 1"):
        human.human_score_submit(expert=expert, video=assigned, scores={**scores, next(iter(scores)): True})
    assert HumanScore.objects.count() == 0


def test_double_submit_keeps_one_row_per_criterion_and_logs(assigned, expert):
    human.human_score_submit(expert=expert, video=assigned, scores=all_scores(assigned, 1))
    human.human_score_submit(expert=expert, video=assigned, scores=all_scores(assigned, 1))  # identical: no log
    changed = {**all_scores(assigned, 1), next(iter(all_scores(assigned))): "0"}
    human.human_score_submit(expert=expert, video=assigned, scores=changed)
    rows = HumanScore.objects.filter(expert=expert, video=assigned)
    assert rows.count() == 15
    assert sorted(rows.values_list("score", flat=True)) == [0] + [1] * 14
    logs = ActionLog.objects.filter(verb="human_score").order_by("id")
    assert logs.count() == 2
    assert logs[0].before is None and logs[1].before is not None
    assert Assignment.objects.get(expert=expert, item__object_id=assigned.pk).status == "done"


def test_unassigned_expert_cannot_score(assigned, expert3):
    with pytest.raises(PermissionDenied):
        human.human_score_submit(expert=expert3, video=assigned, scores=all_scores(assigned))


# --------------------------------------------------------------------------------------------------- pairwise


@pytest.fixture
def comparison(videos, expert, expert2):
    task = BenchmarkTask.objects.get(index=1)
    return human.pairwise_create(task=task, video_a=videos[(MODEL_NAMES[0], 1)], video_b=videos[(MODEL_NAMES[1], 1)],
                                 experts=[expert, expert2])


def test_pairwise_create_is_idempotent_and_checks_videos(comparison, videos, expert):
    again = human.pairwise_create(task=comparison.task, video_a=comparison.video_b, video_b=comparison.video_a,
                                  experts=[expert])
    assert again.pk == comparison.pk and PairwiseComparison.objects.count() == 1
    assert Assignment.objects.filter(item__workflow="pairwise").count() == 2
    with pytest.raises(ValidationError):
        human.pairwise_create(task=comparison.task, video_a=videos[(MODEL_NAMES[0], 1)],
                              video_b=videos[(MODEL_NAMES[0], 2)])


@pytest.mark.parametrize("a_left", [True, False])
def test_pairwise_side_maps_back_to_a_and_b(comparison, expert, monkeypatch, a_left):
    monkeypatch.setattr(human, "a_shown_left", lambda **kwargs: a_left)
    left, right = human.shown_videos(expert=expert, comparison=comparison)
    assert (left, right) == ((comparison.video_a, comparison.video_b) if a_left
                             else (comparison.video_b, comparison.video_a))
    preference = human.pairwise_submit(expert=expert, comparison=comparison, choice_left_right="left")
    assert preference.a_shown_left is a_left
    assert preference.choice == ("a" if a_left else "b")
    preference = human.pairwise_submit(expert=expert, comparison=comparison, choice_left_right="right")
    assert preference.choice == ("b" if a_left else "a")
    assert human.pairwise_submit(expert=expert, comparison=comparison, choice_left_right="tie").choice == "tie"
    assert PairwisePreference.objects.filter(expert=expert).count() == 1
    assert ActionLog.objects.filter(verb="pairwise_choice").count() == 3
    with pytest.raises(ValidationError):
        human.pairwise_submit(expert=expert, comparison=comparison, choice_left_right="a")


def test_side_is_stable_per_expert_and_varies(comparison, videos, make_user):
    experts = [make_user(f"side{n}", "expert") for n in range(12)]
    sides = {human.a_shown_left(expert=e, comparison=comparison) for e in experts}
    assert sides == {True, False}
    assert all(human.a_shown_left(expert=e, comparison=comparison) == human.a_shown_left(expert=e,
                                                                                         comparison=comparison)
               for e in experts)


def test_unassigned_expert_cannot_choose(comparison, expert3):
    with pytest.raises(PermissionDenied):
        human.pairwise_submit(expert=expert3, comparison=comparison, choice_left_right="tie")


def test_pairwise_results_ratios_and_wilson(videos, make_user, monkeypatch):
    panel = [make_user(f"p{n}", "expert") for n in range(5)]
    task = BenchmarkTask.objects.get(index=1)  # Cellular
    organ = BenchmarkTask.objects.get(index=277)
    c1 = human.pairwise_create(task=task, video_a=videos[(MODEL_NAMES[0], 1)], video_b=videos[(MODEL_NAMES[1], 1)],
                               experts=panel)
    c2 = human.pairwise_create(task=organ, video_a=videos[(MODEL_NAMES[1], 277)],
                               video_b=videos[(MODEL_NAMES[0], 277)], experts=panel[:2])
    monkeypatch.setattr(human, "a_shown_left", lambda **kwargs: True)  # left = A
    for who, side in zip(panel, ("left", "left", "left", "right", "tie")):  # Alpha (A) 3, Beta 1, tie 1
        human.pairwise_submit(expert=who, comparison=c1, choice_left_right=side)
    for who in panel[:2]:  # Beta is A here and wins both
        human.pairwise_submit(expert=who, comparison=c2, choice_left_right="left")
    results = human.pairwise_results()
    alpha, beta = sorted(MODEL_NAMES)[1], sorted(MODEL_NAMES)[0]  # "HiddenModelBeta" sorts first
    row = results["all"][0]
    assert (row["first"], row["second"]) == (beta, alpha)
    assert row["n"] == 7
    assert (row["first_wins"]["count"], row["second_wins"]["count"], row["ties"]["count"]) == (3, 3, 1)
    assert (row["second_wins"]["ci_low"], row["second_wins"]["ci_high"]) == pytest.approx(
        proportion_confint(3, 7, method="wilson"))
    cellular = results["Cellular-level"][0]
    assert (cellular["first_wins"]["count"], cellular["second_wins"]["count"], cellular["ties"]["ratio"]) == (
        1, 3, 0.2)
    organ_row = results["Organ-level"][0]
    assert organ_row["first_wins"]["ratio"] == 1.0
    assert organ_row["first_wins"]["ci_low"] == pytest.approx(proportion_confint(2, 2, method="wilson")[0])


# ------------------------------------------------------------------------------------------------------ pages


def _assert_blind(html: str):
    for name in MODEL_NAMES:
        assert name not in html
    assert ".mp4" not in html and "generated/" not in html


def test_expert_scoring_page_is_blind_and_saves(client, assigned, expert):
    client.force_login(expert)
    response = client.get(reverse("judging-human"))
    html = response.content.decode()
    assert response.status_code == 200
    _assert_blind(html)
    assert "<video" in html and "loop" in html and "autoplay" in html and "muted" in html
    assert assigned.task.prompt in html
    criteria = human.video_criteria(assigned)
    assert all(f'name="c_{c.pk}"' in html for c in criteria)
    url = reverse("judging-human-submit", args=[ReviewItem.objects.get(workflow="human_eval").pk])
    partial = client.post(url, {f"c_{c.pk}": "1" for c in criteria[1:]}, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "Not saved" in partial.content.decode()
    assert HumanScore.objects.count() == 0
    saved = client.post(url, {f"c_{c.pk}": "1" for c in criteria}, HTTP_HX_REQUEST="true")
    body = saved.content.decode()
    assert "Saved." in body and 'id="queue-done"' in body
    _assert_blind(body)
    assert HumanScore.objects.filter(expert=expert).count() == 15


def test_researchers_and_admins_do_not_score(client, assigned, researcher, admin_user):
    for user in (researcher, admin_user):
        client.force_login(user)
        assert client.get(reverse("judging-human")).status_code == 403
        assert client.get(reverse("judging-pairwise")).status_code == 403


def test_media_view_serves_assigned_expert_only_with_ranges(client, assigned, expert, expert3):
    token = human.media_token(expert=expert, video=assigned)
    url = reverse("judging-media", args=[token])
    _assert_blind(url)
    client.force_login(expert)
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == VIDEO_BYTES
    assert response["Content-Type"] == "video/mp4" and "Content-Disposition" not in response
    ranged = client.get(url, HTTP_RANGE="bytes=100-199")
    assert ranged.status_code == 206 and b"".join(ranged.streaming_content) == VIDEO_BYTES[100:200]
    assert ranged["Content-Range"] == f"bytes 100-199/{len(VIDEO_BYTES)}"
    assert client.get(url, HTTP_RANGE="bytes=999999-").status_code == 416
    client.force_login(expert3)  # not assigned, and the token is not theirs
    assert client.get(url).status_code == 403
    assert client.get(reverse("judging-media", args=[human.media_token(expert=expert3, video=assigned)])
                      ).status_code == 403
    assert client.get(reverse("judging-media", args=["garbage"])).status_code == 403


def test_pairwise_page_is_blind_and_records_choice(client, comparison, expert):
    client.force_login(expert)
    html = client.get(reverse("judging-pairwise")).content.decode()
    _assert_blind(html)
    assert html.count("<video") == 2 and 'data-hotkey="a"' in html and 'data-hotkey="t"' in html
    item = ReviewItem.objects.get(workflow="pairwise")
    response = client.post(reverse("judging-pairwise-submit", args=[item.pk]), {"choice": "left"},
                           HTTP_HX_REQUEST="true")
    _assert_blind(response.content.decode())
    preference = PairwisePreference.objects.get(expert=expert)
    expected = "a" if human.a_shown_left(expert=expert, comparison=comparison) else "b"
    assert preference.choice == expected


# ------------------------------------------------------------------------------------------- the sampling page


def test_an_admin_samples_videos_and_comparisons_from_the_page(client, videos, admin_user, expert, expert2, expert3,
                                                               django_assert_max_num_queries):
    client.force_login(admin_user)
    page = client.get(reverse("judging-human-sample"))
    assert page.status_code == 200
    assert [m.name for m in page.context["status"]["models"]] == sorted(MODEL_NAMES)
    assert page.context["status"]["scores"] == {"items": 0, "assigned": 0, "done": 0, "passed": 0}

    sent = client.post(reverse("judging-human-sample"), {"kind": "scores", "n": 3, "seed": 7, "experts_per_item": 2})
    assert sent.status_code == 302
    assert ReviewItem.objects.filter(workflow="human_eval").count() == 3
    assert Assignment.objects.filter(workflow="human_eval").count() == 6
    # the page's sample is the service's sample (same seed, same videos)
    sampled = set(ReviewItem.objects.filter(workflow="human_eval").values_list("object_id", flat=True))
    assert sampled == {v.pk for v in human.human_eval_sample(n=3, seed=7)}
    assert ActionLog.objects.filter(verb="human_eval_sample", actor=admin_user).count() == 1

    alpha, beta = ModelUnderTest.objects.order_by("name")
    sent = client.post(reverse("judging-human-sample"), {"kind": "pairwise", "models": [alpha.pk, beta.pk], "n": 2,
                                                         "seed": 1, "experts_per_item": 3})
    assert sent.status_code == 302
    assert PairwiseComparison.objects.count() == 2
    assert Assignment.objects.filter(workflow="pairwise").count() == 6
    with django_assert_max_num_queries(12):
        page = client.get(reverse("judging-human-sample"))
    status = page.context["status"]
    assert status["scores"]["items"] == 3 and status["scores"]["assigned"] == 6
    assert status["pairwise"] == {"items": 2, "assigned": 6, "done": 0, "passed": 0}
    assert sum(m.sampled for m in status["models"]) == 3 and all(m.readable == 4 for m in status["models"])
    assert "2 pairwise comparison(s) sampled" in page.content.decode()


def test_a_refused_sample_says_why_and_assigns_nothing(client, videos, admin_user, expert):
    client.force_login(admin_user)
    alpha = ModelUnderTest.objects.order_by("name").first()
    url = reverse("judging-human-sample")
    for data, reason in [({"kind": "pairwise", "models": [alpha.pk], "n": 2, "seed": 1, "experts_per_item": 1},
                          "at least two models"),
                         ({"kind": "scores", "n": 0, "seed": 1, "experts_per_item": 1}, "greater than or equal to 1"),
                         ({"kind": "scores", "n": "many", "seed": 1, "experts_per_item": 1}, "whole number"),
                         ({"kind": "scores", "models": [99999], "n": 2, "seed": 1, "experts_per_item": 1},
                          "valid choice")]:
        answer = client.post(url, data)
        assert answer.status_code == 400 and reason in answer.content.decode(), data
    # no active expert: the service refuses, the page shows it
    expert.is_active = False
    expert.save()
    answer = client.post(url, {"kind": "scores", "n": 2, "seed": 1, "experts_per_item": 1})
    assert answer.status_code == 400 and "no active experts" in answer.content.decode()
    assert not ReviewItem.objects.filter(workflow__in=["human_eval", "pairwise"]).exists()
    assert not Assignment.objects.exists()
