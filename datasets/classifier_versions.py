"""Classifier versions: the micro / non-micro VideoMAE classifier trained from the experts' labels, its evaluation,
registration and activation, and what the rest of the site reads from the active version.

The labelled set
    Every clip-verification Decision (workflow ``clip_verification``, target a Clip) whose ``extra`` carries
    ``{"micro": true}`` or ``{"micro": false}`` is one expert's label. A clip's label is the majority of its
    experts' labels; a tie is left out (no label), and so is a clip without a file. See :func:`labelled_set`.

Training (:func:`classifier_train` = :func:`classifier_train_start` + :func:`classifier_train_run`)
    The labelled set is split 80/20, stratified by label, with scikit-learn's ``train_test_split`` and the given
    seed; the split (clip ids and labels) is frozen in the version's ``config`` when the version is registered, so
    a re-delivered job trains on exactly the same clips. The base model (a local VideoMAE directory) is fine-tuned
    with :func:`datasets.classifier.train_classifier` (paper defaults: lr 5e-5, 10 epochs) on ``FRAMES_PER_CLIP``
    evenly spaced frames of each training clip, saved under ``<CLASSIFIERS_ROOT>/<version>/`` (default
    ``VAR_DIR/classifiers``; a local directory: the workers that run the classify stage must see it), then loaded
    back through the same :func:`datasets.classifier.load_classifier` the pipeline uses and evaluated on the test
    clips: accuracy, precision, recall and F1 (micro is the positive class; a clip is called micro when
    p(micro) >= ``PIPELINE["CLASSIFIER_THRESHOLD"]``, the threshold the pipeline applies) and the confusion matrix
    (rows: true non-micro, micro; columns: predicted non-micro, micro). Any failure marks the version failed with the
    error; nothing is half-registered.

Activation (:func:`classifier_activate`)
    Admins make one ready version active (a partial unique constraint keeps it one); the classify stage then loads
    :func:`active_classifier_dir` instead of ``PIPELINE["CLASSIFIER_DIR"]``, which stays the fallback when no version
    is active. Activating and training are written to the action log.

Least sure first (:func:`uncertainty_order`)
    Orders clips (or clip-verification queue assignments) by ``|p(micro) - 0.5|`` ascending: clips scored by the
    active version first, then clips scored by another classifier, unclassified clips last.
"""
from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Case, F, FloatField, IntegerField, OuterRef, QuerySet, Subquery, Value, When
from django.db.models.functions import Abs

from annotation.models import Assignment, Decision, Workflow
from annotation.services import log_action
from datasets.models import ClassifierVersion, Clip
from microverse_site.roles import ADMIN, has_role

logger = logging.getLogger(__name__)

DEFAULT_LR = 5e-5
DEFAULT_EPOCHS = 10
DEFAULT_SEED = 0
TEST_SIZE = 0.2
LABEL_NAMES = ("non-micro", "micro")  # the confusion matrix's row/column order: index 0 non-micro, 1 micro


class ClassifierTrainingError(Exception):
    """Training cannot start (too few labels, a bad base model, bad settings) or a version cannot be activated.
    The message is for people."""


# ------------------------------------------------------------------------------------------------ labelled set


@dataclass(frozen=True)
class LabelledClip:
    clip_id: int
    micro: bool
    votes: int  # experts who gave a micro label
    majority: int  # of them, how many gave the winning label


def _micro_label(extra: Any) -> bool | None:
    """An expert's micro label from ``Decision.extra``: True, False, or None (no label given)."""
    if not isinstance(extra, dict):
        return None
    value = extra.get("micro")
    return value if isinstance(value, bool) else None


def labelled_set() -> list[LabelledClip]:
    """Clips with an expert micro label: the majority of their experts' labels (ties and clips without a file left
    out), in clip id order."""
    clip_type = ContentType.objects.get_for_model(Clip)
    rows = Decision.objects.filter(item__workflow=Workflow.CLIP_VERIFICATION,
                                   item__content_type=clip_type).values_list("item__object_id", "extra")
    votes: dict[int, Counter] = defaultdict(Counter)
    for clip_id, extra in rows.iterator():
        label = _micro_label(extra)
        if label is not None:
            votes[int(clip_id)][label] += 1
    with_files = set(Clip.objects.filter(pk__in=list(votes)).exclude(file="").values_list("pk", flat=True))
    labelled = []
    for clip_id in sorted(votes):
        yes, no = votes[clip_id][True], votes[clip_id][False]
        if clip_id not in with_files or yes == no:
            continue
        labelled.append(LabelledClip(clip_id=clip_id, micro=yes > no, votes=yes + no, majority=max(yes, no)))
    return labelled


def split_labelled(labelled: list[LabelledClip], *, seed: int,
                   test_size: float = TEST_SIZE) -> tuple[list[LabelledClip], list[LabelledClip]]:
    """Stratified train/test split (scikit-learn, ``random_state=seed``). Raises :class:`ClassifierTrainingError`
    when the set is too small for a stratified split (each label needs at least 2 clips, and the test part must hold
    at least one clip of each label)."""
    counts = Counter(item.micro for item in labelled)
    n_test = math.ceil(test_size * len(labelled))
    if len(counts) < 2 or min(counts.values()) < 2 or n_test < 2 or len(labelled) - n_test < 2:
        raise ClassifierTrainingError(
            f"Not enough expert labels to train and test: {counts.get(True, 0)} micro and {counts.get(False, 0)} "
            f"non-micro clips have a majority label; each label needs at least 2 clips and the "
            f"{round(test_size * 100)} % test split at least one clip of each (10 labelled clips, 5 of each, "
            "is the least that works)."
        )
    from sklearn.model_selection import train_test_split

    try:
        train, test = train_test_split(labelled, test_size=test_size, random_state=seed,
                                       stratify=[item.micro for item in labelled])
    except ValueError as exc:
        raise ClassifierTrainingError(f"The labelled set cannot be split: {exc}") from None
    return sorted(train, key=lambda c: c.clip_id), sorted(test, key=lambda c: c.clip_id)


# ---------------------------------------------------------------------------------------------------- training


def classifiers_root() -> Path:
    """Where trained versions are saved: ``settings.CLASSIFIERS_ROOT`` if set, else ``VAR_DIR/classifiers``."""
    root = getattr(settings, "CLASSIFIERS_ROOT", "") or Path(settings.VAR_DIR) / "classifiers"
    return Path(root)


def _check_base(base_dir: str) -> Path:
    from datasets import classifier

    path = Path(str(base_dir or "").strip()).expanduser()
    if not str(base_dir or "").strip():
        raise ClassifierTrainingError("Give the base model directory (a local VideoMAE model) to fine-tune from.")
    try:
        classifier._read_videomae_config(path)
    except classifier.ClassifierUnavailable as exc:
        raise ClassifierTrainingError(str(exc)) from None
    return path.resolve()


def classifier_train_start(*, base_dir: str, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                           seed: int = DEFAULT_SEED, user=None, request_id: str = "") -> ClassifierVersion:
    """Check the inputs, freeze the labelled set and its split, and register a version in status ``training``.
    Raises :class:`ClassifierTrainingError` (nothing registered) when training cannot start."""
    try:
        lr, epochs, seed = float(lr), int(epochs), int(seed)
    except (TypeError, ValueError):
        raise ClassifierTrainingError("lr must be a number, epochs and seed whole numbers.") from None
    if not (math.isfinite(lr) and lr > 0):
        raise ClassifierTrainingError("The learning rate must be a positive number.")
    if not 1 <= epochs <= 1000:
        raise ClassifierTrainingError("Epochs must be between 1 and 1000.")
    base = _check_base(base_dir)
    train, test = split_labelled(labelled_set(), seed=seed)
    config = {
        "lr": lr, "epochs": epochs, "seed": seed, "test_size": TEST_SIZE,
        "frames_per_clip": int(settings.PIPELINE["FRAMES_PER_CLIP"]),
        "train": [[c.clip_id, c.micro] for c in train],
        "test": [[c.clip_id, c.micro] for c in test],
    }
    with transaction.atomic():
        version = ClassifierVersion.objects.create(
            version=f"pending-{uuid.uuid4().hex[:16]}", base_dir=str(base), status=ClassifierVersion.Status.TRAINING,
            config=config, train_count=len(train), test_count=len(test), created_by=user,
        )
        version.version = f"v{version.pk}"
        version.path = str(classifiers_root() / version.version)
        version.save(update_fields=["version", "path"])
        log_action(actor=user, verb="classifier_train", target=version, request_id=request_id,
                   after={"version": version.version, "base_dir": str(base), "lr": lr, "epochs": epochs,
                          "seed": seed, "train": len(train), "test": len(test)})
    return version


def classifier_train_request(*, base_dir: str, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                             seed: int = DEFAULT_SEED, user=None, request_id: str = "") -> ClassifierVersion:
    """Register a version (:func:`classifier_train_start`) and queue its training on a worker once committed."""
    from datasets import classifier_tasks

    version = classifier_train_start(base_dir=base_dir, lr=lr, epochs=epochs, seed=seed, user=user,
                                     request_id=request_id)
    transaction.on_commit(lambda: classifier_tasks.enqueue(version.pk))
    return version


def clip_frames(clip: Clip) -> list:
    """``PIPELINE["FRAMES_PER_CLIP"]`` evenly spaced frames of the clip's file (BGR), as the classify stage samples
    them (the middle of equal parts)."""
    from datasets import video_io
    from datasets.pipeline import local_video_path

    count = max(1, int(settings.PIPELINE["FRAMES_PER_CLIP"]))
    length = int(clip.end_frame - clip.start_frame)
    with local_video_path(clip.file) as path:
        try:
            return video_io.read_frames(path, _even_indices(length, count))
        except video_io.UnreadableVideo:
            # The file holds fewer frames than the clip's span says: sample what it really has.
            info = video_io.probe(path)
            return video_io.read_frames(path, _even_indices(info.frame_count, count))


def _even_indices(length: int, count: int) -> list[int]:
    n = max(0, min(count, length))
    return [int((i + 0.5) * length / n) for i in range(n)]


def _labelled_frames(pairs: list[list], clips: dict[int, Clip]):
    for clip_id, micro in pairs:
        yield clip_frames(clips[clip_id]), bool(micro)


def evaluate(model, test: list[tuple[list, bool]], *, threshold: float) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 (micro positive) and the confusion matrix of ``model`` (a loaded
    :class:`datasets.classifier.Classifier`) on ``(frames, is_micro)`` pairs."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    truth, probabilities = [], []
    for frames, micro in test:
        truth.append(bool(micro))
        probabilities.append(float(model.predict(frames)))
    predicted = [p >= threshold for p in probabilities]
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="binary", pos_label=True,
                                                               zero_division=0)
    matrix = confusion_matrix(truth, predicted, labels=[False, True])
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "confusion_matrix": {"labels": list(LABEL_NAMES), "matrix": matrix.astype(int).tolist()},
        "threshold": float(threshold),
        "test_probabilities": [round(p, 6) for p in probabilities],
    }


def classifier_train_run(*, version_id: int) -> ClassifierVersion:
    """Train and evaluate a registered version. Idempotent: a version that is no longer ``training`` (ready or
    failed) is returned as it is; a re-delivered job starts again from scratch into the same directory."""
    version = ClassifierVersion.objects.get(pk=version_id)
    if version.status != ClassifierVersion.Status.TRAINING:
        return version
    out_dir = Path(version.path)
    try:
        metrics = _train_and_evaluate(version, out_dir)
    except Exception as exc:  # any failure: the version is failed, with the error a person reads
        logger.exception("classifier version %s failed", version.version)
        shutil.rmtree(out_dir, ignore_errors=True)
        error = f"{type(exc).__name__}: {exc}"
        with transaction.atomic():
            ClassifierVersion.objects.filter(pk=version.pk).update(status=ClassifierVersion.Status.FAILED,
                                                                   error=error[:10000])
            log_action(actor=None, verb="classifier_failed", target=version, after={"error": error[:2000]})
    else:
        with transaction.atomic():
            ClassifierVersion.objects.filter(pk=version.pk).update(status=ClassifierVersion.Status.READY,
                                                                   metrics=metrics, error="")
            log_action(actor=None, verb="classifier_ready", target=version,
                       after={k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "model_version")})
    return ClassifierVersion.objects.get(pk=version.pk)


def _train_and_evaluate(version: ClassifierVersion, out_dir: Path) -> dict[str, Any]:
    from datasets import classifier

    config = version.config
    train_pairs, test_pairs = config["train"], config["test"]
    ids = [clip_id for clip_id, _ in train_pairs + test_pairs]
    clips = Clip.objects.in_bulk(ids)
    gone = sorted(set(ids) - set(clips))
    if gone:
        raise ClassifierTrainingError(f"{len(gone)} labelled clip(s) no longer exist: {gone[:10]}")
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a re-delivered job: start again from a clean directory
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    result = classifier.train_classifier(
        model_dir=version.base_dir, clips=_labelled_frames(train_pairs, clips), out_dir=out_dir,
        epochs=int(config["epochs"]), lr=float(config["lr"]), seed=int(config["seed"]),
    )
    model = classifier.load_classifier(out_dir)
    test = [(clip_frames(clips[clip_id]), bool(micro)) for clip_id, micro in test_pairs]
    metrics = evaluate(model, test, threshold=float(settings.PIPELINE["CLASSIFIER_THRESHOLD"]))
    metrics.update({
        "epoch_losses": [float(x) for x in result["epoch_losses"]],
        "model_version": model.version,
        "train_count": len(train_pairs),
        "test_count": len(test_pairs),
        "test_clip_ids": [clip_id for clip_id, _ in test_pairs],
    })
    return metrics


def classifier_train(*, base_dir: str, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                     seed: int = DEFAULT_SEED, user=None, request_id: str = "") -> ClassifierVersion:
    """Register and train a version in this process (the command line and tests; the pages queue it instead).
    Returns the version, ready or failed; raises :class:`ClassifierTrainingError` if training cannot start."""
    version = classifier_train_start(base_dir=base_dir, lr=lr, epochs=epochs, seed=seed, user=user,
                                     request_id=request_id)
    return classifier_train_run(version_id=version.pk)


# -------------------------------------------------------------------------------------------------- activation


def _require_admin(user) -> None:
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDenied("Only admins choose the pipeline's classifier.")


def classifier_activate(*, version: ClassifierVersion, user, request_id: str = "") -> ClassifierVersion:
    """Make ``version`` the one active classifier (admins only; ``user=None`` for the command line). Only a ready
    version whose directory still holds a model can be activated. Logged."""
    _require_admin(user)
    with transaction.atomic():
        version = ClassifierVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != ClassifierVersion.Status.READY:
            raise ClassifierTrainingError(f"Version {version.version} is {version.status}; only a ready version "
                                          "can be activated.")
        if not (Path(version.path) / "config.json").is_file():
            raise ClassifierTrainingError(f"Version {version.version}'s model directory {version.path} is gone.")
        previous = list(ClassifierVersion.objects.select_for_update().filter(is_active=True)
                        .exclude(pk=version.pk).values_list("version", flat=True))
        if version.is_active:
            return version
        ClassifierVersion.objects.filter(is_active=True).update(is_active=False)
        version.is_active = True
        version.save(update_fields=["is_active"])
        log_action(actor=user, verb="classifier_activate", target=version, request_id=request_id,
                   before={"active": previous[0] if previous else None}, after={"active": version.version})
    return version


def classifier_deactivate(*, user, request_id: str = "") -> ClassifierVersion | None:
    """No active version: the classify stage goes back to ``PIPELINE["CLASSIFIER_DIR"]``. Admins only; logged."""
    _require_admin(user)
    with transaction.atomic():
        active = ClassifierVersion.objects.select_for_update().filter(is_active=True).first()
        if active is None:
            return None
        active.is_active = False
        active.save(update_fields=["is_active"])
        log_action(actor=user, verb="classifier_deactivate", target=active, request_id=request_id,
                   before={"active": active.version}, after={"active": None})
    return active


def active_version() -> ClassifierVersion | None:
    return ClassifierVersion.objects.filter(is_active=True, status=ClassifierVersion.Status.READY).first()


def active_classifier_dir() -> str:
    """The model directory the classify stage loads: the active version's, else ``PIPELINE["CLASSIFIER_DIR"]``
    ("" when neither: clips stay unclassified)."""
    path = (ClassifierVersion.objects.filter(is_active=True, status=ClassifierVersion.Status.READY)
            .values_list("path", flat=True).first())
    return path or settings.PIPELINE["CLASSIFIER_DIR"]


# ------------------------------------------------------------------------------------------ least sure first


def uncertainty_order(queryset: QuerySet) -> QuerySet:
    """``queryset`` (of Clips, or of Assignments of the clip-verification workflow) ordered least sure first:
    ``|p(micro) - 0.5|`` ascending; clips scored by the active version before clips scored by another classifier,
    unclassified clips last; ties by id. Replaces the queryset's ordering; adds ``uncertainty`` and
    ``uncertainty_rank`` annotations."""
    if queryset.model is Clip:
        probability, scored_by = F("micro_probability"), F("classifier_version")
    elif queryset.model is Assignment:
        clip = Clip.objects.filter(pk=OuterRef("item__object_id"))
        queryset = queryset.annotate(
            clip_micro_probability=Subquery(clip.values("micro_probability")[:1], output_field=FloatField()),
            clip_classifier_version=Subquery(clip.values("classifier_version")[:1]),
        )
        probability, scored_by = F("clip_micro_probability"), F("clip_classifier_version")
    else:
        raise TypeError(f"uncertainty_order orders Clips or Assignments, not {queryset.model.__name__}")
    active = active_version()
    active_tag = (active.metrics or {}).get("model_version", "") if active else ""
    whens = [When(**{f"{probability.name}__isnull": True}, then=Value(2))]
    if active_tag:
        whens.append(When(**{scored_by.name: active_tag}, then=Value(0)))
    rank = Case(*whens, default=Value(1 if active_tag else 0), output_field=IntegerField())
    return (queryset.annotate(uncertainty=Abs(probability - Value(0.5)), uncertainty_rank=rank)
            .order_by("uncertainty_rank", "uncertainty", "pk"))
