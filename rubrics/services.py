"""Writes for benchmark tasks and rubrics: importing the public release, freezing versions, exporting files."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from rubrics import release_format, selectors
from rubrics.models import BenchmarkExport, BenchmarkTask, Criterion, RubricVersion


class ImportConflict(ValueError):
    """The database already holds a task that differs from the file; versions are immutable, so nothing is changed."""


@dataclass
class ImportReport:
    created: int = 0
    unchanged: int = 0
    levels: Counter = field(default_factory=Counter)
    criteria: dict[str, int] = field(default_factory=dict)


def _fingerprint_from_release(task: release_format.ReleaseTask) -> tuple:
    def crit(c):
        return (c.dimension, c.position, c.key_number, c.description, c.polarity, float(c.weight))

    return (task.prompt, task.requirement, task.level, task.source_id, task.classification_confidence,
            tuple(map(crit, task.draft)), tuple(map(crit, task.released)))


def _fingerprints_in_db(indices: list[int]) -> dict[int, tuple]:
    tasks = {t.index: t for t in BenchmarkTask.objects.filter(index__in=indices)}
    criteria: dict[tuple[int, str], list[tuple]] = {}
    rows = Criterion.objects.filter(version__task__index__in=indices, version__label__in=["draft", "released"])
    for row in rows.values_list("version__task__index", "version__label", "dimension", "position", "key_number",
                                "description", "polarity", "weight").order_by("version__task__index",
                                                                              "version__label", "dimension",
                                                                              "position"):
        index, label, *criterion = row
        criteria.setdefault((index, label), []).append(tuple(criterion))
    order = {"scientific": 0, "visual": 1, "instruction": 2}
    result = {}
    for index, task in tasks.items():
        parts = []
        for label in ("draft", "released"):
            parts.append(tuple(sorted(criteria.get((index, label), []), key=lambda c: (order[c[0]], c[1]))))
        result[index] = (task.prompt, task.requirement, task.level, task.source_id, task.classification_confidence,
                         *parts)
    return result


def benchmark_import(*, directory: str | Path) -> ImportReport:
    """Import the public release in `directory`: each task gets a "draft" and a "released" (current) rubric version.

    All or nothing: the files are validated completely first (ReleaseFormatError), existing tasks must be identical to
    the file (ImportConflict otherwise), and the writes happen in one transaction. A second run creates nothing.
    """
    release = release_format.read_release(directory)
    report = ImportReport()
    with transaction.atomic():
        existing = _fingerprints_in_db([task.index for task in release])
        new_tasks = []
        for task in release:
            if task.index in existing:
                if existing[task.index] != _fingerprint_from_release(task):
                    raise ImportConflict(
                        f"task {task.index}: already imported with different content; rubric versions are "
                        "immutable, so the import changed nothing"
                    )
                report.unchanged += 1
            else:
                new_tasks.append(task)
            report.levels[task.level] += 1
        if new_tasks:
            _create_tasks(new_tasks)
        report.created = len(new_tasks)
    report.criteria = selectors.criterion_counts_by_label()
    return report


def _create_tasks(release_tasks: list[release_format.ReleaseTask]) -> None:
    tasks = BenchmarkTask.objects.bulk_create(
        BenchmarkTask(
            index=t.index, prompt=t.prompt, requirement=t.requirement, level=t.level, source_id=t.source_id,
            source_url=t.source_url, source_title=t.source_title,
            classification_confidence=t.classification_confidence, source_metadata=t.source_metadata,
        )
        for t in release_tasks
    )
    drafts = RubricVersion.objects.bulk_create(
        RubricVersion(task=task, number=1, label="draft", note="Drafted weights (MWBenchRubrics.json).")
        for task in tasks
    )
    released = RubricVersion.objects.bulk_create(
        RubricVersion(task=task, number=2, label="released", parent=draft,
                      note="Weights mapped onto the paper's tiers (MWBenchRubrics_norm.json).")
        for task, draft in zip(tasks, drafts)
    )
    Criterion.objects.bulk_create(
        (
            Criterion(version=version, dimension=c.dimension, position=c.position, key_number=c.key_number,
                      description=c.description, polarity=c.polarity, weight=c.weight)
            for source, draft, rel in zip(release_tasks, drafts, released)
            for version, criteria in ((draft, source.draft), (rel, source.released))
            for c in criteria
        ),
        batch_size=2000,
    )
    for task, version in zip(tasks, released):
        task.current_rubric = version
    BenchmarkTask.objects.bulk_update(tasks, ["current_rubric"], batch_size=500)


def release_file_bytes(*, label: str) -> tuple[bytes, int, int]:
    """The published-format file for rubric versions called `label` ("draft", "released" or "current")."""
    rows = selectors.release_rows(label=label)
    style = "draft" if label == "draft" else "released"
    data = release_format.render_rubrics_file(rows, style=style)
    return release_format.dump_json(data).encode("utf-8"), len(rows), sum(len(r["criteria"]) for r in rows)


def benchmark_export_request(*, style: str, user) -> BenchmarkExport:
    if style not in {"released", "draft"}:
        raise ValueError(f"unknown rubric version {style!r}: choose released or draft")
    export = BenchmarkExport.objects.create(style=style, requested_by=user)
    from rubrics.tasks import write_benchmark_export

    transaction.on_commit(lambda: write_benchmark_export.delay(export.pk))
    return export


def benchmark_export_write(*, export_id: int) -> None:
    """Write the file of one export request. Safe to run twice: only the first claim does the work."""
    claimed = BenchmarkExport.objects.filter(pk=export_id, status=BenchmarkExport.Status.QUEUED).update(
        status=BenchmarkExport.Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        # Re-delivered after a crash mid-write: the row is still RUNNING with no file; redo it.
        if not BenchmarkExport.objects.filter(pk=export_id, status=BenchmarkExport.Status.RUNNING, file="").exists():
            return
    export = BenchmarkExport.objects.get(pk=export_id)
    try:
        content, tasks, criteria = release_file_bytes(label=export.style)
        digest = hashlib.sha256(content).hexdigest()
        name = f"mwbench-{export.style}-{digest[:12]}.json"
        export.file.save(name, ContentFile(content), save=False)
        export.sha256, export.task_count, export.criterion_count = digest, tasks, criteria
        export.status, export.finished_at = BenchmarkExport.Status.DONE, timezone.now()
    except Exception as exc:  # recorded for the user; the worker log has the traceback
        export.status, export.error, export.finished_at = BenchmarkExport.Status.FAILED, str(exc), timezone.now()
        raise
    finally:
        export.save()
