"""The pipeline pages: who may see and use them, what they show, htmx polling that stops, the controls, the
re-evaluation button, and a constant number of queries on the funnel page whatever the number of videos."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotation.models import ActionLog
from datasets import pipeline
from datasets.models import Clip, SourceVideo, StageRun
from tests.datasets.test_pipeline import pipeline_overrides

PAGES = ["/pipeline/", "/pipeline/videos/", "/pipeline/videos/{id}/", "/pipeline/videos/{id}/stages/"]
ACTIONS = ["/pipeline/videos/{id}/start/", "/pipeline/videos/{id}/cancel/", "/pipeline/videos/{id}/retry/",
           "/pipeline/videos/{id}/reevaluate/", "/pipeline/reevaluate/"]

_counter = iter(range(10**6))


def make_video(*, admitted=True, stages="done", clips=3, **fields) -> SourceVideo:
    """A video row with its stage runs and clips made directly (no decoding): clip 0 kept, clip 1 with a 12 %
    top border (dropped at borders), clip 2 with text over 2 % of the frame (dropped at text)."""
    n = next(_counter)
    video = SourceVideo.objects.create(
        title=f"Video {n}", license="CC BY" if admitted else "", file=f"videos/test-{n}.mp4", sha256=f"{n:064x}",
        width=1280, height=720 if admitted else 480, fps=25, frame_count=250, duration=10.0,
        views=10 ** (n % 7), likes=n, comments=None if n % 2 else n,
        admission="admitted" if admitted else "refused",
        admission_reason="" if admitted else "No license is given; only videos licensed for reuse are admitted.",
        **fields)
    if not admitted:
        return video
    if stages:
        for stage in pipeline.STAGE_ORDER:
            StageRun.objects.create(video=video, stage=stage, status=stages, progress=1.0 if stages == "done" else 0.4,
                                    attempts=1)
    measurements = [dict(border_top=0.0, text_area_fraction=0.0, verdict="kept",
                         stop_reason="unclassified (no classifier): left to the experts"),
                    dict(border_top=0.12, text_area_fraction=None, verdict="dropped", stopped_at_stage="borders",
                         stop_reason="borders: top 12% > 5%"),
                    dict(border_top=0.0, text_area_fraction=0.021, text_found="SUBTITLE", verdict="dropped",
                         stopped_at_stage="text", stop_reason="text: 2.1% of the frame > 0.5%")]
    for position in range(clips):
        m = measurements[position % 3]
        Clip.objects.create(video=video, position=position, start_frame=position * 75, end_frame=position * 75 + 75,
                            fps=25, file=f"clips/{video.pk}/1-1/{position:04d}.mp4",
                            thumbnail=f"clips/{video.pk}/1-1/{position:04d}.jpg", embedder="colour-structure-v1",
                            border_bottom=0.0 if m["border_top"] is not None else None,
                            border_left=0.0 if m["border_top"] is not None else None,
                            border_right=0.0 if m["border_top"] is not None else None, **m)
    return video


@pytest.fixture
def video(db):
    return make_video()


# ------------------------------------------------------------------------------------------------ permissions


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_log_in(client, video):
    for url in PAGES:
        response = client.get(url.format(id=video.pk))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    for url in ACTIONS:
        assert client.post(url.format(id=video.pk)).status_code == 302, url


@pytest.mark.django_db
def test_experts_and_users_without_a_role_get_403(client, video, expert, make_user):
    for user in (expert, make_user("nobody", None)):
        client.force_login(user)
        for url in PAGES:
            assert client.get(url.format(id=video.pk)).status_code == 403, (user, url)
        for url in ACTIONS:
            assert client.post(url.format(id=video.pk)).status_code == 403, (user, url)
    assert not ActionLog.objects.filter(workflow="pipeline").exists()


@pytest.mark.django_db
def test_researchers_and_admins_see_every_page(client, video, researcher, admin_user):
    for user in (researcher, admin_user):
        client.force_login(user)
        for url in PAGES:
            assert client.get(url.format(id=video.pk)).status_code in (200, 286), (user, url)
    assert client.get("/pipeline/videos/999999/").status_code == 404


def test_only_get_is_allowed_on_pages_and_only_post_on_actions(client, db, video, researcher):
    client.force_login(researcher)
    for url in ACTIONS:
        assert client.get(url.format(id=video.pk)).status_code == 405, url


# ----------------------------------------------------------------------------------------------------- content


@pytest.mark.django_db
def test_funnel_page_shows_the_table_chart_data_and_statistics(client, researcher):
    make_video()
    make_video()
    make_video(admitted=False)
    make_video(stages=None, clips=0)
    client.force_login(researcher)
    response = client.get("/pipeline/")
    html = response.content.decode()
    funnel = response.context["funnel"]
    steps = {s["key"]: (s["entered"], s["removed"], s["remained"]) for s in funnel["steps"]}
    assert steps["admission"] == (4, 1, 3)
    assert steps["borders"] == (6, 2, 4) and steps["text"] == (4, 2, 2)
    assert dict(funnel["steps"][0]["reasons"]) == {"license does not permit reuse": 1}
    reasons = dict(next(s for s in funnel["steps"] if s["key"] == "borders")["reasons"])
    assert reasons == {"borders: top … > …": 2}
    assert 'id="funnel-chart"' in html and 'id="funnel-chart-data"' in html and "chart.umd.min.js" in html
    for name in ("resolution", "duration", "views", "likes", "comments", "clip_duration"):
        assert f'id="chart-{name}"' in html
    stats = response.context["stats"]
    assert stats["videos"] == 3 and stats["resolution"]["values"][1] == 3  # three admitted 720p videos
    assert "Re-evaluate with current thresholds" in html
    assert html.count('id="video-') >= 4  # the latest videos with their stage states


@pytest.mark.django_db
def test_funnel_page_runs_a_constant_number_of_queries(client, researcher):
    client.force_login(researcher)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/pipeline/").status_code == 200
        return len(captured)

    make_video()
    make_video(admitted=False)
    small = queries()
    for _ in range(12):
        make_video(clips=5)
    make_video(stages="running")
    make_video(admitted=False)
    assert queries() == small
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/pipeline/videos/").status_code == 200
    listed = len(captured)
    for _ in range(5):
        make_video()
    with CaptureQueriesContext(connection) as captured:
        client.get("/pipeline/videos/")
    assert len(captured) == listed


@pytest.mark.django_db
def test_video_page_shows_metadata_admission_stages_and_playable_clips(client, researcher, video):
    client.force_login(researcher)
    html = client.get(f"/pipeline/videos/{video.pk}/").content.decode()
    assert video.title in html and "1280×720" in html and "Admitted" in html
    assert "Height must be at least" in html  # the admission rules
    assert html.count("<video controls loop muted playsinline") == 3
    assert f'src="/media/clips/{video.pk}/1-1/0000.mp4"' in html
    assert f'src="/media/clips/{video.pk}/1-1/0000.jpg"' in html
    assert "borders: top 12% &gt; 5%" in html and "Stopped at <strong>text</strong>" in html
    assert "hx-trigger=\"every 1s\"" not in html  # every stage is final: no polling
    assert 'id="retry-button"' not in html and 'id="start-button"' in html


@pytest.mark.django_db
def test_stage_polling_continues_while_running_and_stops_with_286_when_final(client, researcher):
    running = make_video(stages="running")
    client.force_login(researcher)
    page = client.get(f"/pipeline/videos/{running.pk}/").content.decode()
    assert f'hx-get="/pipeline/videos/{running.pk}/stages/"' in page and 'hx-trigger="every 1s"' in page
    poll = client.get(f"/pipeline/videos/{running.pk}/stages/", HTTP_HX_REQUEST="true")
    assert poll.status_code == 200 and "40%" in poll.content.decode() and 'id="cancel-button"' in poll.content.decode()
    StageRun.objects.filter(video=running).update(status="done", progress=1.0)
    poll = client.get(f"/pipeline/videos/{running.pk}/stages/", HTTP_HX_REQUEST="true")
    assert poll.status_code == 286 and "hx-trigger" not in poll.content.decode()
    assert poll["HX-Refresh"] == "true"  # reload once, so that the new clips show


# ---------------------------------------------------------------------------------------------------- actions


@pytest.mark.django_db(transaction=True)
def test_start_cancel_and_retry_from_the_page(client, researcher, monkeypatch):
    sent = []
    monkeypatch.setattr(pipeline, "_enqueue", lambda video_id, stages: sent.append((video_id, stages)))
    video = make_video(stages=None, clips=0)
    client.force_login(researcher)
    response = client.post(f"/pipeline/videos/{video.pk}/start/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'hx-trigger="every 1s"' in response.content.decode()
    assert sent == [(video.pk, list(pipeline.STAGE_ORDER))]
    assert set(StageRun.objects.filter(video=video).values_list("status", flat=True)) == {"queued"}
    again = client.post(f"/pipeline/videos/{video.pk}/start/", HTTP_HX_REQUEST="true")
    assert "still queued or running" in again.content.decode() and len(sent) == 1

    response = client.post(f"/pipeline/videos/{video.pk}/cancel/")
    assert response.status_code == 302
    assert set(StageRun.objects.filter(video=video).values_list("status", flat=True)) == {"cancelled"}
    page = client.get(f"/pipeline/videos/{video.pk}/").content.decode()
    assert "Queued and running stages cancelled." in page and 'id="retry-button"' in page

    client.post(f"/pipeline/videos/{video.pk}/retry/")
    assert sent[-1] == (video.pk, list(pipeline.STAGE_ORDER))
    assert set(StageRun.objects.filter(video=video).values_list("status", flat=True)) == {"queued"}
    verbs = list(ActionLog.objects.filter(workflow="pipeline", actor=researcher).order_by("pk")
                 .values_list("verb", flat=True))
    assert verbs == ["pipeline_start", "pipeline_cancel", "pipeline_retry"]


@pytest.mark.django_db
def test_a_refused_video_cannot_be_started(client, admin_user, monkeypatch):
    monkeypatch.setattr(pipeline, "_enqueue", lambda *a: pytest.fail("nothing may be sent"))
    refused = make_video(admitted=False)
    client.force_login(admin_user)
    assert 'id="start-button"' not in client.get(f"/pipeline/videos/{refused.pk}/").content.decode()
    response = client.post(f"/pipeline/videos/{refused.pk}/start/", follow=True)
    assert "refused at admission" in response.content.decode()
    assert not StageRun.objects.filter(video=refused).exists()


@pytest.mark.django_db
def test_reevaluate_button_applies_the_current_thresholds(client, researcher, settings):
    video = make_video()
    client.force_login(researcher)
    settings.PIPELINE = pipeline_overrides(BORDER_MAX_FRACTION=0.2, TEXT_MAX_AREA_FRACTION=0.05)
    response = client.post(f"/pipeline/videos/{video.pk}/reevaluate/", follow=True)
    assert "Re-evaluated 3 clips" in response.content.decode()
    # the bordered clip passes borders now but was never measured for text: pending, not kept blind
    assert list(Clip.objects.filter(video=video).order_by("position").values_list("verdict", flat=True)) == [
        "kept", "pending", "kept"]
    settings.PIPELINE = pipeline_overrides()
    client.post("/pipeline/reevaluate/")
    assert list(Clip.objects.filter(video=video).order_by("position").values_list("verdict", flat=True)) == [
        "kept", "dropped", "dropped"]
    log = ActionLog.objects.filter(verb="pipeline_reevaluate").order_by("pk")
    assert log.count() == 2 and log.first().after["changed"] == 2 and log.first().target_id == str(video.pk)
