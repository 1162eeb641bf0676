"""Pages of the training jobs (researchers and admins): the dashboard with the launch form, a job's page with its
live log and loss curve, and the admins' weights registry. Thin: services do the work."""
from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from microverse_site.roles import ADMIN, RESEARCHER, role_required
from training_jobs import backends, selectors, services
from training_jobs.forms import LaunchForm, WeightsForm
from training_jobs.models import Checkpoint, TrainingJob

jobs_role_required = role_required(RESEARCHER, ADMIN)


def _rows(jobs):
    return [(job, selectors.job_progress(job)) for job in jobs]


@jobs_role_required
def dashboard(request):
    errors: list[str] = []
    if request.method == "POST":
        form = LaunchForm(request.POST)
        if form.is_valid():
            try:
                job = services.job_create(user=request.user, **form.job_kwargs())
            except services.JobInvalid as exc:
                errors = exc.errors
            else:
                services.job_queue(job=job)
                messages.success(request, f"Job {job.pk} queued for submission.")
                return redirect("job-detail", pk=job.pk)
    else:
        form = LaunchForm()
    jobs = list(selectors.job_list())
    if request.htmx and request.method == "GET":
        for job in jobs[:20]:
            if not job.is_final:
                services.job_refresh_if_stale(job=job)
        return render(request, "training_jobs/dashboard.html#jobs-table", {"rows": _rows(selectors.job_list())})
    context = {"form": form, "errors": errors, "rows": _rows(jobs), "lr_defaults": services.LR_DEFAULTS}
    return render(request, "training_jobs/dashboard.html", context, status=400 if errors or form.errors else 200)


def _job_context(job):
    return {"job": job, "progress": selectors.job_progress(job), "timeline": selectors.job_timeline(job),
            "loss": selectors.loss_curve(job), "checkpoints": job.checkpoints.order_by("step"),
            "can_resume": job.kind == TrainingJob.Kind.FINETUNE and job.state in (
                TrainingJob.State.FAILED, TrainingJob.State.TIMEOUT, TrainingJob.State.CANCELLED,
                TrainingJob.State.LOST) and job.checkpoints.exists(),
            "script": _read(job, backends.SCRIPT_FILE)}


def _read(job, name):
    if not job.work_dir:
        return ""
    try:
        return (Path(job.work_dir) / name).read_text(errors="replace")[:20000]
    except OSError:
        return ""


@jobs_role_required
def job_detail(request, pk: int):
    job = get_object_or_404(TrainingJob.objects.select_related("base_model", "parent", "created_by"), pk=pk)
    job = services.job_refresh_if_stale(job=job)
    return render(request, "training_jobs/job_detail.html", _job_context(job))


@jobs_role_required
def job_live(request, pk: int):
    """The live part of a job's page (state, progress, log tail, loss data), polled by htmx; 286 at a final state.
    Refreshes the job from the scheduler at most every few seconds, so the page moves even without Celery beat."""
    job = get_object_or_404(TrainingJob.objects.select_related("base_model"), pk=pk)
    job = services.job_refresh_if_stale(job=job)
    response = render(request, "training_jobs/job_detail.html#live", _job_context(job))
    if job.is_final and request.htmx:
        response.status_code = HttpResponseStopPolling.status_code
    return response


@require_POST
@jobs_role_required
def job_cancel(request, pk: int):
    job = get_object_or_404(TrainingJob, pk=pk)
    try:
        job = services.job_cancel(job=job, user=request.user)
    except backends.BackendError as exc:
        messages.error(request, f"Could not cancel: {exc}")
    else:
        messages.info(request, f"Job {job.pk}: cancel requested ({job.get_state_display()}).")
    return redirect("job-detail", pk=pk)


@require_POST
@jobs_role_required
def job_resume(request, pk: int):
    job = get_object_or_404(TrainingJob, pk=pk)
    try:
        resumed = services.job_resume(job=job, user=request.user)
    except services.JobInvalid as exc:
        messages.error(request, "Cannot resume: " + " ".join(exc.errors))
        return redirect("job-detail", pk=pk)
    messages.success(request, f"Job {resumed.pk} resumes job {job.pk} from its last checkpoint.")
    return redirect("job-detail", pk=resumed.pk)


@require_POST
@jobs_role_required
def job_generate(request, pk: int):
    job = get_object_or_404(TrainingJob, pk=pk)
    checkpoint = None
    if request.POST.get("checkpoint"):
        checkpoint = get_object_or_404(Checkpoint, pk=request.POST["checkpoint"], job=job)
    try:
        generation = services.job_generate_from(job=job, checkpoint=checkpoint, user=request.user)
    except services.JobInvalid as exc:
        messages.error(request, "Cannot generate: " + " ".join(exc.errors))
        return redirect("job-detail", pk=pk)
    messages.success(request, f"Generation job {generation.pk} queued.")
    return redirect("job-detail", pk=generation.pk)


@role_required(ADMIN)
def weights(request):
    errors: list[str] = []
    if request.method == "POST":
        form = WeightsForm(request.POST)
        if form.is_valid():
            try:
                registered = services.weights_register(user=request.user, **form.cleaned_data)
            except services.JobInvalid as exc:
                errors = exc.errors
            else:
                messages.success(request, f"Registered {registered.name} ({registered.path}).")
                return redirect("job-weights")
    else:
        form = WeightsForm()
    return render(request, "training_jobs/weights.html",
                  {"form": form, "errors": errors, "weights": selectors.weights_list()},
                  status=400 if errors or form.errors else 200)
