"""Candidate benchmark tasks (pipeline 1) and first rubric drafts (pipeline 2), as services.

* ``candidates_import``: rows of source-video metadata become candidates. A row that carries a prompt and a level
  goes straight to task voting; the others wait for the LLM (one Celery task each, queued when the import commits).
* ``candidate_generate``: the LLM writes the prompt (paper, Appendix A) and classifies the level (Appendix B); the
  candidate then goes to task voting, or to FAILED with the reason.
* ``candidate_draft_rubric``: the LLM drafts the rubric of an accepted task without one (Appendix G): version 1,
  label "llm-draft", which becomes the task's current rubric.

The LLM is called outside any transaction (``microverse_site.llm.chat`` records each call itself); the writes around
it are short transactions guarded by idempotent claims, so a Celery task may run twice or be killed and re-delivered.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from annotation.models import Workflow
from annotation.services import log_action, review_item_open
from microverse_site import llm
from rubrics import llm_prompts
from rubrics.models import BenchmarkTask, CandidateTask, Criterion, Level, RubricVersion

logger = logging.getLogger(__name__)

#: The columns (CSV) or keys (JSON) of an import row; only "title" is required.
IMPORT_FIELDS = ("title", "description", "url", "prompt", "level")
REQUIRED_WITHOUT_LLM = ("prompt", "level")
URL_MAX_LENGTH = CandidateTask._meta.get_field("source_url").max_length
DRAFT_LABEL = "llm-draft"
LLM_QUEUE = "llm"

_url_validator = URLValidator(schemes=["http", "https"])


class CandidateImportError(ValueError):
    """A row is invalid; the message names the row (counted from 1) and the field. Nothing was imported."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.row = row
        self.field = field


@dataclass
class ImportSummary:
    batch: str
    created: int = 0
    to_voting: int = 0
    pending: int = 0
    skipped_duplicates: int = 0
    candidate_ids: list[int] = field(default_factory=list)
    pending_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    title: str
    description: str
    url: str
    prompt: str
    level: str


def _text(row: Mapping, key: str, number: int) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CandidateImportError(f"row {number}, {key}: must be text, not {type(value).__name__}",
                                   row=number, field=key)
    return value.strip()


def _clean_row(row, number: int, *, with_llm: bool) -> _Row:
    if not isinstance(row, Mapping):
        raise CandidateImportError(f"row {number}: must be an object with {', '.join(IMPORT_FIELDS)}", row=number)
    title, description, url, prompt, level = (_text(row, key, number) for key in IMPORT_FIELDS)
    if not title:
        raise CandidateImportError(f"row {number}, title: required", row=number, field="title")
    if url:
        if len(url) > URL_MAX_LENGTH:
            raise CandidateImportError(f"row {number}, url: longer than {URL_MAX_LENGTH} characters",
                                       row=number, field="url")
        try:
            _url_validator(url)
        except ValidationError:
            raise CandidateImportError(f"row {number}, url: {url[:80]!r} is not a valid http(s) URL",
                                       row=number, field="url") from None
    if level:
        normalised = llm_prompts.level_from_label(level)
        if normalised is None:
            raise CandidateImportError(f"row {number}, level: {level[:40]!r} is not one of "
                                       f"{', '.join(Level.values)}", row=number, field="level")
        level = normalised
    if not with_llm:
        for key, value in (("prompt", prompt), ("level", level)):
            if not value:
                raise CandidateImportError(f"row {number}, {key}: required when importing without the LLM "
                                           "(every row needs a prompt and a level)", row=number, field=key)
    return _Row(title, description, url, prompt, level)


def parse_candidate_file(*, name: str, data: bytes, required: Iterable[str] = ("title",)) -> list[dict]:
    """The rows of a candidate file: CSV (a header row naming the columns) or JSON (a list of objects, or an object
    with a "candidates" list), chosen by `name`'s extension. Column names are matched without regard to case.

    Raises :class:`CandidateImportError` for an unknown extension, text that is not UTF-8, malformed CSV or JSON, or a
    missing `required` column (CSV)."""
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if suffix not in ("csv", "json"):
        raise CandidateImportError(f"unsupported file type {('.' + suffix) if suffix else '(no extension)'}; "
                                   "use .csv or .json")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CandidateImportError(f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise CandidateImportError("the file is empty")
    if suffix == "json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CandidateImportError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        if isinstance(parsed, dict) and isinstance(parsed.get("candidates"), list):
            parsed = parsed["candidates"]
        if not isinstance(parsed, list):
            raise CandidateImportError('the JSON must be a list of objects (or {"candidates": [...]})')
        return [{str(k).strip().lower(): v for k, v in row.items()} if isinstance(row, dict) else row
                for row in parsed]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise CandidateImportError("the file is empty")
        columns = [column.strip().lower() for column in header]
        missing = [column for column in required if column not in columns]
        if missing:
            raise CandidateImportError(f"missing column(s) {', '.join(missing)} (the header has "
                                       f"{', '.join(c for c in columns if c) or 'no names'})")
        rows = []
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # a blank line
            number = len(rows) + 1
            if len(values) > len(columns):
                raise CandidateImportError(f"row {number}: {len(values)} fields, but the header names "
                                           f"{len(columns)} (line {reader.line_num})", row=number)
            rows.append({column: value for column, value in zip(columns, values) if column})
    except csv.Error as exc:
        raise CandidateImportError(f"not valid CSV (line {reader.line_num}: {exc})") from None
    return rows


def _existing_urls(urls: set[str]) -> set[str]:
    found: set[str] = set()
    ordered = sorted(urls)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        found.update(CandidateTask.objects.filter(source_url__in=chunk).values_list("source_url", flat=True))
    return found


@transaction.atomic
def candidates_import(*, rows: Iterable[Mapping], user=None, with_llm: bool = True,
                      enqueue: bool = True) -> ImportSummary:
    """Import candidate tasks from `rows` (dicts with title, description, url, and optionally prompt and level).

    All or nothing: every row is checked first (:class:`CandidateImportError` names the row and field). A row whose URL
    is already a candidate (or appeared earlier in `rows`) is skipped, so importing a file twice adds nothing. Rows
    with a prompt and a level go to task voting (status VOTING, review item opened); the rest are PENDING and, with
    `with_llm` and `enqueue`, get a ``rubrics.generate_candidate`` task each once the transaction commits.
    With ``with_llm=False`` every row must carry a prompt and a level."""
    cleaned = [_clean_row(row, number, with_llm=with_llm) for number, row in enumerate(rows, start=1)]
    summary = ImportSummary(batch=f"{timezone.now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}")
    seen = _existing_urls({row.url for row in cleaned if row.url})
    fresh: list[_Row] = []
    for row in cleaned:
        if row.url and row.url in seen:
            summary.skipped_duplicates += 1
            continue
        if row.url:
            seen.add(row.url)
        fresh.append(row)
    if fresh:
        CandidateTask.objects.bulk_create([
            CandidateTask(
                source_title=row.title, source_description=row.description, source_url=row.url, prompt=row.prompt,
                level=row.level, import_batch=summary.batch, created_by=user,
                status=CandidateTask.Status.VOTING if (row.prompt and row.level) else CandidateTask.Status.PENDING,
            )
            for row in fresh
        ], batch_size=500)
    for candidate in CandidateTask.objects.filter(import_batch=summary.batch).order_by("id"):
        summary.candidate_ids.append(candidate.pk)
        if candidate.status == CandidateTask.Status.VOTING:
            review_item_open(workflow=Workflow.TASK_VOTING, target=candidate)
            summary.to_voting += 1
        else:
            summary.pending_ids.append(candidate.pk)
    summary.created = len(summary.candidate_ids)
    summary.pending = len(summary.pending_ids)
    log_action(actor=user, verb="candidates_import", workflow=Workflow.TASK_VOTING,
               after={"batch": summary.batch, "created": summary.created, "to_voting": summary.to_voting,
                      "pending": summary.pending, "skipped_duplicates": summary.skipped_duplicates,
                      "with_llm": with_llm})
    if with_llm and enqueue and summary.pending_ids:
        ids = list(summary.pending_ids)
        transaction.on_commit(lambda: candidates_queue_generation(candidate_ids=ids))
    return summary


def candidates_queue_generation(*, candidate_ids: Iterable[int]) -> int:
    """Send one ``rubrics.generate_candidate`` task per id to the "llm" queue, now. Returns how many were sent."""
    from rubrics.candidate_tasks import generate_candidate

    sent = 0
    for candidate_id in candidate_ids:
        generate_candidate.apply_async(args=[candidate_id], queue=LLM_QUEUE)
        sent += 1
    return sent


def rubric_draft_queue(*, task_id: int) -> None:
    """Queue ``rubrics.draft_rubric`` for a task (queue "llm") once the current transaction commits (at once outside
    one): call it where a task is accepted."""
    from rubrics.candidate_tasks import draft_rubric

    transaction.on_commit(lambda: draft_rubric.apply_async(args=[task_id], queue=LLM_QUEUE))


def candidate_retry(*, candidate_id: int, enqueue: bool = True) -> bool:
    """Put a FAILED candidate back to PENDING (and queue its generation). False if it was not FAILED."""
    with transaction.atomic():
        updated = CandidateTask.objects.filter(pk=candidate_id, status=CandidateTask.Status.FAILED).update(
            status=CandidateTask.Status.PENDING, generation_error="")
        if updated and enqueue:
            transaction.on_commit(lambda: candidates_queue_generation(candidate_ids=[candidate_id]))
    return bool(updated)


def _fail(candidate_id: int, reason: str) -> None:
    CandidateTask.objects.filter(pk=candidate_id, status=CandidateTask.Status.GENERATING).update(
        status=CandidateTask.Status.FAILED, generation_error=reason[:2000])


def candidate_generate(*, candidate_id: int, reclaim: bool = False) -> str:
    """Write the candidate's prompt and level with the LLM, then open its task-voting item. Returns the final status.

    Idempotent: only a PENDING candidate is claimed (PENDING -> GENERATING in one UPDATE); any other status is left
    alone and returned. `reclaim` also claims a GENERATING one: a task re-delivered after its worker died. A prompt or
    level already present is kept (only the missing one is asked for), and earlier ok answers to identical requests are
    reused, so a re-run does not pay twice. On :class:`~microverse_site.llm.LLMError` the candidate becomes FAILED with
    the reason."""
    statuses = [CandidateTask.Status.PENDING] + ([CandidateTask.Status.GENERATING] if reclaim else [])
    claimed = CandidateTask.objects.filter(pk=candidate_id, status__in=statuses).update(
        status=CandidateTask.Status.GENERATING, generation_error="")
    if not claimed:
        status = CandidateTask.objects.filter(pk=candidate_id).values_list("status", flat=True).first()
        logger.info("candidate %s: not claimed (status %s); nothing to do", candidate_id, status or "missing")
        return status or "missing"
    candidate = CandidateTask.objects.get(pk=candidate_id)
    step = "prompt writing"
    try:
        prompt = candidate.prompt.strip()
        if not prompt:
            prompt = llm.chat(
                purpose="task_prompt",
                messages=llm_prompts.task_prompt_messages(title=candidate.source_title,
                                                          description=candidate.source_description,
                                                          url=candidate.source_url),
                validate=llm_prompts.validate_task_prompt, use_cache=True,
            ).value
            CandidateTask.objects.filter(pk=candidate_id, status=CandidateTask.Status.GENERATING).update(prompt=prompt)
        level = candidate.level
        if not level:
            step = "level classification"
            answer = llm.chat(
                purpose="task_level",
                messages=llm_prompts.task_level_messages(prompt=prompt, title=candidate.source_title),
                validate=llm_prompts.validate_level, use_cache=True,
            ).value
            level = answer.level
            logger.info("candidate %s: level %s (confidence %d): %s", candidate_id, level, answer.confidence,
                        answer.reason)
    except llm.LLMError as exc:
        _fail(candidate_id, f"{step} failed: {exc.reason}")
        logger.warning("candidate %s: %s failed: %s", candidate_id, step, exc.reason)
        return CandidateTask.Status.FAILED
    except Exception as exc:
        _fail(candidate_id, f"{step} failed: internal error ({type(exc).__name__}: {exc})")
        raise
    with transaction.atomic():
        updated = CandidateTask.objects.filter(pk=candidate_id, status=CandidateTask.Status.GENERATING).update(
            prompt=prompt, level=level, status=CandidateTask.Status.VOTING, generation_error="")
        if not updated:  # someone else finished or changed it meanwhile
            return CandidateTask.objects.filter(pk=candidate_id).values_list("status", flat=True).first() or "missing"
        candidate.refresh_from_db()
        review_item_open(workflow=Workflow.TASK_VOTING, target=candidate)
    return CandidateTask.Status.VOTING


def candidate_draft_rubric(*, task_id: int) -> RubricVersion | None:
    """Draft the rubric of a task that has no rubric version yet: version 1, label "llm-draft", made current.

    Returns the new version, or None when the task already had one (idempotent). Raises
    :class:`~microverse_site.llm.LLMError` when the LLM gives no valid rubric (the LLMCall row holds the reason)."""
    task = BenchmarkTask.objects.get(pk=task_id)
    if task.rubric_versions.exists():
        return None
    result = llm.chat(
        purpose="rubric_draft",
        messages=llm_prompts.rubric_draft_messages(prompt=task.prompt, requirement=task.requirement, level=task.level),
        validate=llm_prompts.validate_rubric, use_cache=True,
    )
    draft: llm_prompts.RubricDraft = result.value
    with transaction.atomic():
        task = BenchmarkTask.objects.select_for_update().get(pk=task_id)
        if task.rubric_versions.exists():
            return None
        source = f"LLM call {result.call_id}" if result.call_id else "an earlier identical LLM answer"
        version = RubricVersion.objects.create(task=task, number=1, label=DRAFT_LABEL,
                                               note=f"Drafted by {result.model} ({source}).")
        Criterion.objects.bulk_create([
            Criterion(version=version, dimension=dimension, position=position, key_number=position,
                      description=item.description, polarity=item.polarity, weight=item.weight)
            for dimension, items in draft.criteria.items()
            for position, item in enumerate(items, start=1)
        ])
        task.current_rubric = version
        task.save(update_fields=["current_rubric"])
        log_action(actor=None, verb="rubric_llm_draft", target=version,
                   after={"task": task.index, "version": version.number, "model": result.model,
                          "criteria": {dimension: len(items) for dimension, items in draft.criteria.items()}})
    return version
