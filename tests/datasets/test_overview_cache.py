"""The pipeline page's funnel and statistics come from the shared cache while nothing they count has changed, and
are counted again as soon as something has: a video, a stage run, a clip, or re-evaluated verdicts."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from datasets import overview_cache, pipeline, selectors
from datasets.models import Clip, StageRun
from tests.datasets.test_pipeline import pipeline_overrides
from tests.datasets.test_pipeline_pages import make_video

pytestmark = pytest.mark.django_db(transaction=True)


def overview_with_queries():
    with CaptureQueriesContext(connection) as queries:
        overview = overview_cache.pipeline_overview()
    return overview, len(queries)


def kept(overview) -> int:
    return overview["funnel"]["clips"]["kept"]


def test_a_second_view_is_answered_from_the_cache_with_three_queries():
    make_video(clips=3)
    first, counted = overview_with_queries()
    second, cached = overview_with_queries()
    assert second == first == {"funnel": selectors.funnel(), "stats": selectors.dataset_statistics()}
    assert cached == 3 and counted > cached


def test_every_change_it_counts_makes_the_next_view_count_again(settings):
    settings.PIPELINE = pipeline_overrides()
    video = make_video(clips=3)
    assert kept(overview_with_queries()[0]) == 1

    make_video(clips=6)  # a new video with its runs and clips
    assert kept(overview_with_queries()[0]) == 3

    run = StageRun.objects.filter(video=video, stage="text").get()
    # a stage write through a queryset, as the workers make them (each sets updated_at: datasets/pipeline.py)
    StageRun.objects.filter(pk=run.pk).update(status="running", updated_at=timezone.now())
    funnel = overview_with_queries()[0]["funnel"]
    assert {s["key"]: s for s in funnel["steps"]}["text"]["waiting"] == 2  # the first video's 2 clips past borders

    Clip.objects.filter(video=video, position=2).delete()
    assert overview_with_queries()[0]["stats"]["clips"] == 8

    # Thresholds change and verdicts are re-evaluated from stored measurements: no stage run moves, yet the
    # funnel follows (the text threshold is raised past the 2.1 % clip of the second video).
    settings.PIPELINE = pipeline_overrides(TEXT_MAX_AREA_FRACTION=0.05)
    assert pipeline.reevaluate_verdicts()["changed"] >= 1
    assert kept(overview_with_queries()[0]) == Clip.objects.filter(verdict="kept").count() == 5


def test_clip_durations_are_binned_as_the_histogram_labels_say():
    video = make_video(clips=0)
    # 1.96 s, exactly 2 s, 4.99 s, 60 s, and a clip with no frame rate (counted at 0 s)
    for position, (frames, fps) in enumerate([(49, 25), (50, 25), (499, 100), (1500, 25), (10, 0)]):
        Clip.objects.create(video=video, position=position, start_frame=position * 2000,
                            end_frame=position * 2000 + frames, fps=fps,
                            embedder="colour-structure-v1", verdict="kept" if position % 2 else "dropped")
    stats = selectors.dataset_statistics()["clip_duration"]
    values = dict(zip(stats["labels"], stats["values"]))
    assert values == {"<2 s": 2, "2–3 s": 1, "3–5 s": 1, "5–10 s": 0, "10–20 s": 0, "20–60 s": 0, "≥60 s": 1}
    assert dict(zip(stats["labels"], stats["kept"])) == {**{k: 0 for k in values}, "2–3 s": 1, "≥60 s": 1}
    assert selectors.dataset_statistics()["clip_hours"] == round((1.96 + 2 + 4.99 + 60) / 3600, 3)
