"""Captions against the REAL local chat-completions server (tests.fakes.chat_server, over HTTP through the openai SDK):
success with tokens recorded, a timeout then success, 429 with Retry-After, 500, a body that is not JSON, a junk answer,
HTTP 413 with fewer images; caption checking (approve, edit with its diff, reject then regenerate); the researchers'
page; and a generation through a real Celery worker."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.urls import include, path
from django.utils.html import escape

from annotation.models import ActionLog, ReviewItem, WorkflowConfig
from datasets import captions, verification
from datasets.models import Caption, Clip
from datasets.video_io import make_test_video
from microverse_site.models import LLMCall
from tests.datasets.test_verification import make_clip, make_video, open_item
from tests.fakes.chat_server import Answer, Delay, NotJSON, RateLimited, ServerError
from tests.fakes.fixtures import worker_environment

pytestmark = pytest.mark.django_db

# A Celery worker inherits this process's environment when it starts (collection time is before any test).
WORKER_LLM_ENV = worker_environment()

urlpatterns = [path("", include("microverse_site.urls")), path("", include("datasets.review_urls"))]

CAPTION = (
    "A neutrophil crawls across a pale, grainy field of red blood cells under a bright-field microscope, chasing a "
    "small rod-shaped bacterium that darts between the packed discs. The white cell stretches a broad, ruffled "
    "leading edge toward its prey and drags a narrow tail behind it, changing direction each time the bacterium "
    "turns, while the red cells around it are pushed aside and roll back into place. The scene is lit evenly from "
    "below, giving the cells soft grey outlines and faint halos; the neutrophil's cytoplasm looks granular and "
    "slightly translucent, with a lobed nucleus faintly visible inside. The red cells show smooth biconcave "
    "surfaces and crisp rims, and the bacterium appears as a dark, sharply bounded rod. The camera stays still and "
    "close, so every small turn of the chase and every fold of the membrane can be followed."
)
BULLETS = "- a neutrophil\n- a bacterium\n- red blood cells"


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    return settings.MEDIA_ROOT


@pytest.fixture
def panel(expert, expert2, expert3, admin_user):
    return [expert, expert2, expert3]


def verify(clip: Clip, panel, admin) -> Clip:
    item = open_item(clip, panel, admin)
    for expert in panel[:2]:
        verification.decision_submit(item=item, expert=expert, value="keep")
    assert verification.is_verified(clip.pk)
    return clip


def clip_with_file(tmp_path, *, name: str | None = None, frames: int = 24, **video_fields) -> Clip:
    clip = make_clip(make_video(**video_fields))
    source = make_test_video(tmp_path / f"clip-{clip.pk}.mp4", frames=frames, size=(160, 120), fps=12)
    with open(source, "rb") as handle:
        clip.file.save(name or f"clips/test/{clip.pk}.mp4", File(handle), save=True)
    return clip


@pytest.fixture
def verified(media, tmp_path, panel, admin_user) -> Clip:
    return verify(clip_with_file(tmp_path, title="Neutrophil chasing a bacterium",
                                 description="David Rogers' 1950s film of a neutrophil."), panel, admin_user)


def check_item(caption: Caption) -> ReviewItem:
    return ReviewItem.objects.get(workflow="caption_check", object_id=caption.pk)


# ---------------------------------------------------------------------------------------------------- prompt


def test_the_validator_wants_one_paragraph_of_about_150_words():
    assert captions.validate_caption(f"“{CAPTION}”") == CAPTION
    assert captions.validate_caption(CAPTION.replace(". ", ".\n", 1)) == CAPTION  # a wrapped line is joined
    for junk, reason in ((BULLETS, "bullet"), ("Too short.", "only 2 words"), (CAPTION + " " + CAPTION, "too long"),
                         (CAPTION.replace(". ", ".\n\n", 1), "more than one paragraph"), ("", "empty"),
                         ("## Caption\n" + CAPTION, "headings")):
        with pytest.raises(ValueError, match=reason):
            captions.validate_caption(junk)


# ------------------------------------------------------------------------------------------------ generation


def test_a_caption_is_written_from_eight_frames_title_and_description(llm_endpoint, verified):
    llm_endpoint.responder = lambda body: Answer(CAPTION, prompt_tokens=1234, completion_tokens=175)
    result = captions.caption_generate(clip_id=verified.pk)
    assert result.status == "created"

    [request] = llm_endpoint.chat_requests()
    assert len(request.image_urls) == 8 and all(u.startswith("data:image/jpeg;base64,") for u in request.image_urls)
    assert "Neutrophil chasing a bacterium" in request.text and "David Rogers' 1950s film" in request.text
    assert "about 150 words" in request.text and "textures and fine structures" in request.text
    caption = Caption.objects.get()
    assert (caption.clip_id, caption.version, caption.text, caption.source, caption.status) == (
        verified.pk, 1, CAPTION, "llm", "checking")
    call = caption.llm_call
    assert (call.purpose, call.status, call.prompt_tokens, call.completion_tokens) == ("caption", "ok", 1234, 175)
    assert call.cost_usd > 0  # gpt-4o has a price
    item = check_item(caption)
    assert item.status == ReviewItem.Status.OPEN
    config = WorkflowConfig.objects.get(workflow="caption_check")
    assert (config.panel_size, config.quorum) == captions.DEFAULT_PANEL
    log = ActionLog.objects.get(verb="caption_generated")
    assert log.item_id == item.pk and log.target_type == "clip" and log.after["prompt_tokens"] == 1234

    # idempotent: a clip with a caption being checked is left alone, and nothing is asked again
    assert captions.caption_generate(clip_id=verified.pk).status == "skipped"
    assert len(llm_endpoint.chat_requests()) == 1 and Caption.objects.count() == 1


def test_frames_come_from_the_source_video_when_the_clip_has_no_file(llm_endpoint, media, tmp_path, panel,
                                                                    admin_user):
    video = make_video(title="Mitosis in a newt lung cell")
    source = make_test_video(tmp_path / "source.mp4", frames=72, size=(160, 120), fps=12)
    with open(source, "rb") as handle:
        video.file.save("videos/source.mp4", File(handle), save=True)
    clip = verify(make_clip(video, position=1), panel, admin_user)  # frames 24..48 of the source
    llm_endpoint.responder = lambda body: CAPTION
    assert captions.caption_generate(clip_id=clip.pk).status == "created"
    assert len(llm_endpoint.chat_requests()[0].image_urls) == 8


def test_unverified_and_missing_clips_are_not_captioned(llm_endpoint, media, tmp_path, panel, admin_user):
    clip = clip_with_file(tmp_path)
    assert captions.caption_generate(clip_id=clip.pk).status == "not_verified"
    open_item(clip, panel, admin_user)
    assert captions.caption_generate(clip_id=clip.pk).status == "not_verified"  # open, not yet accepted
    assert captions.caption_generate(clip_id=987654).status == "missing"
    assert llm_endpoint.chat_requests() == [] and not Caption.objects.exists()


def test_a_timeout_is_retried(llm_endpoint, settings, verified):
    settings.LLM_TIMEOUT_SECONDS = 0.5
    llm_endpoint.script(Delay(3.0, then=CAPTION), CAPTION)
    assert captions.caption_generate(clip_id=verified.pk).status == "created"
    caption = Caption.objects.get()
    assert caption.llm_call.attempts == 2 and len(llm_endpoint.chat_requests()) == 2


def test_a_429_waits_for_retry_after(llm_endpoint, verified):
    llm_endpoint.script(RateLimited(retry_after=0.6), CAPTION)
    started = time.monotonic()
    assert captions.caption_generate(clip_id=verified.pk).status == "created"
    assert time.monotonic() - started >= 0.6
    first, second = llm_endpoint.chat_requests()
    assert second.received_at - first.received_at >= 0.6
    assert Caption.objects.get().llm_call.attempts == 2


def test_a_500_is_retried_and_one_that_persists_is_recorded_then_retried(llm_endpoint, settings, verified,
                                                                        tmp_path, panel, admin_user):
    other = verify(clip_with_file(tmp_path, title="Another clip"), panel, admin_user)
    llm_endpoint.script(ServerError(500), CAPTION)
    assert captions.caption_generate(clip_id=other.pk).status == "created"
    assert Caption.objects.get(clip=other).llm_call.attempts == 2

    settings.LLM_MAX_ATTEMPTS = 2
    llm_endpoint.responder = lambda body: ServerError(500)
    result = captions.caption_generate(clip_id=verified.pk)
    assert result.status == "failed" and "HTTP 500" in result.reason and "gave up after 2 attempts" in result.reason
    assert not Caption.objects.filter(clip=verified).exists()
    assert LLMCall.objects.filter(purpose="caption", status="error").count() == 1
    assert captions.latest_failures([verified.pk]) == {verified.pk: result.reason}

    llm_endpoint.responder = lambda body: CAPTION
    assert captions.caption_generate(clip_id=verified.pk).status == "created"
    assert captions.latest_failures([verified.pk]) == {}


def test_a_body_that_is_not_json_is_flagged_with_the_reason_and_creates_nothing(llm_endpoint, verified):
    llm_endpoint.responder = lambda body: NotJSON()
    result = captions.caption_generate(clip_id=verified.pk)
    assert result.status == "failed" and "not chat-completion JSON" in result.reason
    assert not Caption.objects.exists() and not ReviewItem.objects.filter(workflow="caption_check").exists()
    failure = ActionLog.objects.get(verb="caption_failed")
    assert failure.target_id == str(verified.pk) and "not chat-completion JSON" in failure.rationale
    assert LLMCall.objects.get(purpose="caption").status == "error"

    llm_endpoint.responder = lambda body: CAPTION  # the endpoint recovers: a retry succeeds
    assert captions.caption_generate(clip_id=verified.pk).status == "created"
    assert Caption.objects.get().version == 1


def test_a_junk_answer_gets_one_repair_then_is_flagged_and_a_retry_succeeds(llm_endpoint, verified):
    llm_endpoint.responder = lambda body: BULLETS
    result = captions.caption_generate(clip_id=verified.pk)
    assert result.status == "failed" and "invalid answer" in result.reason and "bullet" in result.reason
    assert len(llm_endpoint.chat_requests()) == 2  # the answer and one repair turn
    assert "could not be used" in llm_endpoint.chat_requests()[1].text
    call = LLMCall.objects.get(purpose="caption")
    assert call.status == "invalid" and call.response_text == BULLETS
    assert not Caption.objects.exists()

    llm_endpoint.script(BULLETS, CAPTION)  # a repair turn fixes it this time
    assert captions.caption_generate(clip_id=verified.pk).status == "created"


def test_a_request_too_large_is_sent_again_with_half_the_frames(llm_endpoint, verified):
    frames = captions.clip_frames(verified)
    full = captions.caption_messages(images=[captions.encode_jpeg(f) for f in frames], title="x")
    llm_endpoint.max_body_bytes = int(len(json.dumps({"messages": full})) * 0.7)
    llm_endpoint.responder = lambda body: CAPTION
    assert captions.caption_generate(clip_id=verified.pk).status == "created"
    counts = [len(r.image_urls) for r in llm_endpoint.chat_requests()]
    assert counts[0] == 8 and counts[-1] == 4


def test_no_endpoint_configured_is_recorded(settings, verified, chat_server):
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = "", ""
    result = captions.caption_generate(clip_id=verified.pk)
    assert result.status == "failed" and "no LLM endpoint is configured" in result.reason


# -------------------------------------------------------------------------------------------------- checking


@pytest.fixture
def checking(llm_endpoint, verified, expert) -> Caption:
    llm_endpoint.responder = lambda body: CAPTION
    caption = captions.caption_generate(clip_id=verified.pk).caption
    check_item(caption).assignments.create(expert=expert, position=1)
    return caption


def test_approve_makes_the_caption_approved_and_supersedes_older_ones(checking, expert):
    older = Caption.objects.create(clip=checking.clip, version=0, text="an old approved one",
                                   source="expert", status=Caption.Status.APPROVED)
    result = captions.caption_decision_submit(item=check_item(checking), expert=expert, action="approve")
    assert result.outcome == "accepted"
    checking.refresh_from_db()
    older.refresh_from_db()
    assert checking.status == "approved" and older.status == "superseded"
    assert ActionLog.objects.filter(verb="caption_approved").count() == 1
    assert check_item(checking).decisions.get().extra == {"action": "approve"}


def test_an_edit_keeps_both_versions_and_the_diff(checking, expert):
    edited_text = CAPTION.replace("neutrophil crawls", "neutrophil glides").replace(" pale,", "")
    captions.caption_decision_submit(item=check_item(checking), expert=expert, action="edit", text=edited_text)
    checking.refresh_from_db()
    edited = Caption.objects.get(version=2)
    assert checking.status == "superseded" and checking.text == CAPTION
    assert (edited.text, edited.source, edited.status, edited.parent_id, edited.created_by_id) == (
        edited_text, "expert", "approved", checking.pk, expert.pk)
    diff = captions.word_diff(checking.text, edited.text)
    assert ("delete", "crawls") in diff and ("insert", "glides") in diff and ("delete", "pale,") in diff
    log = ActionLog.objects.get(verb="caption_edited")
    assert log.actor_id == expert.pk and "-crawls" in log.after["diff"] and "+glides" in log.after["diff"]
    history = captions.caption_history(checking.clip)
    assert [row["caption"].version for row in history] == [1, 2]
    assert history[0]["diff"] is None and ("insert", "glides") in history[1]["diff"]


def test_an_edit_that_changes_nothing_and_a_reject_without_reason_are_refused(checking, expert):
    item = check_item(checking)
    with pytest.raises(ValidationError, match="changes nothing"):
        captions.caption_decision_submit(item=item, expert=expert, action="edit", text=" " + CAPTION + "\n")
    with pytest.raises(ValidationError, match="Say why"):
        captions.caption_decision_submit(item=item, expert=expert, action="reject", reason="  ")
    with pytest.raises(ValidationError, match="approve, edit or reject"):
        captions.caption_decision_submit(item=item, expert=expert, action="shrug")
    assert not item.decisions.exists()


def test_reject_then_regenerate_writes_version_two_that_knows_why(checking, expert, llm_endpoint,
                                                                  django_capture_on_commit_callbacks):
    reason = "It says bright-field, but this is phase contrast; and there is no lobed nucleus to see."
    captions.caption_decision_submit(item=check_item(checking), expert=expert, action="reject", reason=reason)
    checking.refresh_from_db()
    assert checking.status == "rejected" and checking.reject_reason == reason
    assert ActionLog.objects.get(verb="caption_rejected").rationale == reason

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert captions.caption_regenerate(clip_id=checking.clip_id, user=expert)
    assert len(callbacks) == 1  # the task is sent once the transaction commits (not run here)
    llm_endpoint.reset()
    llm_endpoint.responder = lambda body: CAPTION.replace("bright-field", "phase-contrast")
    assert captions.caption_generate(clip_id=checking.clip_id).status == "created"
    assert reason in llm_endpoint.chat_requests()[0].text  # the new request names the rejection
    second = Caption.objects.get(version=2)
    assert second.status == "checking" and second.source == "llm" and "phase-contrast" in second.text
    assert Caption.objects.get(version=1).status == "rejected"  # every version is kept
    assert check_item(second).status == ReviewItem.Status.OPEN
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert not captions.caption_regenerate(clip_id=checking.clip_id)  # version 2 is being checked
    assert callbacks == []


# ------------------------------------------------------------------------------------------------ the pages


@pytest.mark.urls(__name__)
def test_the_captions_page_counts_and_queues_generation(client, researcher, verified, llm_endpoint,
                                                        django_capture_on_commit_callbacks):
    client.force_login(researcher)
    html = client.get("/captions/").content.decode()
    assert 'data-status="needing"><strong>1</strong>' in html and 'data-count="accepted"><strong>1</strong>' in html
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post("/captions/generate/")
    assert len(callbacks) == 1 and ActionLog.objects.get(verb="captions_queued").after == {"clips": 1}

    llm_endpoint.responder = lambda body: NotJSON()
    captions.caption_generate(clip_id=verified.pk)
    html = client.get("/captions/").content.decode()
    assert 'id="caption-failures"' in html and "not chat-completion JSON" in html

    llm_endpoint.responder = lambda body: CAPTION
    captions.caption_generate(clip_id=verified.pk)
    html = client.get("/captions/").content.decode()
    assert 'data-status="checking"><strong>1</strong>' in html and 'id="caption-failures"' not in html
    history = client.get(f"/captions/clips/{verified.pk}/").content.decode()
    assert 'id="version-1"' in history and "Experts: accepted" in history


@pytest.mark.urls(__name__)
def test_the_caption_queue_page_approves_edits_and_rejects(client, checking, expert):
    client.force_login(expert)
    html = client.get("/review/caption_check/").content.decode()
    assert escape(CAPTION) in html and 'id="caption-text"' in html and "autoplay loop muted playsinline controls" in html
    url = f"/review/caption_check/items/{check_item(checking).pk}/decision/"
    refused = client.post(url, {"action": "reject", "reason": ""}, HTTP_HX_REQUEST="true").content.decode()
    assert "Not saved" in refused and "Say why" in refused
    saved = client.post(url, {"action": "edit", "text": CAPTION.replace("crawls", "glides")},
                        HTTP_HX_REQUEST="true").content.decode()
    assert "Saved: edited." in saved, saved[:3000]
    assert "<del>crawls</del>" in saved and "<ins>glides</ins>" in saved, saved[saved.find("flash"):][:2500]


# ---------------------------------------------------------------------------------------------- real worker


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_caption_is_generated_by_a_real_worker(celery_worker_process, chat_server, tmp_path, expert, expert2,
                                                 expert3, admin_user, researcher):
    chat_server.responder = lambda body: Answer(CAPTION, prompt_tokens=900, completion_tokens=170)
    # The worker reads files from the default storage it was started with: put the clip there, and remove it after.
    name = f"test-captions/{uuid.uuid4().hex}.mp4"
    clip = make_clip(make_video(title="Worker-made caption"))
    source = make_test_video(tmp_path / "clip.mp4", frames=24, size=(160, 120), fps=12)
    with open(source, "rb") as handle:
        clip.file.name = default_storage.save(name, File(handle))
    clip.save(update_fields=["file"])
    try:
        verify(clip, [expert, expert2, expert3], admin_user)
        assert captions.captions_generate_for_verified(user=researcher) == 1  # sent when the transaction commits
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not Caption.objects.filter(clip=clip).exists():
            time.sleep(0.25)
        caption = Caption.objects.filter(clip=clip).first()
        assert caption is not None, celery_worker_process.log()[-4000:]
        assert caption.text == CAPTION and caption.status == "checking"
        assert (caption.llm_call.prompt_tokens, caption.llm_call.completion_tokens) == (900, 170)
        assert "datasets.caption_tasks.generate_caption" in celery_worker_process.log()
        [request] = chat_server.chat_requests()
        assert len(request.image_urls) == 8 and "Worker-made caption" in request.text
    finally:
        default_storage.delete(clip.file.name)
