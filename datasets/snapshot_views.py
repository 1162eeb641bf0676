"""Dataset snapshot and classifier version pages (researchers and admins; activating a classifier: admins only).
Thin: parse, authorise, call ``datasets.snapshots`` / ``datasets.classifier_versions``, render."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from datasets import classifier_versions as cv
from datasets import snapshots
from datasets.models import ClassifierVersion, DatasetSnapshot
from microverse_site.roles import ADMIN, RESEARCHER, has_role, role_required

researcher_or_admin = role_required(RESEARCHER, ADMIN)


def _request_id(request) -> str:
    return getattr(request, "request_id", "")


# --------------------------------------------------------------------------------------------------- snapshots


@researcher_or_admin
def snapshot_list(request):
    rows = [{"snapshot": s, "exported": snapshots.export_state(s), "folder": snapshots.default_export_dir(s.name)}
            for s in DatasetSnapshot.objects.select_related("created_by").order_by("-created_at", "-id")]
    context = {"rows": rows, "eligible": snapshots.eligible_clips().count(),
               "snapshot_root": settings.TRAINING["SNAPSHOT_ROOT"]}
    return render(request, "datasets/snapshots.html", context)


@require_POST
@researcher_or_admin
def snapshot_cut(request):
    try:
        snapshot = snapshots.snapshot_create(name=request.POST.get("name", ""), user=request.user,
                                             request_id=_request_id(request))
    except snapshots.SnapshotError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Snapshot {snapshot.name} cut: {snapshot.clip_count} clips, content hash "
                                  f"{snapshot.content_hash[:12]}.")
    return redirect("snapshot-list")


@require_POST
@researcher_or_admin
def snapshot_export(request, pk: int):
    snapshot = get_object_or_404(DatasetSnapshot, pk=pk)
    try:
        manifest = snapshots.snapshot_export(snapshot=snapshot, out_dir=snapshots.default_export_dir(snapshot.name),
                                             user=request.user, request_id=_request_id(request))
    except snapshots.SnapshotError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Snapshot {snapshot.name} exported to {manifest}; a training job finds it by "
                                  "its name.")
    return redirect("snapshot-list")


# ------------------------------------------------------------------------------------------------- classifiers


@researcher_or_admin
def classifier_list(request):
    versions = list(ClassifierVersion.objects.select_related("created_by").order_by("-created_at", "-id"))
    labelled = cv.labelled_set()
    active = next((v for v in versions if v.is_active), None)
    context = {
        "versions": versions, "active": active,
        "any_training": any(v.status == ClassifierVersion.Status.TRAINING for v in versions),
        "labelled": {"total": len(labelled), "micro": sum(1 for c in labelled if c.micro),
                     "non_micro": sum(1 for c in labelled if not c.micro)},
        "fallback_dir": settings.PIPELINE["CLASSIFIER_DIR"],
        "defaults": {"base_dir": active.path if active else settings.PIPELINE["CLASSIFIER_DIR"],
                     "lr": cv.DEFAULT_LR, "epochs": cv.DEFAULT_EPOCHS, "seed": cv.DEFAULT_SEED},
        "can_activate": has_role(request.user, ADMIN),
    }
    return render(request, "datasets/classifiers.html", context)


@require_POST
@researcher_or_admin
def classifier_train(request):
    post = request.POST
    try:
        version = cv.classifier_train_request(
            base_dir=post.get("base_dir", ""), lr=post.get("lr") or cv.DEFAULT_LR,
            epochs=post.get("epochs") or cv.DEFAULT_EPOCHS, seed=post.get("seed") or cv.DEFAULT_SEED,
            user=request.user, request_id=_request_id(request))
    except cv.ClassifierTrainingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Version {version.version} queued: {version.train_count} clips to train on, "
                                  f"{version.test_count} to test on.")
    return redirect("classifier-list")


@require_POST
@researcher_or_admin
def classifier_activate(request, pk: int):
    if not has_role(request.user, ADMIN):
        raise PermissionDenied("Only admins choose the pipeline's classifier.")
    version = get_object_or_404(ClassifierVersion, pk=pk)
    try:
        cv.classifier_activate(version=version, user=request.user, request_id=_request_id(request))
    except cv.ClassifierTrainingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Version {version.version} is now the pipeline's classifier.")
    return redirect("classifier-list")
