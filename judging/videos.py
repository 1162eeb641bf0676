"""Models under test and their generated videos (services).

* :func:`model_register` - a model under test, by name (idempotent).
* :func:`videos_register_folder` - the published layout ``<folder>/<index>.mp4``, one video per benchmark task: each
  file is probed and stored through ``default_storage``; a task without a file, or with a file that cannot be read,
  gets a :class:`~judging.models.GeneratedVideo` with status ``missing`` / ``unreadable`` and the reason. Listed,
  never fatal. Registering the same folder again changes nothing; a changed file replaces the stored one.
* :func:`frames_extract` - the judge's frames of one video, once: ``n`` evenly spaced frames (the middle of ``n``
  equal parts, as the published evaluator samples them) as JPEG files in storage, their names kept in
  ``GeneratedVideo.frames``. Idempotent and safe to call from several threads or processes at once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from datasets import video_io
from judging.models import GeneratedVideo, ModelUnderTest
from rubrics.models import BenchmarkTask

logger = logging.getLogger(__name__)

#: Extensions looked for, in this order, when ``<index>.mp4`` is absent (the published evaluator accepts these).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")
VIDEO_ROOT = "generated"
FRAME_ROOT = "judge_frames"
FRAME_JPEG_QUALITY = 90
#: Frames wider than this are scaled down before encoding (a judge gains nothing from more; requests stay small).
FRAME_MAX_WIDTH = 1024
Status = GeneratedVideo.Status


def model_register(*, name: str, description: str = "", user=None) -> ModelUnderTest:
    """The model under test called `name`, created if new; a non-empty `description` replaces the old one."""
    name = (name or "").strip()
    if not name:
        raise ValueError("a model under test needs a name")
    model, created = ModelUnderTest.objects.get_or_create(
        name=name, defaults={"description": description or "", "created_by": user})
    if not created and description and description != model.description:
        model.description = description
        model.save(update_fields=["description"])
    return model


@dataclass
class FolderReport:
    registered: list[int] = field(default_factory=list)  # stored now (new or changed)
    unchanged: list[int] = field(default_factory=list)
    missing: list[tuple[int, str]] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files in the folder that name no benchmark task

    @property
    def ok(self) -> int:
        return len(self.registered) + len(self.unchanged)

    def summary(self) -> str:
        return (f"{self.ok} videos ({len(self.registered)} stored, {len(self.unchanged)} unchanged), "
                f"{len(self.missing)} missing, {len(self.unreadable)} unreadable, {len(self.ignored)} files ignored")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def _sha256_file(handle) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _same_file(stored_name: str, path: Path) -> bool:
    if not stored_name or not default_storage.exists(stored_name):
        return False
    try:
        if default_storage.size(stored_name) != path.stat().st_size:
            return False
        with default_storage.open(stored_name, "rb") as stored, open(path, "rb") as local:
            return _sha256_file(stored) == _sha256_file(local)
    except OSError:
        return False


def _find_video(folder: Path, index: int) -> Path | None:
    for ext in VIDEO_EXTENSIONS:
        candidate = folder / f"{index}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _delete_frames(names) -> None:
    for name in names or []:
        try:
            default_storage.delete(name)
        except (FileNotFoundError, OSError):
            pass


def videos_register_folder(*, model: ModelUnderTest, folder: str | os.PathLike) -> FolderReport:
    """Register `model`'s videos from `folder` (``<index>.mp4`` per benchmark task); see the module docstring."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    report = FolderReport()
    tasks = list(BenchmarkTask.objects.order_by("index").only("id", "index"))
    known = {task.index for task in tasks}
    for entry in sorted(folder.iterdir()):
        stem_is_task = entry.stem.isdigit() and int(entry.stem) in known
        if entry.is_file() and not (stem_is_task and entry.suffix.lower() in VIDEO_EXTENSIONS):
            report.ignored.append(entry.name)
    existing = {v.task_id: v for v in GeneratedVideo.objects.filter(model=model)}
    for task in tasks:
        video = existing.get(task.pk) or GeneratedVideo(model=model, task=task)
        path = _find_video(folder, task.index)
        if path is None:
            reason = f"no video file {task.index}.mp4 in {folder}"
            _set_problem(video, Status.MISSING, reason)
            report.missing.append((task.index, reason))
            continue
        try:
            info = video_io.probe(path)
        except video_io.UnreadableVideo as exc:
            reason = f"{path.name}: {exc.reason}"
            _set_problem(video, Status.UNREADABLE, reason)
            report.unreadable.append((task.index, reason))
            continue
        if video.pk and video.status == Status.OK and _same_file(video.file.name, path):
            report.unchanged.append(task.index)
            continue
        old_file, old_frames = (video.file.name if video.file else ""), list(video.frames or [])
        name = f"{VIDEO_ROOT}/{_slug(model.name)}/{task.index}.{info.extension}"
        if default_storage.exists(name):
            default_storage.delete(name)
        with open(path, "rb") as handle:
            stored = default_storage.save(name, File(handle, name=path.name))
        video.file.name = stored
        video.status, video.reason = Status.OK, ""
        video.width, video.height, video.fps, video.frame_count = info.width, info.height, info.fps, info.frame_count
        video.frames = []
        video.save()
        if old_file and old_file != stored:
            default_storage.delete(old_file)
        _delete_frames(old_frames)
        report.registered.append(task.index)
    logger.info("model %s: %s", model.name, report.summary())
    return report


def _set_problem(video: GeneratedVideo, status: str, reason: str) -> None:
    if video.pk and video.status == status and video.reason == reason:
        return
    old_file, old_frames = (video.file.name if video.file else ""), list(video.frames or [])
    video.status, video.reason = status, reason
    video.file.name = ""
    video.frames = []
    video.width = video.height = video.frame_count = 0
    video.fps = 0
    video.save()
    if old_file and old_file.startswith(f"{VIDEO_ROOT}/"):
        default_storage.delete(old_file)
    _delete_frames(old_frames)


# ---------------------------------------------------------------------------------------------------- frames


def frame_positions(frame_count: int, n: int) -> list[int]:
    """``n`` evenly spaced frame numbers: the middle of each of ``n`` equal parts, as the published evaluator takes
    them (``int(i * step + step / 2)``, ``step = frame_count / n``); repeats when the video is shorter than ``n``."""
    if n < 1:
        raise ValueError("n must be at least 1")
    if frame_count < 1:
        raise ValueError("the video has no frames")
    step = frame_count / n
    return [min(frame_count - 1, int(i * step + step / 2)) for i in range(n)]


def frame_names(video: GeneratedVideo, n: int) -> list[str]:
    return [f"{FRAME_ROOT}/{video.model_id}/{video.task_id}/{n}-{i:02d}.jpg" for i in range(n)]


@contextmanager
def local_path(fieldfile) -> Iterator[str]:
    """A local filesystem path of a stored file: the file itself on local storage, else a temporary copy."""
    try:
        path = fieldfile.path
    except (NotImplementedError, AttributeError):
        path = None
    if path:
        yield path
        return
    with tempfile.NamedTemporaryFile(suffix=Path(fieldfile.name).suffix) as copy:
        with fieldfile.open("rb") as source:
            shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.flush()
        yield copy.name


def _encode(frame) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", video_io.downscale(frame, FRAME_MAX_WIDTH),
                            [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])
    if not ok:
        raise video_io.UnreadableVideo("A frame cannot be encoded as JPEG.")
    return data.tobytes()


_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _video_lock(video_id: int) -> threading.Lock:
    with _locks_guard:
        if len(_locks) > 4096:
            _locks.clear()
        return _locks.setdefault(video_id, threading.Lock())


def _frames_ready(names: list[str], current: list) -> bool:
    return list(current or []) == names and all(default_storage.exists(name) for name in names)


def frames_extract(*, video: GeneratedVideo, n: int = 8) -> list[str]:
    """The storage names of `video`'s ``n`` judge frames, extracting them the first time (see the module docstring).

    Decoding happens outside any transaction (one forward pass, :func:`datasets.video_io.read_frames`); the files are
    written and ``frames`` set under a row lock, so concurrent callers (threads of one process wait for each other;
    other processes at worst decode twice) end with one set of files. Raises
    :class:`~datasets.video_io.UnreadableVideo` when the video cannot be decoded and ``ValueError`` for a video
    that is not ``ok``."""
    if video.status != Status.OK or not video.file:
        raise ValueError(f"video {video.pk} is {video.status}, it has no frames to extract")
    names = frame_names(video, n)
    if _frames_ready(names, video.frames):
        return names
    with _video_lock(video.pk):
        current = GeneratedVideo.objects.filter(pk=video.pk).values_list("frames", flat=True).first()
        if _frames_ready(names, current):
            video.frames = names
            return names
        positions = frame_positions(video.frame_count, n)
        with local_path(video.file) as path:
            jpegs = [_encode(frame) for frame in video_io.read_frames(path, positions)]
        with transaction.atomic():
            locked = GeneratedVideo.objects.select_for_update().get(pk=video.pk)
            if not _frames_ready(names, locked.frames):
                for name, data in zip(names, jpegs):
                    if default_storage.exists(name):
                        default_storage.delete(name)
                    saved = default_storage.save(name, ContentFile(data))
                    if saved != name:  # a storage that renames on collision: keep exact names or fail loudly
                        raise RuntimeError(f"storage saved frame {name} as {saved}")
                GeneratedVideo.objects.filter(pk=video.pk).update(frames=names)
        video.frames = names
        return names


def frames_read(names: list[str]) -> list[bytes]:
    """The JPEG bytes of stored frames, in order."""
    out = []
    for name in names:
        with default_storage.open(name, "rb") as handle:
            out.append(handle.read())
    return out
