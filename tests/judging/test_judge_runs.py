"""Registering videos, extracting frames, and judge runs in this process against the real local chat server
(faults included): every judgement ends scored or flagged with its reason; reruns add nothing and pay nothing twice;
the endpoint's concurrency limit holds."""
import json
import re
import shutil
import threading
import time
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from datasets.video_io import index_colour, make_test_video
from judging import runs, videos
from judging.models import GeneratedVideo, JudgeRun, Judgement
from microverse_site.models import LLMCall
from tests.fakes.chat_server import Delay, NotJSON, RateLimited, ServerError, TooLarge
from tests.helpers import import_release_subset

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")

TASKS = (1, 2, 3, 277)
N_CRITERIA = re.compile(r"criteria \((\d+)\):")


def answer_for(request_json, score=1):
    text = "\n".join(p.get("text", "") for m in request_json["messages"] if isinstance(m.get("content"), list)
                     for p in m["content"] if p.get("type") == "text")
    n = int(N_CRITERIA.search(text).group(1))
    return json.dumps({"scores": [score] * n, "reasoning": "Every criterion is met."})


def prompt_of(index):
    from rubrics.models import BenchmarkTask

    return BenchmarkTask.objects.get(index=index).prompt


def about(index, dimension_title):
    prompt = prompt_of(index)
    return lambda request: prompt in request.text and f"**{dimension_title}**" in request.text


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def folder(tmp_path):
    """Videos for tasks 1, 2 and 3 (task 277 has none); a stray file too."""
    path = tmp_path / "Model-X"
    for index in (1, 2, 3):
        make_test_video(path / f"{index}.mp4", frames=24, size=(96, 64))
    (path / "notes.txt").write_text("not a video")
    return path


@pytest.fixture
def benchmark(transactional_db, tmp_path):
    """The benchmark subset, committed: the thread pools and threads here use connections of their own."""
    import_release_subset(tmp_path / "release", TASKS)


def register(folder, name="Model-X"):
    model = videos.model_register(name=name)
    return model, videos.videos_register_folder(model=model, folder=folder)


# ------------------------------------------------------------------------------------------------ videos


def test_register_folder_lists_missing_and_unreadable_and_is_idempotent(benchmark, media, folder):
    (folder / "3.mp4").write_bytes(b"this is not a video at all")
    model, report = register(folder)
    assert report.registered == [1, 2] and report.ignored == ["notes.txt"]
    assert [i for i, _ in report.missing] == [277] and "no video file 277.mp4" in report.missing[0][1]
    assert [i for i, _ in report.unreadable] == [3] and "3.mp4: The file is not a video" in report.unreadable[0][1]
    rows = {v.task.index: v for v in GeneratedVideo.objects.filter(model=model).select_related("task")}
    assert {i: v.status for i, v in rows.items()} == {1: "ok", 2: "ok", 3: "unreadable", 277: "missing"}
    assert (rows[1].width, rows[1].height, rows[1].frame_count) == (96, 64, 24)
    assert default_storage.exists(rows[1].file.name) and rows[1].file.name == "generated/Model-X/1.mp4"
    again = videos.videos_register_folder(model=model, folder=folder)
    assert again.registered == [] and again.unchanged == [1, 2]
    make_test_video(folder / "3.mp4", frames=30, size=(96, 64))  # fixed: now registered
    third = videos.videos_register_folder(model=model, folder=folder)
    assert third.registered == [3] and GeneratedVideo.objects.get(model=model, task__index=3).frame_count == 30
    with pytest.raises(FileNotFoundError):
        videos.videos_register_folder(model=model, folder=folder / "nope")


def test_frames_are_extracted_once_evenly_spaced(benchmark, media, folder):
    model, _ = register(folder)
    video = GeneratedVideo.objects.get(model=model, task__index=1)
    assert videos.frame_positions(24, 8) == [1, 4, 7, 10, 13, 16, 19, 22]
    assert videos.frame_positions(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]
    names = videos.frames_extract(video=video, n=8)
    assert len(names) == 8 and GeneratedVideo.objects.get(pk=video.pk).frames == names
    import cv2
    import numpy as np

    for name, position in zip(names, videos.frame_positions(24, 8)):
        with default_storage.open(name, "rb") as handle:
            image = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)
        assert np.abs(image.reshape(-1, 3).mean(axis=0) - np.array(index_colour(position))).max() < 12
    mtimes = [default_storage.get_modified_time(n) for n in names]
    assert videos.frames_extract(video=GeneratedVideo.objects.get(pk=video.pk), n=8) == names
    assert [default_storage.get_modified_time(n) for n in names] == mtimes  # not written again
    results = []
    second = GeneratedVideo.objects.get(model=model, task__index=2)

    def extract():
        try:
            results.append(videos.frames_extract(video=GeneratedVideo.objects.get(pk=second.pk), n=4))
        finally:
            connection.close()

    threads = [threading.Thread(target=extract) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({tuple(r) for r in results}) == 1 and len(results[0]) == 4
    assert sorted(default_storage.listdir(f"judge_frames/{model.pk}/{video.task_id + 1}")[1]) == [
        f"4-0{i}.jpg" for i in range(4)]


# ------------------------------------------------------------------------------------------------ runs


def make_run(folder, **kwargs):
    model, _ = register(folder)
    args = dict(model=model, judge_model="judge-x", concurrency=4)
    args.update(kwargs)
    return runs.judge_run_create(**args)


def test_create_makes_pending_and_no_video_rows_idempotently(benchmark, media, folder, llm_endpoint):
    run = make_run(folder)
    assert run.base_url == llm_endpoint.url and run.prompt_version == "v1" and run.status == "queued"
    progress = runs.judge_run_progress(run)
    assert (progress["pending"], progress["flagged"], progress["no_video"], progress["total"]) == (9, 3, 3, 12)
    flagged = Judgement.objects.filter(run=run, status="flagged").first()
    assert flagged.task.index == 277 and flagged.flag_reason.startswith("no video: missing (no video file 277.mp4")
    assert runs.judge_run_create(model=run.model, judge_model="judge-x", concurrency=8).pk == run.pk
    assert Judgement.objects.filter(run=run).count() == 12 and JudgeRun.objects.get(pk=run.pk).concurrency == 8
    make_test_video(folder / "277.mp4", frames=24, size=(96, 64))
    videos.videos_register_folder(model=run.model, folder=folder)
    runs.judge_run_create(model=run.model, judge_model="judge-x")
    assert runs.judge_run_progress(run)["pending"] == 12
    assert runs.judge_run_create(model=run.model, judge_model="judge-x", new=True).pk != run.pk


def test_run_in_process_with_faults_ends_scored_or_flagged(benchmark, media, folder, llm_endpoint):
    server = llm_endpoint
    server.responder = answer_for
    server.when(about(1, "Scientific Accuracy"), RateLimited(0.1), times=1)
    server.when(about(1, "Visual Quality"), ServerError(502), times=1)
    server.when(about(1, "Instruction Following"), TooLarge(), times=1)
    server.when(about(2, "Scientific Accuracy"), NotJSON(), times=None)
    server.when(about(2, "Visual Quality"), '{"scores": [1, 1], "reasoning": "short"}', times=None)
    server.when(about(2, "Instruction Following"), '{"scores": [1, 1], "reasoning": "short"}', times=1)
    server.when(about(3, "Scientific Accuracy"), '{"scores": [1, 2, 1, 1, 0], "reasoning": "x"}', times=None)
    server.when(about(3, "Visual Quality"), "The video looks fine to me.", times=1)
    run = make_run(folder, concurrency=3)
    seen = []
    final = runs.judge_run_execute(run=run, progress=seen.append)
    run.refresh_from_db()
    assert run.status == "done" and run.finished_at is not None
    assert (final["scored"], final["flagged"], final["pending"], final["running"]) == (6, 6, 0, 0)
    assert seen[-1]["finished"] == 12 and len(seen) == 9
    rows = {(j.task.index, j.dimension): j for j in Judgement.objects.filter(run=run).select_related("task")}
    for key in [(1, "scientific"), (1, "visual"), (1, "instruction"), (2, "instruction"), (3, "visual"),
                (3, "instruction")]:
        assert rows[key].status == "scored" and rows[key].scores == [1] * 5, key
        assert rows[key].llm_call is not None and rows[key].llm_call.prompt_tokens > 0
        assert rows[key].reasoning == "Every criterion is met." and rows[key].raw_response.startswith('{"scores"')
    assert "not chat-completion JSON" in rows[(2, "scientific")].flag_reason
    assert rows[(2, "scientific")].scores is None and rows[(2, "scientific")].llm_call.status == "error"
    assert rows[(2, "visual")].flag_reason == ('invalid answer: "scores" has 2 entries but there are 5 criteria; '
                                               "give exactly 5, one per criterion in order")
    assert rows[(2, "visual")].raw_response == '{"scores": [1, 1], "reasoning": "short"}'
    assert rows[(3, "scientific")].flag_reason.startswith('invalid answer: "scores" entry 2 is 2')
    assert all(rows[(277, d)].flag_reason.startswith("no video") for d in ("scientific", "visual", "instruction"))
    # 413: the request was re-sent with half the frames
    too_large = [r for r in server.chat_requests() if about(1, "Instruction Following")(r)]
    assert [len(r.image_urls) for r in too_large] == [8, 4]
    assert LLMCall.objects.filter(purpose="judge").count() == 9
    assert sum(LLMCall.objects.filter(purpose="judge").values_list("prompt_tokens", flat=True)) > 0

    # rerun: nothing pending, nothing asked
    before = len(server.chat_requests())
    runs.judge_run_create(model=run.model, judge_model="judge-x")
    assert runs.judge_run_execute(run=run)["scored"] == 6 and len(server.chat_requests()) == before
    assert Judgement.objects.filter(run=run).count() == 12

    # a crash after the answer was recorded but before the judgement was written: the answer is reused
    Judgement.objects.filter(pk=rows[(1, "visual")].pk).update(status="running", scores=None)
    assert runs.judge_run_execute(run=run)["scored"] == 6 and len(server.chat_requests()) == before
    again = Judgement.objects.get(pk=rows[(1, "visual")].pk)
    assert again.status == "scored" and again.llm_call_id == rows[(1, "visual")].llm_call_id


def test_a_new_run_does_not_pay_for_identical_calls(benchmark, media, folder, llm_endpoint):
    llm_endpoint.responder = answer_for
    run = make_run(folder)
    runs.judge_run_execute(run=run)
    asked = len(llm_endpoint.chat_requests())
    assert asked == 9
    fresh = runs.judge_run_create(model=run.model, judge_model="judge-x", new=True)
    assert runs.judge_run_execute(run=fresh)["scored"] == 9 and len(llm_endpoint.chat_requests()) == asked
    other_judge = runs.judge_run_create(model=run.model, judge_model="judge-y")
    runs.judge_run_execute(run=other_judge)
    assert len(llm_endpoint.chat_requests()) == asked + 9


def test_concurrency_is_bounded_per_endpoint(benchmark, media, folder, llm_endpoint):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow(request_json):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.3)
        with lock:
            in_flight[0] -= 1
        return answer_for(request_json)

    llm_endpoint.responder = slow
    run = make_run(folder, concurrency=2)
    started = time.monotonic()
    final = runs.judge_run_execute(run=run, workers=6)  # more threads than slots: the slots bound the calls
    assert final["scored"] == 9 and peak[0] == 2
    assert time.monotonic() - started >= 0.3 * 9 / 2 - 0.05


def live_claims(lease):
    fresh = timezone.now() - timedelta(seconds=lease)
    return sorted(Judgement.objects.filter(status="running", updated_at__gte=fresh).values_list("pk", flat=True))


def test_a_slot_is_handed_on_without_growing_the_endpoint_count(benchmark, media, folder, llm_endpoint):
    run = make_run(folder, concurrency=1)
    first, second, third, fourth = Judgement.objects.filter(run=run, status="pending").order_by("pk")[:4]
    lease = runs.lease_seconds()
    # claimed ahead by the runner: owned (running) but counting no slot on the endpoint
    ahead = [fourth.pk, first.pk, second.pk]
    assert runs._claim_ahead(ahead, run, lease=lease) == (ahead, set())
    assert runs._claim_ahead([first.pk, third.pk], run, lease=lease) == ([third.pk], set())  # first: already claimed
    Judgement.objects.filter(pk=third.pk).update(status="pending")
    assert live_claims(lease) == [] and Judgement.objects.filter(status="running").count() == 3
    slot = runs._Slot()
    assert runs._use_slot(slot, first.pk, run, lease=lease) == "claimed" and live_claims(lease) == [first.pk]
    assert runs._use_slot(runs._Slot(), second.pk, run, lease=lease) == "busy"  # the endpoint's one slot
    # handed on while the first result is not written yet: no write, the first claim still counts the slot
    assert runs._use_slot(slot, second.pk, run, lease=lease) == "claimed" and live_claims(lease) == [first.pk]
    # the first result moves the count to the second in the same transaction
    assert runs._record(first.pk, count_to=slot.finish(first.pk), status="scored", scores=[1] * 5)
    assert live_claims(lease) == [second.pk] and slot.holder == second.pk
    # the second result is written while the slot is free: the count goes with it, and another process takes the
    # free slot meanwhile, so the next request in this slot has to count again and waits
    assert runs._record(second.pk, count_to=slot.finish(second.pk), status="scored", scores=[1] * 5)
    assert live_claims(lease) == [] and slot.holder is None
    Judgement.objects.filter(pk=third.pk).update(status="running", updated_at=timezone.now())
    assert runs._use_slot(slot, fourth.pk, run, lease=lease) == "busy" and slot.holder is None
    Judgement.objects.filter(pk=third.pk).update(status="pending")
    assert runs._use_slot(slot, fourth.pk, run, lease=lease) == "claimed" and live_claims(lease) == [fourth.pk]
    # a judgement another process already finished is "gone" and leaves the slot uncounted
    assert runs._record(fourth.pk, count_to=slot.finish(fourth.pk), status="scored", scores=[1] * 5)
    assert runs._use_slot(slot, first.pk, run, lease=lease) == "gone" and slot.holder is None
    assert live_claims(lease) == []


def test_a_claim_that_holds_no_slot_is_stale_to_a_reader_whose_clock_read_before_it(benchmark, media, folder,
                                                                                     llm_endpoint):
    """Another process reads its clock, then this one claims ahead: that reader must not count these claims (it
    did once in CI, when they were dated exactly one lease back: 4 live claims on an endpoint of 2)."""
    run = make_run(folder, concurrency=2)
    ids = list(Judgement.objects.filter(run=run, status="pending").order_by("pk").values_list("pk", flat=True)[:3])
    lease = runs.lease_seconds()
    read_before = timezone.now() - timedelta(seconds=lease)
    assert runs._claim_ahead(ids, run, lease=lease) == (ids, set())
    assert runs._try_claim(ids[0], run, lease=lease, reclaim=True, slots=False) == "claimed"
    assert not Judgement.objects.filter(pk__in=ids, updated_at__gte=read_before).exists()
    assert Judgement.objects.filter(pk__in=ids, status="running").count() == 3


def test_a_runs_first_claims_count_on_the_endpoint_up_to_its_free_slots(benchmark, media, folder, llm_endpoint):
    run = make_run(folder, concurrency=2)
    first, second, third, fourth = Judgement.objects.filter(run=run, status="pending").order_by("pk")[:4]
    lease = runs.lease_seconds()
    Judgement.objects.filter(pk=fourth.pk).update(status="running", updated_at=timezone.now())  # another process's
    ids = [first.pk, second.pk, third.pk]
    assert runs._claim_ahead(ids, run, lease=lease, count=16) == (ids, {first.pk})  # one slot left of 2
    assert live_claims(lease) == [first.pk, fourth.pk]
    slot, other = runs._Slot(), runs._Slot()
    assert runs._use_slot(slot, first.pk, run, lease=lease, counted=True) == "claimed" and slot.holder == first.pk
    assert runs._use_slot(other, second.pk, run, lease=lease) == "busy"  # the endpoint is full
    assert live_claims(lease) == [first.pk, fourth.pk]


def test_the_endpoint_count_never_exceeds_the_limit_while_slots_are_handed_on(benchmark, media, folder,
                                                                              llm_endpoint):
    """At every request the server sees, the live claims on the endpoint number at least one (the request in
    flight is counted) and at most the run's concurrency, and its judgement is owned (running)."""
    lease = runs.lease_seconds()
    seen, lock = [], threading.Lock()

    def counting(request_json):
        fresh = timezone.now() - timedelta(seconds=lease)
        with lock:
            counts = Judgement.objects.filter(status="running").aggregate(  # one snapshot
                counted=Count("pk", filter=Q(updated_at__gte=fresh)), owned=Count("pk"))
            seen.append((counts["counted"], counts["owned"]))
        time.sleep(0.05)
        return answer_for(request_json)

    llm_endpoint.responder = counting
    run = make_run(folder, concurrency=2)
    final = runs.judge_run_execute(run=run, workers=2)
    assert final["scored"] == 9 and final["running"] == 0 and len(seen) == 9
    assert all(1 <= counted <= 2 and owned >= counted for counted, owned in seen), seen
    assert live_claims(lease) == []


def test_cancelling_stops_a_run_in_process_and_a_rerun_pays_nothing_twice(benchmark, media, folder, llm_endpoint):
    llm_endpoint.responder = lambda body: Delay(0.3, then=answer_for(body))
    run = make_run(folder, concurrency=1)

    def cancel_after_the_first(counts):
        if counts["finished"] == 4:  # the 3 "no video" rows, then the first call
            runs.judge_run_cancel(run=JudgeRun.objects.get(pk=run.pk))

    final = runs.judge_run_execute(run=run, progress=cancel_after_the_first)
    run.refresh_from_db()
    asked = len(llm_endpoint.chat_requests())
    assert run.status == "cancelled" and final["running"] == 0 and 1 <= final["scored"] <= 4 < 9
    assert final["pending"] == 9 - final["scored"] and asked == final["scored"]  # every call made is recorded
    # resumed: only what is missing is judged, and nothing is asked twice
    final = runs.judge_run_execute(run=run)
    assert final["scored"] == 9 and len(llm_endpoint.chat_requests()) == 9
    assert JudgeRun.objects.get(pk=run.pk).status == "done"


def test_a_stale_claim_is_taken_back_and_a_live_one_holds_its_slot(benchmark, media, folder, llm_endpoint, settings):
    run = make_run(folder, concurrency=1)
    first, second = Judgement.objects.filter(run=run, status="pending").order_by("pk")[:2]
    Judgement.objects.filter(pk=first.pk).update(status="running")  # another process is calling
    assert runs.judge_one(judgement_id=second.pk, wait=0.2).status == "busy"
    settings.JUDGE_LEASE_SECONDS = 0.0  # that process died long ago
    llm_endpoint.responder = answer_for
    assert runs.judge_one(judgement_id=second.pk).status == "scored"
    assert runs._reclaim(run, older_than=0.0) == 1  # what judge_run_start does before queueing
    assert Judgement.objects.get(pk=first.pk).status == "pending"


def test_cancel_leaves_pending_judgements_unjudged(benchmark, media, folder, llm_endpoint):
    llm_endpoint.responder = answer_for
    run = make_run(folder)
    assert runs.judge_run_cancel(run=run) and run.status == "cancelled"
    pk = Judgement.objects.filter(run=run, status="pending").first().pk
    assert runs.judge_one(judgement_id=pk).status == "cancelled"
    assert Judgement.objects.get(pk=pk).status == "pending" and not llm_endpoint.chat_requests()
    assert not runs.judge_run_cancel(run=run)


def test_judge_videos_command_is_resumable(benchmark, media, folder, llm_endpoint, capsys):
    llm_endpoint.responder = answer_for
    llm_endpoint.when(about(2, "Visual Quality"), ServerError(500), times=None)
    args = ["judge_videos", "--model", "Model-X", "--videos", str(folder), "--judge-model", "judge-x",
            "--concurrency", "3", "--frames", "4"]
    call_command(*args)
    out = capsys.readouterr().out
    assert "Videos of Model-X: 3 videos (3 stored, 0 unchanged), 1 missing, 0 unreadable, 1 files ignored" in out
    assert "task 277: no video file 277.mp4" in out
    assert "12 judgements, 3 already finished, 9 to judge" in out
    assert "[##############################] 12/12 (100.0%)" in out
    assert re.search(r"Judge run \d+ done: 8 scored, 4 flagged \(3 without a video\), 0 pending", out)
    assert all(len(r.image_urls) == 4 for r in llm_endpoint.chat_requests())
    asked = len(llm_endpoint.chat_requests())
    call_command(*args)
    out = capsys.readouterr().out
    assert "0 to judge" in out and len(llm_endpoint.chat_requests()) == asked
    assert JudgeRun.objects.count() == 1 and Judgement.objects.count() == 12
