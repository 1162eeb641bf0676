"""The pipeline pages in headless Chromium: a researcher starts the pipeline on a video, watches the stages
progress (htmx polling that stops), then plays the clips the real Celery worker cut; the funnel page draws its
charts.

Media files are served by this module's URLconf (the site's own serves MEDIA_URL only with DEBUG on, which tests
run without; in production the storage backend or the web server serves them)."""
from __future__ import annotations

import shutil

import pytest
from django.conf import settings as django_settings
from django.urls import include, path, re_path
from django.views.static import serve

from datasets.models import Clip
from tests.datasets.test_pipeline import composite_video, ingest_video, pipeline_overrides
from tests.datasets.test_pipeline_pages import make_video
from tests.datasets.test_pipeline_worker import remove_stored_files  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")]

urlpatterns = [
    re_path(r"^media/(?P<path>.*)$", lambda request, path: serve(request, path, django_settings.MEDIA_ROOT)),
    path("", include("microverse_site.urls")),
]


@pytest.fixture
def serve_media(settings):
    settings.ROOT_URLCONF = __name__
    settings.PIPELINE = pipeline_overrides()


@pytest.mark.worker
def test_researcher_starts_the_pipeline_watches_it_and_plays_a_clip(page_for, researcher, live_server, tmp_path,
                                                                    celery_worker_process, serve_media,
                                                                    remove_stored_files):
    video = ingest_video(composite_video(tmp_path, seed=41), researcher)
    remove_stored_files(video)
    page = page_for(researcher)
    page.goto(f"{live_server.url}/pipeline/videos/{video.pk}/")
    assert page.locator("#stage-split").get_attribute("data-status") == "none"
    page.evaluate("window.__marker = 'before-start'")
    page.click("#start-button")
    page.wait_for_selector("#cancel-button, #stage-text[data-status=done]")  # swapped in without a reload
    # The worker finishes; the last poll answers 286 and reloads the page once, which then shows the clips.
    page.wait_for_selector("#stage-text[data-status=done]", timeout=90_000)
    page.wait_for_selector(".clip-thumb", timeout=15_000)
    assert page.evaluate("window.__marker") is None  # reloaded after the stages finished
    assert page.locator("#stages[hx-trigger]").count() == 0  # no more polling
    assert page.locator(".clip-thumb").count() == Clip.objects.filter(video=video).count() == 4
    assert "2 kept, 2 dropped" in page.locator("#clip-counts").inner_text()

    page.locator(".clip-thumb").nth(1).click()
    panel = page.locator("#clip-1")
    assert panel.is_visible() and not page.locator("#clip-0").is_visible()
    assert "Stopped at borders" in panel.inner_text()
    assert page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')")
    page.evaluate("document.querySelector('#clip-1 video').play()")
    page.wait_for_function("document.querySelector('#clip-1 video').currentTime > 0.3", timeout=15_000)
    size = page.evaluate("[document.querySelector('#clip-1 video').videoWidth,"
                         " document.querySelector('#clip-1 video').videoHeight]")
    assert size == [320, 180]
    attributes = page.evaluate("(v => [v.loop, v.muted, v.controls, v.playsInline])"
                               "(document.querySelector('#clip-1 video'))")
    assert attributes == [True, True, True, True]


def test_funnel_page_draws_the_funnel_and_the_statistics(page_for, admin_user, live_server):
    make_video()
    make_video()
    make_video(admitted=False)
    page = page_for(admin_user)
    page.goto(f"{live_server.url}/pipeline/")
    page.wait_for_function("window.Chart && Chart.getChart('funnel-chart') !== undefined")
    assert page.evaluate("Chart.getChart('funnel-chart').data.datasets[0].data") == [3, 2, 6, 6, 4, 2]
    for name in ("resolution", "duration", "views", "likes", "comments", "clip_duration"):
        assert page.evaluate(f"Chart.getChart('chart-{name}') !== undefined"), name
    assert page.evaluate("Chart.getChart('chart-resolution').data.datasets[0].data.reduce((a, b) => a + b)") == 2
    assert page.locator("#funnel-borders .removed").inner_text() == "2"


def test_an_expert_is_refused_the_pipeline_pages(page_for, expert, live_server):
    page = page_for(expert)
    assert page.goto(f"{live_server.url}/pipeline/").status == 403
