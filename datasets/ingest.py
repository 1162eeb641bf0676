"""Ingesting source videos: one upload, a folder, or a manifest (JSON or CSV) of files with their metadata.

Each file is ingested on its own and atomically: it is streamed to a temporary file (refused as soon as it passes
``PIPELINE["MAX_UPLOAD_BYTES"]``) while its SHA-256 is computed, probed with OpenCV (``datasets.video_io.probe``),
refused if unreadable or a duplicate, then stored through Django's storage API under a name made from its hash and
its real container (``videos/<sha[:2]>/<sha>.<ext>``: the uploaded name is never used as a path, only kept as
sanitised text) and recorded as a :class:`~datasets.models.SourceVideo`. A refused file leaves nothing behind: no row,
no stored file. A stored video that fails an admission rule (license, minimum height) is kept with its reason and
goes no further in the pipeline.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.template.defaultfilters import filesizeformat

from annotation.services import log_action
from datasets import video_io
from datasets.models import SourceVideo

CHUNK_BYTES = 1024 * 1024
#: What a folder ingest picks up (by extension only to skip notes and manifests; every file is still probed).
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".ogv",
                    ".wmv"}
METADATA_FIELDS = ("title", "description", "license", "source_url", "views", "likes", "comments")
#: Manifest column names accepted for each metadata field.
FIELD_ALIASES = {"url": "source_url", "source": "source_url", "source url": "source_url", "licence": "license",
                 "view_count": "views", "like_count": "likes", "comment_count": "comments", "path": "file",
                 "filename": "file"}
#: License elements: a licence that only *starts* like an allowed one must not add one of these (CC BY vs CC BY-NC).
_LICENSE_ELEMENTS = {"by", "sa", "nc", "nd"}
_NO_DERIVATIVES = re.compile(r"\bnd\b|noderiv", re.IGNORECASE)


class IngestError(Exception):
    """A file (or its metadata) was refused; ``reason`` says why in a sentence, ``code`` is one of "empty",
    "too_large", "unreadable", "duplicate", "invalid_metadata", "not_found", "manifest"."""

    def __init__(self, reason: str, code: str = "unreadable"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass
class IngestResult:
    """The outcome for one file of a folder or manifest ingest."""

    name: str
    video: SourceVideo | None = None
    reason: str = ""
    code: str = ""

    @property
    def ok(self) -> bool:
        return self.video is not None


# ------------------------------------------------------------------------------------------------- metadata


def sanitise_name(name: str) -> str:
    """The uploaded file name as harmless text: its last path component only (either slash), Unicode NFC, no
    control characters, at most 255 characters. Never used as a path."""
    text = unicodedata.normalize("NFC", str(name or ""))
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C").strip().strip(".").strip()
    return text[:255] or "upload"


def _count(value, name: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise IngestError(f"{name} must be a whole number of zero or more, not {value!r}.", "invalid_metadata")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        value = value.strip().replace(",", "").replace("_", "")
        if not re.fullmatch(r"\d+", value):
            raise IngestError(f"{name} must be a whole number of zero or more, not {value!r}.", "invalid_metadata")
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise IngestError(f"{name} must be a whole number of zero or more, not {value!r}.", "invalid_metadata")
    if value > 2**63 - 1:
        raise IngestError(f"{name} is too large.", "invalid_metadata")
    return value


def clean_metadata(metadata: dict | None, *, original_name: str) -> dict:
    """Validated metadata for a SourceVideo: title (default: the file name without its extension), description,
    license, source_url (http or https), views/likes/comments (whole numbers >= 0 or None). Raises IngestError
    ("invalid_metadata") naming the field. Unknown keys are ignored."""
    metadata = {FIELD_ALIASES.get(str(k).strip().lower(), str(k).strip().lower()): v
                for k, v in (metadata or {}).items()}

    def text(key: str, limit: int | None = None) -> str:
        value = metadata.get(key)
        value = "" if value is None else str(value).strip()
        if limit and len(value) > limit:
            raise IngestError(f"{key.replace('_', ' ').capitalize()} is longer than {limit} characters.",
                              "invalid_metadata")
        return value

    title = text("title") or (PurePosixPath(original_name).stem or original_name)
    source_url = text("source_url", 500)
    if source_url:
        try:
            URLValidator(schemes=["http", "https"])(source_url)
        except ValidationError:
            raise IngestError(f"Source URL {source_url!r} is not a valid http(s) URL.", "invalid_metadata") from None
    return {
        "title": title[:2000], "description": text("description"), "license": text("license", 120),
        "source_url": source_url, "views": _count(metadata.get("views"), "Views"),
        "likes": _count(metadata.get("likes"), "Likes"), "comments": _count(metadata.get("comments"), "Comments"),
    }


# ------------------------------------------------------------------------------------------- admission rules


def _normal_license(text: str) -> str:
    return " ".join(re.sub(r"[-_/,()]+", " ", text.casefold()).split())


def license_allowed(license_text: str, allowed: Iterable[str] | None = None) -> bool:
    """Whether a license is one of the allowed ones, case-insensitively; "CC BY 4.0" matches "CC BY" (a version or
    jurisdiction may follow), but "CC BY-NC" does not match "CC BY", and no-derivatives licenses match only an
    allowed entry that says ND itself."""
    allowed = settings.PIPELINE["ALLOWED_LICENSES"] if allowed is None else allowed
    given = _normal_license(license_text)
    if not given:
        return False
    for entry in allowed:
        rule = _normal_license(entry)
        if not rule:
            continue
        if given == rule:
            return True
        if given.startswith(rule + " "):
            rest = given[len(rule) + 1:].split()
            if rest and rest[0] in _LICENSE_ELEMENTS:
                continue
            if _NO_DERIVATIVES.search(given) and not _NO_DERIVATIVES.search(rule):
                continue
            return True
    return False


def admission_rules() -> list[str]:
    """The admission rules in force, as sentences (shown on upload and video pages)."""
    pipeline = settings.PIPELINE
    return [
        "License must permit reuse: one of " + ", ".join(pipeline["ALLOWED_LICENSES"])
        + " (case does not matter; a version such as 4.0 may follow).",
        f"Height must be at least {pipeline['MIN_HEIGHT']} pixels.",
    ]


def admission_check(*, license_text: str, height: int) -> tuple[str, str]:
    """(admission, reason) for a video: ``SourceVideo.Admission.ADMITTED`` and "", or REFUSED and every failed
    rule in a sentence each."""
    pipeline = settings.PIPELINE
    reasons = []
    if not license_text.strip():
        reasons.append("No license is given; only videos licensed for reuse are admitted.")
    elif not license_allowed(license_text):
        reasons.append(f"License “{license_text}” is not one that permits reuse here (allowed: "
                       f"{', '.join(pipeline['ALLOWED_LICENSES'])}).")
    if height < pipeline["MIN_HEIGHT"]:
        reasons.append(f"Height {height} px is below the minimum of {pipeline['MIN_HEIGHT']} px.")
    if reasons:
        return SourceVideo.Admission.REFUSED, " ".join(reasons)
    return SourceVideo.Admission.ADMITTED, ""


# ---------------------------------------------------------------------------------------------------- ingest


def _limit() -> int:
    return int(settings.PIPELINE["MAX_UPLOAD_BYTES"])


def _too_large(size_text: str) -> IngestError:
    return IngestError(f"The file is larger than the limit of {filesizeformat(_limit())} ({size_text}); nothing "
                       "was stored.", "too_large")


def _hash_into(fileobj, sink=None) -> tuple[int, str]:
    """Read ``fileobj`` from its start in chunks, hashing (and copying into ``sink`` if given); refuse as soon as
    the limit is passed."""
    limit = _limit()
    digest = hashlib.sha256()
    size = 0
    if hasattr(fileobj, "seek"):
        try:
            fileobj.seek(0)
        except (OSError, ValueError):
            pass
    while True:
        chunk = fileobj.read(CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {filesizeformat(limit)} received")
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    if sink is not None:
        sink.flush()
    return size, digest.hexdigest()


@contextmanager
def _local_file(fileobj):
    """``(path, size, sha256, file)``: the upload as a local file. An upload Django already spooled to disk
    (``temporary_file_path()``) is read in place, and local storage then moves it rather than copying; anything
    else is streamed into a temporary file, which is removed afterwards."""
    temporary_path = getattr(fileobj, "temporary_file_path", None)
    if callable(temporary_path):
        size, sha256 = _hash_into(fileobj)
        fileobj.seek(0)
        yield temporary_path(), size, sha256, fileobj
        return
    temp_dir = getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    with tempfile.NamedTemporaryFile(prefix="ingest-", suffix=".video", dir=temp_dir) as temp:
        size, sha256 = _hash_into(fileobj, temp)
        temp.seek(0)
        yield temp.name, size, sha256, File(temp)


def _existing(sha256: str) -> IngestError | None:
    video = SourceVideo.objects.filter(sha256=sha256).only("pk", "title").first()
    if video is None:
        return None
    return IngestError(f"This file was already ingested as video #{video.pk} “{video.title}” (same SHA-256); "
                       "nothing new was stored.", "duplicate")


def video_ingest(*, fileobj, original_name: str, metadata: dict | None, user, request_id: str = "") -> SourceVideo:
    """Ingest one video from a binary file object (an upload or an open file); return the new SourceVideo, admitted
    or refused by a rule. Raises :class:`IngestError` when the file is refused (empty, too large, unreadable,
    duplicate, bad metadata): then nothing is stored, neither a row nor a file."""
    original = sanitise_name(original_name)
    cleaned = clean_metadata(metadata, original_name=original)
    declared_size = getattr(fileobj, "size", None)
    if isinstance(declared_size, int) and declared_size > _limit():
        raise _too_large(filesizeformat(declared_size))
    with _local_file(fileobj) as (local_path, size, sha256, content):
        if size == 0:
            raise IngestError("The file is empty (0 bytes); nothing was stored.", "empty")
        duplicate = _existing(sha256)
        if duplicate:
            raise duplicate
        try:
            info = video_io.probe(local_path)
        except video_io.UnreadableVideo as error:
            raise IngestError(f"{error.reason} Nothing was stored.", "unreadable") from None
        admission, reason = admission_check(license_text=cleaned["license"], height=info.height)
        target = f"videos/{sha256[:2]}/{sha256}.{info.extension}"
        try:
            stored = default_storage.save(target, content)
        except OSError as error:
            # A full disk (or quota) fails mid-write: remove what was written so nothing half-stored remains.
            if default_storage.exists(target):
                default_storage.delete(target)
            reason = "The storage is full (no space left on the device)" if error.errno in (28, 122) else \
                f"The file could not be stored ({error.strerror or error})"
            raise IngestError(f"{reason}; nothing was stored.", "storage_full") from None
    try:
        with transaction.atomic():
            video = SourceVideo.objects.create(
                **cleaned, file=stored, original_name=original, size_bytes=size, sha256=sha256,
                width=info.width, height=info.height, fps=info.fps, frame_count=info.frame_count,
                duration=info.duration, codec=info.codec, admission=admission, admission_reason=reason,
                uploaded_by=user if getattr(user, "pk", None) else None,
            )
            log_action(actor=video.uploaded_by, verb="video_ingest", target=video, request_id=request_id,
                       after={"title": video.title, "sha256": sha256, "file": stored, "size_bytes": size,
                              "original_name": original, "width": info.width, "height": info.height,
                              "fps": info.fps, "frame_count": info.frame_count, "codec": info.codec,
                              "license": video.license, "admission": admission, "admission_reason": reason})
    except IntegrityError:
        default_storage.delete(stored)
        raise _existing(sha256) or IngestError("The video could not be recorded; nothing was stored.",
                                               "duplicate") from None
    except BaseException:
        default_storage.delete(stored)
        raise
    return video


def file_ingest(path: str | os.PathLike, *, user, metadata: dict | None = None, request_id: str = "") -> SourceVideo:
    """Ingest one local file (its name gives the default title only)."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path.name}: no such file.", "not_found")
    with open(path, "rb") as f:
        return video_ingest(fileobj=f, original_name=path.name, metadata=metadata, user=user,
                            request_id=request_id)


def attempt(name: str, action) -> IngestResult:
    """Run `action` (which ingests one file) and return its result; an IngestError becomes a refused result."""
    try:
        return IngestResult(name=name, video=action())
    except IngestError as error:
        return IngestResult(name=name, reason=error.reason, code=error.code)


def folder_ingest(path: str | os.PathLike, *, user, metadata: dict | None = None,
                  recursive: bool = False) -> list[IngestResult]:
    """Ingest every video file of a folder (by extension; hidden files skipped), each on its own; ``metadata``
    (license, say) applies to all, and each title defaults to its file name."""
    folder = Path(path)
    if not folder.is_dir():
        raise IngestError(f"{folder} is not a folder.", "not_found")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern)
                   if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    shared = {k: v for k, v in (metadata or {}).items() if k != "title"}
    return [attempt(str(p.relative_to(folder)), lambda p=p: file_ingest(p, user=user, metadata=shared))
            for p in files]


# -------------------------------------------------------------------------------------------------- manifests


def _resolve_in(folder: Path, name: str) -> Path:
    """``name`` as a file inside ``folder``; refuses absolute paths and anything that leaves the folder."""
    if not name:
        raise IngestError("The row names no file.", "manifest")
    if "\x00" in name:
        raise IngestError("The file name contains a NUL character.", "manifest")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise IngestError(f"{name!r} is an absolute path; manifests name files relative to their own folder.",
                          "manifest")
    if ".." in re.split(r"[/\\]", name):
        raise IngestError(f"{name!r} leaves the manifest's folder (..); refused.", "manifest")
    root = folder.resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise IngestError(f"{name!r} leads outside the manifest's folder; refused.", "manifest")
    return target


def _read_manifest(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise IngestError(f"The manifest cannot be read: {error}.", "manifest") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise IngestError(f"The manifest is not valid JSON: {error}.", "manifest") from None
        if isinstance(data, dict):
            data = data.get("videos", data.get("items"))
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise IngestError("A JSON manifest is a list of objects (or {\"videos\": [...]}).", "manifest")
        return data
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise IngestError("The CSV manifest has no header row.", "manifest")
        return [{k.strip(): v for k, v in row.items() if k} for row in reader]
    raise IngestError("A manifest is a .json or .csv file.", "manifest")


def manifest_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON or CSV manifest, one dict per video: the metadata fields (``METADATA_FIELDS``, with
    common aliases such as ``url`` normalised), ``file`` as written, ``path`` (the file resolved inside the
    manifest's folder, or None), ``error`` ("" or why the row cannot be used: absolute path, ``..`` escape,
    missing file) and ``row`` (1-based). Raises IngestError ("manifest") when the manifest itself is unusable
    (unreadable, bad JSON, no ``file`` column)."""
    path = Path(path)
    rows = _read_manifest(path)
    result = []
    for number, raw in enumerate(rows, start=1):
        row = {FIELD_ALIASES.get(str(k).strip().lower(), str(k).strip().lower()): v for k, v in raw.items()}
        if number == 1 and "file" not in row:
            raise IngestError("The manifest has no 'file' column naming each video relative to the manifest.",
                              "manifest")
        name = str(row.get("file") or "").strip()
        entry = {key: row.get(key) for key in METADATA_FIELDS}
        entry.update(file=name, path=None, error="", row=number)
        try:
            target = _resolve_in(path.parent, name)
            if not target.is_file():
                raise IngestError(f"{name!r}: no such file beside the manifest.", "not_found")
            entry["path"] = target
        except IngestError as error:
            entry["error"] = error.reason
        result.append(entry)
    return result


def manifest_ingest(path: str | os.PathLike, *, user) -> list[IngestResult]:
    """Ingest every row of a manifest, each on its own; a bad row or file is reported and the rest go on."""
    results = []
    for row in manifest_rows(path):
        name = row["file"] or f"row {row['row']}"
        if row["error"]:
            results.append(IngestResult(name=name, reason=row["error"], code="manifest"))
            continue
        metadata = {key: row[key] for key in METADATA_FIELDS}
        if not metadata.get("title"):
            metadata["title"] = Path(row["path"]).stem
        results.append(attempt(name, lambda row=row, metadata=metadata: file_ingest(
            row["path"], user=user, metadata=metadata)))
    return results


@dataclass
class IngestSummary:
    admitted: int = 0
    refused_by_rule: int = 0
    refused: int = 0


def summarise(results: list[IngestResult]) -> IngestSummary:
    """Counts for a list of results (used by the command)."""
    summary = IngestSummary()
    for result in results:
        if not result.ok:
            summary.refused += 1
        elif result.video.admission == SourceVideo.Admission.ADMITTED:
            summary.admitted += 1
        else:
            summary.refused_by_rule += 1
    return summary
