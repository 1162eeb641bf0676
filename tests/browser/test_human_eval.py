"""An expert scores a generated video criterion by criterion and makes a blind pairwise choice, keyboard only, in
headless Chromium; the model names appear nowhere: not in the HTML, not in any URL the page requested."""
from __future__ import annotations

import shutil

import pytest
from django.core.files import File

from annotation.models import ReviewItem
from datasets.video_io import make_test_video
from judging import human
from judging.models import GeneratedVideo, HumanScore, ModelUnderTest, PairwisePreference
from rubrics.models import BenchmarkTask
from tests.helpers import import_release_subset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MODEL_NAMES = ("SecretModelAlpha", "HiddenModelBeta")


@pytest.fixture
def setup(settings, tmp_path, expert, admin_user):
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    import_release_subset(tmp_path / "release", (1,))
    task = BenchmarkTask.objects.get(index=1)
    clip = make_test_video(tmp_path / "clip.mp4", frames=12, size=(160, 120), fps=12)
    videos = []
    for name in MODEL_NAMES:
        video = GeneratedVideo(model=ModelUnderTest.objects.create(name=name), task=task)
        with open(clip, "rb") as handle:
            video.file.save(f"{name}/1.mp4", File(handle), save=True)
        videos.append(video)
    human.human_eval_sample(n=1, seed=3, models=[videos[0].model], experts_per_item=1, assigned_by=admin_user)
    comparison = human.pairwise_create(task=task, video_a=videos[0], video_b=videos[1], experts=[expert])
    return {"task": task, "videos": videos, "comparison": comparison}


def assert_blind(page, requested: list[str]):
    html = page.content()
    for name in MODEL_NAMES:
        assert name not in html
        assert not [url for url in requested if name in url], requested
    assert ".mp4" not in html


def test_expert_scores_and_prefers_with_the_keyboard_blind(page_for, expert, setup):
    task, (alpha, _beta), comparison = setup["task"], setup["videos"], setup["comparison"]
    page = page_for(expert)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto("/judging/human/")
    video = page.locator("#eval-video")
    assert video.get_attribute("loop") is not None and video.get_attribute("muted") is not None
    page.wait_for_function("document.getElementById('eval-video').readyState >= 2")  # the video really loads
    assert task.prompt in page.locator("#task-prompt").inner_text()
    assert_blind(page, requested)
    rows = page.locator("li.criterion")
    assert rows.count() == 15
    page.wait_for_function("document.activeElement && document.activeElement.matches('li.criterion')")

    # j / k move; 1 / 0 score the focused criterion and move on; Enter submits
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert page.evaluate("document.activeElement.dataset.criterion") == rows.nth(0).get_attribute("data-criterion")
    expected = []
    for n in range(15):
        key = "1" if n % 3 else "0"
        page.keyboard.press(key)
        expected.append(int(key))
    page.evaluate("window.__sameDocument = 'yes'")
    page.keyboard.press("Enter")
    page.wait_for_selector("#queue-done")
    assert "Saved." in page.locator("#flash").inner_text()
    assert page.evaluate("window.__sameDocument") == "yes"  # htmx swap, no reload
    criteria = human.video_criteria(alpha)
    saved = dict(HumanScore.objects.filter(expert=expert, video=alpha).values_list("criterion_id", "score"))
    assert len(saved) == len(criteria) == 15
    # the page lists criteria by dimension label order (Scientific, Visual, Instruction) and position
    dimension_order = {"scientific": 0, "visual": 1, "instruction": 2}
    shown = sorted(criteria, key=lambda c: (dimension_order[c.dimension], c.position))
    assert [saved[c.pk] for c in shown] == expected
    assert_blind(page, requested)

    # pairwise: a = left, b = right, t = tie
    page.goto("/judging/pairwise/")
    page.wait_for_function("document.getElementById('video-left').readyState >= 2 && "
                           "document.getElementById('video-right').readyState >= 2")
    assert_blind(page, requested)
    page.keyboard.press("a")
    page.wait_for_selector("#queue-done")
    assert_blind(page, requested)
    preference = PairwisePreference.objects.get(expert=expert, comparison=comparison)
    left_is_a = human.a_shown_left(expert=expert, comparison=comparison)
    assert preference.a_shown_left is left_is_a
    assert preference.choice == ("a" if left_is_a else "b")
    assert ReviewItem.objects.filter(workflow="pairwise").count() == 1
    assert any("/judging/media/v/" in url for url in requested)
