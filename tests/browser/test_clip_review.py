"""Experts verify clips and check captions with the keyboard alone, in headless Chromium, without page reloads.

Clips are tiny H.264 files (datasets.video_io.make_test_video) on Clip rows made directly; captions are made directly
too (the LLM path is tests/datasets/test_captions.py). Media files are served by this module's URLconf."""
from __future__ import annotations

import shutil

import pytest
from django.conf import settings as django_settings
from django.core.files import File
from django.urls import include, path, re_path
from django.views.static import serve

from annotation import services
from annotation.models import Decision, ReviewItem
from datasets import captions, verification
from datasets.models import Caption
from datasets.video_io import make_test_video
from tests.datasets.test_captions import CAPTION
from tests.datasets.test_verification import make_clip, make_video

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")]

urlpatterns = [
    re_path(r"^media/(?P<path>.*)$", lambda request, path: serve(request, path, django_settings.MEDIA_ROOT)),
    path("", include("microverse_site.urls")),
    path("", include("datasets.review_urls")),
]

NOTE = "Rendered animation, the membrane passes through itself"


@pytest.fixture
def clips(settings, tmp_path):
    settings.ROOT_URLCONF = __name__
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    source = make_test_video(tmp_path / "clip.mp4", frames=24, size=(160, 120), fps=12)
    video = make_video(title="Macrophage engulfing yeast", description="Time-lapse, phase contrast, 40x.")
    made = []
    for position in range(3):
        clip = make_clip(video, position=position)
        with open(source, "rb") as handle:
            clip.file.save(f"clips/{video.pk}/{position}.mp4", File(handle), save=True)
        made.append(clip)
    return made


def mark(page):
    page.evaluate("window.__sameDocument = 'yes'")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument") == "yes"


def test_experts_verify_clips_with_the_keyboard(page_for, expert, expert2, expert3, admin_user, clips):
    c1, c2, c3 = clips
    verification.verification_open(user=admin_user)
    services.panel_auto_assign(workflow="clip_verification", assigned_by=admin_user)
    item = {clip.pk: verification.items().get(object_id=clip.pk) for clip in clips}

    one = page_for(expert)
    one.goto("/review/clip_verification/")
    assert one.locator(".progress-label").inner_text() == "0 of 3"
    assert "Macrophage engulfing yeast" in one.locator("#source-title").inner_text()
    assert "phase contrast" in one.locator("#source-description").inner_text()
    assert "p(micro) = 0.91" in one.locator("#stage-results").inner_text()
    video = one.locator("#clip-video")
    assert video.evaluate("v => v.loop && v.muted && v.autoplay && v.controls")
    one.wait_for_function("document.querySelector('#clip-video').readyState >= 2")  # Chromium decodes the clip
    mark(one)

    # clip 1: non-micro (u) then keep (a) contradicts itself and is refused; micro (m), keep (a) is saved
    one.keyboard.press("u")
    assert one.locator("[data-micro=false]").get_attribute("aria-pressed") == "true"
    one.keyboard.press("a")
    one.wait_for_selector("#flash.error")
    assert "kept clip is microscale" in one.locator("#flash").inner_text()
    assert one.locator("#review-panel").get_attribute("data-item") == str(item[c1.pk].pk)
    one.keyboard.press("m")
    assert one.locator("[data-micro=true]").get_attribute("aria-pressed") == "true"
    one.keyboard.press("a")
    one.wait_for_selector(".progress-label:text-is('1 of 3')")
    assert "Saved: keep, micro." in one.locator("#flash").inner_text()

    # clip 2: reject (r), other (5) without a note is refused; 5 again focuses the note; Ctrl+Enter saves
    one.keyboard.press("r")
    assert one.locator("#reject-reasons").is_visible()
    one.keyboard.press("5")
    one.wait_for_function("document.activeElement && document.activeElement.id === 'id_note'")
    one.keyboard.press("Control+Enter")
    one.wait_for_selector("#flash.error")
    assert "needs a note" in one.locator("#flash").inner_text()
    assert one.locator("#reject-reasons").is_visible()  # still rejecting, with "other" chosen
    assert one.locator("[data-reason=other]").get_attribute("aria-pressed") == "true"
    # htmx gives the focus back to the note box after the swap: the note can be typed at once
    one.wait_for_function("document.activeElement && document.activeElement.id === 'id_note'")
    one.keyboard.type(NOTE)
    one.keyboard.press("Control+Enter")
    one.wait_for_selector(".progress-label:text-is('2 of 3')")
    assert "Saved: reject (Other (note required))" in one.locator("#flash").inner_text()

    # clip 3: reject (r) as not microscale (3): saved at once, labelled non-micro
    one.keyboard.press("r")
    one.keyboard.press("3")
    one.wait_for_selector(".progress-label:text-is('3 of 3')")
    one.wait_for_selector("#queue-done")
    assert same_document(one)
    mine = {d.item.object_id: d for d in Decision.objects.filter(expert=expert).select_related("item")}
    assert (mine[c1.pk].value, mine[c1.pk].extra) == ("keep", {"micro": True})
    assert (mine[c2.pk].value, mine[c2.pk].reason, mine[c2.pk].comment) == ("reject", "other", NOTE)
    assert (mine[c3.pk].value, mine[c3.pk].reason, mine[c3.pk].extra) == ("reject", "not_microscale",
                                                                         {"micro": False})

    # expert2 sees nothing of expert1's decision, keeps clip 1 (a): verified; then the votes show
    two = page_for(expert2)
    two.goto("/review/clip_verification/")
    assert two.locator("#review-panel").get_attribute("data-item") == str(item[c1.pk].pk)
    assert "expert1" not in two.locator("#review-panel").inner_text()
    mark(two)
    two.keyboard.press("a")
    two.wait_for_selector("#flash .outcome-accepted")
    assert "expert1" in two.locator("#flash").inner_text()
    # back (p) to the decided clip, forward (n) again, pass (x) the second clip
    two.keyboard.press("p")
    two.wait_for_selector(f"#review-panel[data-item='{item[c1.pk].pk}'][data-state='accepted']")
    two.keyboard.press("n")
    two.wait_for_selector(f"#review-panel[data-item='{item[c2.pk].pk}']")
    assert NOTE not in two.content()  # blind: expert1's note on clip 2 stays hidden
    two.keyboard.press("x")
    two.wait_for_selector("#flash:has-text('Passed')")
    assert same_document(two)
    assert list(verification.verified_clips()) == [c1]


def test_an_expert_checks_captions_with_the_keyboard(page_for, expert, admin_user, clips):
    for clip in clips:  # verified by an earlier panel
        ReviewItem.objects.create(workflow="clip_verification", content_type=verification.clip_content_type(),
                                  object_id=clip.pk, status=ReviewItem.Status.ACCEPTED)
    captions._ensure_panel_config()  # caption checking: one expert decides
    made = []
    for clip in clips:
        caption = Caption.objects.create(clip=clip, version=1, text=CAPTION, source="llm")
        check = services.review_item_open(workflow="caption_check", target=caption)
        services.panel_assign(item=check, experts=[expert], assigned_by=admin_user)
        made.append(caption)
    approve, edit, reject = made

    page = page_for(expert)
    page.goto("/review/caption_check/")
    assert page.locator(".progress-label").inner_text() == "0 of 3"
    assert "A neutrophil crawls" in page.locator("#caption-text").inner_text()
    page.wait_for_function("document.querySelector('#clip-video').readyState >= 2")
    mark(page)

    page.keyboard.press("a")  # approve
    page.wait_for_selector(".progress-label:text-is('1 of 3')")
    assert "Saved: approved." in page.locator("#flash").inner_text()

    page.keyboard.press("e")  # edit: the box takes the focus, the cursor at the end
    page.wait_for_function("document.activeElement && document.activeElement.id === 'id_text'")
    page.keyboard.type(" Small vesicles drift near the cell's edge.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".progress-label:text-is('2 of 3')")
    assert page.locator("#flash-diff ins").inner_text() == "Small vesicles drift near the cell's edge."

    page.keyboard.press("r")  # reject with a reason
    page.wait_for_function("document.activeElement && document.activeElement.id === 'id_caption_reason'")
    page.keyboard.press("Control+Enter")  # no reason yet: refused
    page.wait_for_selector("#flash.error")
    assert "Say why" in page.locator("#flash").inner_text()
    assert page.locator("#reject-box").is_visible()  # the same caption, still being rejected, the box focused
    page.wait_for_function("document.activeElement && document.activeElement.id === 'id_caption_reason'")
    page.keyboard.type("There is no neutrophil: these are yeast cells.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".progress-label:text-is('3 of 3')")
    assert page.locator("#regenerate-button").is_visible()
    assert same_document(page)

    for caption in made:
        caption.refresh_from_db()
    assert approve.status == "approved"
    assert edit.status == "superseded"
    edited = Caption.objects.get(parent=edit)
    assert (edited.version, edited.source, edited.status) == (2, "expert", "approved")
    assert edited.text == CAPTION + " Small vesicles drift near the cell's edge."
    assert reject.status == "rejected" and reject.reject_reason == "There is no neutrophil: these are yeast cells."
