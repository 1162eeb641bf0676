"""Reads for the pipeline pages: the funnel (the paper's Figure 7), dataset statistics (Figures 4 and 5) and the
videos with their stage states. Each function runs a fixed number of queries, however many videos and clips."""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from django.conf import settings
from django.db.models import (Case, CharField, Count, Exists, F, FloatField, OuterRef, Prefetch, Q, Sum, Value,
                              When)
from django.db.models.functions import Cast

from datasets.models import Clip, SourceVideo, StageRun
from datasets.pipeline import FINAL_STATUSES, STAGE_ORDER

Stage = StageRun.Stage
Status = StageRun.Status
MEASURING_STAGES = STAGE_ORDER[1:]
STAGE_LABELS = {Stage.SPLIT: "Split into clips", Stage.CLASSIFY: "Micro classifier", Stage.BORDERS: "Black borders",
                Stage.TEXT: "Burned-in text"}


# ---------------------------------------------------------------------------------------------------- reasons


def reason_group(reason: str) -> str:
    """A stop or refusal reason without its particulars (numbers, quoted values, parenthesised details), so that
    reasons of one kind count together: "top border 0.12 > 0.05" -> "top border … > …"."""
    text = (reason or "").strip()
    if not text:
        return "no reason given"
    text = re.sub(r"“[^”]*”|\"[^\"]*\"|'[^']*'", "…", text)
    text = re.sub(r"\([^)]*\)", "", text)
    text = re.sub(r"\d+(?:[.,]\d+)?\s*%?", "…", text)
    text = re.sub(r"(…\s*)+", "… ", text)
    return re.sub(r"\s+", " ", text).strip(" .;:") or "no reason given"


def admission_groups(reason: str) -> list[str]:
    """The admission rules a refused video failed (one video can fail several)."""
    groups = []
    lowered = (reason or "").lower()
    if "license" in lowered or "licence" in lowered:
        groups.append("license does not permit reuse")
    if "height" in lowered:
        groups.append(f"below {settings.PIPELINE['MIN_HEIGHT']} px high")
    return groups or [reason_group(reason)]


# ----------------------------------------------------------------------------------------------------- funnel


def funnel() -> dict:
    """Per step, how many videos or clips entered, were removed (by grouped reason) and remained; clips whose
    video has not reached a stage yet are counted as waiting there. Four queries."""
    videos = list(SourceVideo.objects.values("admission", "admission_reason").annotate(n=Count("id")))
    runs = list(StageRun.objects.values("stage", "status").annotate(n=Count("id"), segments=Sum("clips_in")))
    # Which videos finished which measuring stage, joined to the clips here rather than with an EXISTS per clip and
    # stage in SQL (three index probes per clip: seconds at 100,000 clips).
    done_stages: dict[int, set] = defaultdict(set)
    for video_id, stage in StageRun.objects.filter(stage__in=MEASURING_STAGES, status=Status.DONE).values_list(
            "video_id", "stage"):
        done_stages[video_id].add(stage)
    grouped: Counter = Counter()
    for row in (Clip.objects.values("video_id", "stopped_at_stage", "stop_reason", "verdict")
                .annotate(n=Count("id")).order_by().iterator(chunk_size=5000)):
        done = done_stages.get(row["video_id"], ())
        grouped[(row["stopped_at_stage"], row["stop_reason"], row["verdict"],
                 *[stage in done for stage in MEASURING_STAGES])] += row["n"]
    clips = [{"stopped_at_stage": key[0], "stop_reason": key[1], "verdict": key[2], "n": n,
              **{f"done_{stage}": flag for stage, flag in zip(MEASURING_STAGES, key[3:])}}
             for key, n in grouped.items()]

    total_videos = sum(v["n"] for v in videos)
    refused = Counter()
    refused_videos = 0
    for row in videos:
        if row["admission"] == SourceVideo.Admission.REFUSED:
            refused_videos += row["n"]
            for group in admission_groups(row["admission_reason"]):
                refused[group] += row["n"]
    run_counts: dict[str, Counter] = defaultdict(Counter)
    segments = 0
    for row in runs:
        run_counts[row["stage"]][row["status"]] += row["n"]
        if row["stage"] == Stage.SPLIT and row["status"] == Status.DONE:
            segments += row["segments"] or 0

    total_clips = sum(r["n"] for r in clips)
    steps = [
        {"key": "admission", "label": "Admission (license, resolution)", "unit": "videos", "entered": total_videos,
         "removed": refused_videos, "remained": total_videos - refused_videos, "waiting": 0,
         "reasons": refused.most_common()},
        {"key": Stage.SPLIT, "label": STAGE_LABELS[Stage.SPLIT], "unit": "clips",
         "videos_done": run_counts[Stage.SPLIT][Status.DONE], "entered": segments,
         "removed": max(0, segments - total_clips), "remained": total_clips,
         "waiting": (total_videos - refused_videos) - run_counts[Stage.SPLIT][Status.DONE],
         "waiting_unit": "videos",
         "reasons": ([(f"shorter than {settings.PIPELINE['MIN_CLIP_SECONDS']:g} s", segments - total_clips)]
                     if segments > total_clips else [])},
    ]
    for index, stage in enumerate(MEASURING_STAGES):
        earlier = set(MEASURING_STAGES[:index])
        alive = [r for r in clips if r["stopped_at_stage"] not in earlier]
        entered = sum(r["n"] for r in alive if r[f"done_{stage}"])
        waiting = sum(r["n"] for r in alive if not r[f"done_{stage}"])
        reasons = Counter()
        for row in alive:
            if row[f"done_{stage}"] and row["stopped_at_stage"] == stage:
                reasons[reason_group(row["stop_reason"])] += row["n"]
        removed = sum(reasons.values())
        steps.append({"key": stage, "label": STAGE_LABELS[stage], "unit": "clips",
                      "videos_done": run_counts[stage][Status.DONE], "entered": entered, "removed": removed,
                      "remained": entered - removed, "waiting": waiting, "waiting_unit": "clips",
                      "reasons": reasons.most_common()})
    verdicts = Counter()
    for row in clips:
        verdicts[row["verdict"]] += row["n"]
    return {
        "steps": steps,
        "videos": {"total": total_videos, "refused": refused_videos, "admitted": total_videos - refused_videos},
        "clips": {"total": total_clips, **{v: verdicts[v] for v in Clip.Verdict.values}},
        "runs": {stage: dict(run_counts[stage]) for stage in STAGE_ORDER},
        "chart": {
            "labels": ["Videos ingested", "Videos admitted", "Clips after split", "After classifier",
                       "After borders", "After text"],
            "values": [total_videos, total_videos - refused_videos, total_clips,
                       *[s["remained"] for s in steps[2:]]],
        },
    }


# ------------------------------------------------------------------------------------------------- statistics

RESOLUTION_BINS = ((0, "<720p"), (720, "720p"), (1080, "1080p"), (1440, "1440p"), (2160, "2160p+"))
DURATION_BINS = ((0, "<30 s"), (30, "30 s–1 min"), (60, "1–3 min"), (180, "3–5 min"), (300, "5–10 min"),
                 (600, "10–30 min"), (1800, "≥30 min"))
CLIP_DURATION_BINS = ((0, "<2 s"), (2, "2–3 s"), (3, "3–5 s"), (5, "5–10 s"), (10, "10–20 s"), (20, "20–60 s"),
                      (60, "≥60 s"))
COUNT_LABELS = ("0", "1–9", "10–99", "100–999", "1K–10K", "10K–100K", "100K–1M", "≥1M")


def _bin(value: float, bins) -> str:
    label = bins[0][1]
    for lower, name in bins:
        if value >= lower:
            label = name
    return label


def _count_bin(value: int) -> str:
    if value <= 0:
        return COUNT_LABELS[0]
    return COUNT_LABELS[min(len(COUNT_LABELS) - 1, 1 + int(math.log10(value)))]


def _histogram(values, labels, binner) -> dict:
    counts = Counter(binner(v) for v in values)
    return {"labels": list(labels), "values": [counts[label] for label in labels]}


def dataset_statistics() -> dict:
    """Distributions over admitted videos (resolution, duration, views, likes, comments) and over clips (duration,
    all clips and kept ones), as histogram bins. Two queries."""
    rows = list(SourceVideo.objects.filter(admission=SourceVideo.Admission.ADMITTED)
                .values_list("height", "duration", "views", "likes", "comments"))
    statistics = {
        "videos": len(rows),
        "total_hours": round(sum(r[1] or 0 for r in rows) / 3600, 2),
        "resolution": _histogram([r[0] for r in rows], [n for _, n in RESOLUTION_BINS],
                                 lambda v: _bin(v, RESOLUTION_BINS)),
        "duration": _histogram([r[1] for r in rows], [n for _, n in DURATION_BINS], lambda v: _bin(v, DURATION_BINS)),
    }
    for index, name in ((2, "views"), (3, "likes"), (4, "comments")):
        known = [r[index] for r in rows if r[index] is not None]
        statistics[name] = _histogram(known, COUNT_LABELS, _count_bin)
        statistics[name]["unknown"] = len(rows) - len(known)
    labels = [n for _, n in CLIP_DURATION_BINS]
    all_clips, kept, clip_count, clip_seconds = Counter(), Counter(), 0, 0.0
    for row in clip_duration_bins():
        all_clips[row["bin"]] += row["n"]
        if row["verdict"] == Clip.Verdict.KEPT:
            kept[row["bin"]] += row["n"]
        clip_count += row["n"]
        clip_seconds += row["total_seconds"] or 0.0
    statistics["clip_duration"] = {"labels": labels, "values": [all_clips[label] for label in labels],
                                   "kept": [kept[label] for label in labels]}
    statistics["clips"] = clip_count
    statistics["clip_hours"] = round(clip_seconds / 3600, 3)
    return statistics


def clip_duration_bins() -> list[dict]:
    """Clips counted per duration bin (CLIP_DURATION_BINS) and verdict, with their total seconds: binned by the
    database, so that 100,000 clips come back as a few dozen rows."""
    seconds = Case(When(fps__gt=0, then=(Cast("end_frame", FloatField()) - Cast("start_frame", FloatField()))
                        / F("fps")), default=Value(0.0), output_field=FloatField())
    binned = Case(*[When(seconds__gte=lower, then=Value(label)) for lower, label in reversed(CLIP_DURATION_BINS[1:])],
                  default=Value(CLIP_DURATION_BINS[0][1]), output_field=CharField())
    return list(Clip.objects.annotate(seconds=seconds).annotate(bin=binned).values("bin", "verdict")
                .annotate(n=Count("id"), total_seconds=Sum("seconds")).order_by())


# ----------------------------------------------------------------------------------------------------- videos


def video_list(*, admission: str = "", status: str = ""):
    """Videos with their stage runs (prefetched) and clip counts; filter by admission and by any stage's status.
    Two queries per page (videos, stage runs)."""
    videos = SourceVideo.objects.annotate(
        clip_count=Count("clips", distinct=True),
        kept_count=Count("clips", filter=Q(clips__verdict=Clip.Verdict.KEPT), distinct=True),
    ).prefetch_related(Prefetch("stage_runs", queryset=StageRun.objects.order_by("pk")))
    if admission in SourceVideo.Admission.values:
        videos = videos.filter(admission=admission)
    if status in Status.values:
        videos = videos.filter(Exists(StageRun.objects.filter(video_id=OuterRef("pk"), status=status)))
    return videos.order_by("-created_at", "-id")


def stage_states(video: SourceVideo) -> list[dict]:
    """Every stage of a video in pipeline order, with its run (None if never started)."""
    runs = {r.stage: r for r in video.stage_runs.all()}
    return [{"stage": stage, "label": STAGE_LABELS[stage], "run": runs.get(stage)} for stage in STAGE_ORDER]


def all_final(states: list[dict]) -> bool:
    return all(s["run"] is None or s["run"].status in FINAL_STATUSES for s in states)


def video_detail(*, pk: int) -> SourceVideo:
    return SourceVideo.objects.select_related("uploaded_by").prefetch_related(
        Prefetch("stage_runs", queryset=StageRun.objects.order_by("pk"))).get(pk=pk)


def video_clips(video: SourceVideo):
    return Clip.objects.filter(video=video).order_by("position")


def clip_summary(clips) -> dict:
    counts = Counter(c.verdict for c in clips)
    return {v: counts[v] for v in Clip.Verdict.values}
