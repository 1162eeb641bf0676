"""Training and generation jobs: create (validated), submit, follow, cancel, resume, generate from a checkpoint.

A job's life: ``job_create`` (DRAFT, nothing on the cluster) -> the view queues ``tasks.submit_job`` (SUBMITTING) ->
``job_submit`` writes the work folder (config.json, job.sh) and submits it (PENDING, with the scheduler's id) ->
``job_refresh`` (the periodic task, and the job page's poll) reads the scheduler's state and the files the job writes
(output log, ``output/metrics.jsonl``, checkpoints) until a final state. Every state change appends a
:class:`JobStateChange` in the same transaction.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training_jobs import backends
from training_jobs.wan import config as wan_config
from training_jobs.wan import weights as wan_weights
from training_jobs.models import BaseModelWeights, Checkpoint, JobStateChange, MetricPoint, TrainingJob

logger = logging.getLogger(__name__)
State = TrainingJob.State

# The trainer's own settings (training_jobs.wan.config): the paper's defaults, shown and editable in the launch form.
# A job stores them under config["params"] with the trainer's names; the paths are added at submission.
PATH_KEYS = ("weights", "manifest", "data_root", "output_dir", "checkpoint", "prompts")
FINETUNE_DEFAULTS = {k: v for k, v in wan_config.TrainConfig().to_dict().items() if k not in PATH_KEYS}
LR_DEFAULTS = {"full": wan_config.DEFAULT_LR_FULL, "lora": wan_config.DEFAULT_LR_LORA}
# The paper's generation settings: 50 steps, guidance 5.0, 480x832, 81 frames, a fixed seed.
GENERATE_DEFAULTS = {k: v for k, v in wan_config.GenerateConfig().to_dict().items()
                     if k not in PATH_KEYS and k != "model_name"}


def resource_defaults() -> dict:
    training = settings.TRAINING
    return {"gpus": 1, "gpu_type": training["GPU_TYPE"], "cpus_per_task": training["DEFAULT_CPUS_PER_TASK"],
            "mem": training["DEFAULT_MEM"], "time_limit": training["DEFAULT_TIME_LIMIT"],
            "partition": training["DEFAULT_PARTITION"]}


def finetune_defaults(mode: str = "full") -> dict:
    return {**FINETUNE_DEFAULTS, "mode": mode, "learning_rate": LR_DEFAULTS.get(mode, wan_config.DEFAULT_LR_FULL)}


class JobInvalid(Exception):
    """The job cannot run; `errors` says why (one reason per item). Nothing was created."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


# -------------------------------------------------------------------------------------------------------- weights


def weights_register(*, name: str, path: str, user=None) -> BaseModelWeights:
    name, path = (name or "").strip(), (path or "").strip()
    errors = []
    if not name:
        errors.append("Give the weights a name.")
    elif BaseModelWeights.objects.filter(name=name).exists():
        errors.append(f"Weights named {name!r} are already registered.")
    errors += [f"Weights: {problem}" for problem in wan_weights.weights_problems(path)]
    if errors:
        raise JobInvalid(errors)
    return BaseModelWeights.objects.create(name=name, path=str(Path(path).resolve()), created_by=user)


# ----------------------------------------------------------------------------------------------------- validation


def snapshot_manifest(*, snapshot_name: str = "", manifest_path: str = "") -> Path:
    """The manifest file of a snapshot (by name under TRAINING["SNAPSHOT_ROOT"], or a path). Raises JobInvalid."""
    if manifest_path:
        path = Path(manifest_path)
    elif snapshot_name:
        if not re.fullmatch(r"[\w.\-]+", snapshot_name):
            raise JobInvalid([f"Snapshot name {snapshot_name!r} has characters a snapshot name cannot have."])
        path = Path(settings.TRAINING["SNAPSHOT_ROOT"]) / snapshot_name / "manifest.json"
    else:
        raise JobInvalid(["Choose a dataset snapshot (its name, or the path of its manifest)."])
    if not path.is_file():
        what = f"snapshot {snapshot_name!r}" if snapshot_name and not manifest_path else "manifest"
        raise JobInvalid([f"Unknown {what}: no manifest at {path}."])
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobInvalid([f"The manifest {path} is not readable JSON: {exc}"]) from None
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) and {"video", "prompt"} <= set(e) for e in entries):
        raise JobInvalid([f"The manifest {path} is not a non-empty list of {{id, video, prompt}} entries."])
    return path.resolve()


def _hyperparameter_errors(kind: str, params: dict) -> list[str]:
    """The trainer's own checks (training_jobs.wan.config.validate): frames 4k+1, sizes multiples of 16, a positive
    learning rate, ... Unknown settings are refused too."""
    config_class = wan_config.TrainConfig if kind == TrainingJob.Kind.FINETUNE else wan_config.GenerateConfig
    try:
        config = config_class.from_dict(params)
    except (TypeError, ValueError) as exc:
        return [str(exc)]
    return list(wan_config.validate(config))


def _resource_errors(backend_name: str, resources: dict) -> list[str]:
    gpus = resources.get("gpus")
    if not isinstance(gpus, int) or gpus < 0:
        return [f"GPUs must be a whole number, 0 or more: {gpus!r} is not."]
    errors = []
    if backend_name == "slurm":
        if not re.fullmatch(r"[\w.\-]+", str(resources.get("partition") or "")):
            errors.append("Choose a partition.")
            return errors
        time_limit = str(resources.get("time_limit") or "")
        if not re.fullmatch(r"(\d+-)?\d+(:\d{2}){0,2}|UNLIMITED|INFINITE", time_limit):
            errors.append(f"Time limit {time_limit!r} is not a Slurm time (HH:MM:SS or D-HH:MM:SS).")
        if resources.get("mem") and not re.fullmatch(r"\d+[KMGT]?", str(resources["mem"])):
            errors.append(f"Memory {resources['mem']!r} is not a Slurm size (e.g. 128G).")
        if not isinstance(resources.get("cpus_per_task"), int) or resources["cpus_per_task"] <= 0:
            errors.append("CPUs per task must be a positive whole number.")
    if gpus == 0:
        return errors
    try:
        backend = backends.backend_for(backend_name)
        available = backend.partition_gpus(str(resources.get("partition") or ""), resources.get("gpu_type") or "")
    except backends.BackendError as exc:
        return errors + [f"Could not ask the scheduler how many GPUs there are: {exc}"]
    if available is None:
        errors.append(f"Unknown partition {resources.get('partition')!r}.")
    elif gpus > available:
        where = f"partition {resources.get('partition')!r}" if backend_name == "slurm" else "this machine"
        errors.append(f"{gpus} GPUs requested, but {where} has at most {available} "
                      f"{resources.get('gpu_type') or 'GPU'} per node.")
    return errors


def job_validate(*, kind: str, base_model: BaseModelWeights | None, snapshot_name: str = "", manifest_path: str = "",
                 config: dict, backend: str) -> tuple[list[str], dict]:
    """(errors, normalised config) for a job that would be created with these settings."""
    errors: list[str] = []
    if kind not in TrainingJob.Kind.values:
        return [f"Unknown job kind {kind!r}."], {}
    if backend not in ("slurm", "local"):
        return [f"Unknown backend {backend!r}."], {}
    config = dict(config or {})
    mode = (config.get("params") or {}).get("mode", "full")
    defaults = finetune_defaults(mode) if kind == TrainingJob.Kind.FINETUNE else GENERATE_DEFAULTS
    params = {**defaults, **(config.get("params") or {})}
    resources = {**resource_defaults(), **(config.get("resources") or {})}
    if base_model is None:
        errors.append("Choose a base model (registered weights).")
    else:
        errors += [f"Base model {base_model.name}: {p}" for p in wan_weights.weights_problems(base_model.path)]
    manifest = ""
    if kind == TrainingJob.Kind.FINETUNE:
        try:
            manifest = str(snapshot_manifest(snapshot_name=snapshot_name, manifest_path=manifest_path))
        except JobInvalid as exc:
            errors += exc.errors
    errors += _hyperparameter_errors(kind, params)
    errors += _resource_errors(backend, resources)
    normalised = {"params": params, "resources": resources, "manifest": manifest,
                  "submit_token": config.get("submit_token") or uuid.uuid4().hex[:8]}
    for key in ("model_name", "task_indices"):
        if key in config:
            normalised[key] = config[key]
    return errors, normalised


def job_create(*, kind: str, base_model: BaseModelWeights | None, snapshot_name: str = "", manifest_path: str = "",
               config: dict, backend: str, user=None, name: str = "", parent: TrainingJob | None = None,
               checkpoint_path: str = "") -> TrainingJob:
    """A DRAFT job, or JobInvalid with every reason it cannot run (then nothing is created)."""
    errors, normalised = job_validate(kind=kind, base_model=base_model, snapshot_name=snapshot_name,
                                      manifest_path=manifest_path, config=config, backend=backend)
    if checkpoint_path and not Path(checkpoint_path).exists():
        errors.append(f"The checkpoint {checkpoint_path} does not exist.")
    if errors:
        raise JobInvalid(errors)
    params = normalised["params"]
    total = params["max_steps"] if kind == TrainingJob.Kind.FINETUNE else 0
    with transaction.atomic():
        job = TrainingJob.objects.create(
            kind=kind, backend=backend, base_model=base_model, snapshot_name=snapshot_name,
            manifest_path=normalised["manifest"] or manifest_path, parent=parent, checkpoint_path=checkpoint_path,
            config=normalised, total_steps=total, created_by=user,
            name=(name or _default_name(kind, base_model, snapshot_name, params))[:120],
        )
        JobStateChange.objects.create(job=job, state=State.DRAFT, detail=f"created by {user}" if user else "created")
    return job


def _default_name(kind, base_model, snapshot_name, params) -> str:
    if kind == TrainingJob.Kind.FINETUNE:
        return f"{base_model.name} {params['mode']} on {snapshot_name or 'manifest'}"
    return f"Generate with {base_model.name}"


def job_queue(*, job: TrainingJob) -> None:
    """DRAFT -> SUBMITTING, and the submit task on the gpu queue once the transaction commits."""
    from training_jobs import tasks

    with transaction.atomic():
        updated = TrainingJob.objects.filter(pk=job.pk, state=State.DRAFT).update(state=State.SUBMITTING,
                                                                                  updated_at=timezone.now())
        if updated:
            JobStateChange.objects.create(job=job, state=State.SUBMITTING, detail="queued for submission")
            transaction.on_commit(lambda: tasks.submit_job.delay(job.pk))
    job.refresh_from_db()


# ------------------------------------------------------------------------------------------------------ submission


def job_work_dir(job: TrainingJob) -> Path:
    return Path(settings.TRAINING["WORK_ROOT"]) / f"job-{job.pk}-{job.config.get('submit_token', 'x')}"


def trainer_config(job: TrainingJob) -> dict:
    """config.json as the trainer (TrainConfig) or the generator (GenerateConfig) reads it."""
    work_dir = Path(job.work_dir)
    params = dict(job.config.get("params") or {})
    output_dir = str(work_dir / backends.OUTPUT_DIR)
    if job.kind == TrainingJob.Kind.FINETUNE:
        return wan_config.TrainConfig.from_dict(
            {**params, "weights": job.base_model.path, "manifest": job.manifest_path, "output_dir": output_dir}
        ).to_dict()
    return wan_config.GenerateConfig.from_dict(
        {**params, "weights": job.base_model.path, "checkpoint": job.checkpoint_path or "",
         "prompts": str(work_dir / "prompts.json"), "output_dir": output_dir,
         "model_name": job.config.get("model_name") or f"job{job.pk}"}
    ).to_dict()


def _link_resume_checkpoint(job: TrainingJob) -> None:
    """A resumed job starts from its parent's checkpoint: linked into its own output folder, where the trainer's
    --resume finds the latest checkpoint."""
    source = Path(job.checkpoint_path)
    target_dir = Path(job.work_dir) / backends.OUTPUT_DIR / wan_weights.CHECKPOINTS_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    if not target.exists() and not target.is_symlink():
        target.symlink_to(source, target_is_directory=True)


def _write_generation_prompts(job: TrainingJob) -> None:
    from rubrics.models import BenchmarkTask

    tasks = BenchmarkTask.objects.order_by("index")
    if job.config.get("task_indices"):
        tasks = tasks.filter(index__in=job.config["task_indices"])
    prompts = [{"index": t.index, "prompt": t.prompt} for t in tasks.only("index", "prompt")]
    (Path(job.work_dir) / "prompts.json").write_text(json.dumps(prompts, ensure_ascii=False, indent=1))


def job_submit(*, job: TrainingJob) -> TrainingJob:
    """Write the work folder and submit the job; idempotent (a re-delivered task finds the job already submitted,
    in the database or, by its unique name, in the scheduler)."""
    job.refresh_from_db()
    if job.state == State.DRAFT:
        with transaction.atomic():
            if TrainingJob.objects.filter(pk=job.pk, state=State.DRAFT).update(state=State.SUBMITTING):
                JobStateChange.objects.create(job=job, state=State.SUBMITTING, detail="submitting")
        job.refresh_from_db()
    if job.state != State.SUBMITTING or job.scheduler_id:
        return job
    backend = backends.backend_for(job.backend)
    work_dir = job_work_dir(job)
    (work_dir / backends.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    if job.work_dir != str(work_dir):
        job.work_dir = str(work_dir)
        TrainingJob.objects.filter(pk=job.pk).update(work_dir=job.work_dir)
    if job.kind == TrainingJob.Kind.GENERATE:
        _write_generation_prompts(job)
    elif job.checkpoint_path:
        _link_resume_checkpoint(job)
    (work_dir / backends.CONFIG_FILE).write_text(json.dumps(trainer_config(job), indent=2))
    script = work_dir / backends.SCRIPT_FILE
    script.write_text(backends.render_script(job, settings.TRAINING, Path(settings.BASE_DIR)))
    script.chmod(0o755)
    try:
        scheduler_id = backend.find(job) or backend.submit(job, script)
    except backends.SubmitRefused as exc:
        return _set_state(job, State.FAILED, detail=f"{job.backend} refused the job: {exc}", reason=str(exc),
                          finished=True)
    except backends.BackendUnavailable as exc:
        TrainingJob.objects.filter(pk=job.pk).update(state_reason=f"Not submitted yet: {exc}")
        raise
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.scheduler_id:
            return locked
        locked.scheduler_id = scheduler_id
        locked.submitted_at = timezone.now()
        locked.state_reason = ""
        locked.save(update_fields=["scheduler_id", "submitted_at", "state_reason", "updated_at"])
        where = f"Slurm job {scheduler_id}" if job.backend == "slurm" else f"local process {scheduler_id}"
        if locked.state == State.SUBMITTING:
            locked.state = State.PENDING
            locked.save(update_fields=["state", "updated_at"])
            JobStateChange.objects.create(job=locked, state=State.PENDING, detail=f"submitted as {where}")
        else:  # cancelled while it was being submitted
            transaction.on_commit(lambda: backend.cancel(locked))
    return locked


def _set_state(job: TrainingJob, state: str, *, detail: str = "", reason: str | None = None,
               finished: bool = False) -> TrainingJob:
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_final or locked.state == state:
            return locked
        locked.state = state
        if reason is not None:
            locked.state_reason = reason
        if finished:
            locked.finished_at = timezone.now()
        locked.save()
        JobStateChange.objects.create(job=locked, state=state, detail=detail)
    return locked


# -------------------------------------------------------------------------------------------------------- follow


def tail_lines(path: Path, lines: int, max_bytes: int = 256 * 1024) -> str:
    """The last `lines` lines of a text file, reading at most `max_bytes` from its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]
    return "\n".join(text.splitlines()[-lines:])


def _log_tail(job: TrainingJob) -> str:
    work_dir = Path(job.work_dir)
    lines = settings.TRAINING.get("LOG_TAIL_LINES", 200)
    out = tail_lines(work_dir / backends.OUTPUT_FILE, lines)
    err = tail_lines(work_dir / backends.ERROR_FILE, lines)
    if err.strip():
        return (out + "\n" if out else "") + "--- stderr ---\n" + err
    return out


def read_metrics(path: Path, after_step: int) -> list[dict]:
    """Metric lines with a step after `after_step` (a half-written last line, or a non-JSON line, is skipped)."""
    points = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    record = json.loads(line)
                    step = int(record["step"])
                except (ValueError, KeyError, TypeError):
                    continue
                if step > after_step:
                    points[step] = record
    except OSError:
        return []
    return [points[step] for step in sorted(points)]


def _float_or_none(value):
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def scan_checkpoints(output_dir: Path) -> list[tuple[int, str]]:
    """(step, path) of each complete checkpoint the trainer wrote (``checkpoints/checkpoint-<step>/``)."""
    found = []
    for path in wan_weights.list_checkpoints(output_dir):
        step = wan_weights.checkpoint_step(path)
        if step is not None:
            found.append((step, str(path.resolve())))
    return found


def job_refresh(*, job: TrainingJob) -> TrainingJob:
    """Ask the backend for the job's state, read its log tail, new metrics and checkpoints; idempotent."""
    job.refresh_from_db()
    if job.is_final or not job.scheduler_id:
        return job
    backend = backends.backend_for(job.backend)
    unavailable = ""
    try:
        status = backend.status(job)
    except backends.BackendUnavailable as exc:
        status, unavailable = None, str(exc)
    work_dir = Path(job.work_dir)
    last_step = MetricPoint.objects.filter(job=job).order_by("-step").values_list("step", flat=True).first() or 0
    new_points = read_metrics(work_dir / backends.OUTPUT_DIR / "metrics.jsonl", last_step)
    checkpoints = scan_checkpoints(work_dir / backends.OUTPUT_DIR)
    log_tail = _log_tail(job)
    now = timezone.now()
    newly_final = False
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_final:
            return job
        MetricPoint.objects.bulk_create([
            MetricPoint(job=job, step=int(p["step"]), loss=_float_or_none(p.get("loss")),
                        lr=_float_or_none(p.get("lr")), seconds=_float_or_none(p.get("seconds")),
                        gpu_memory_mb=_float_or_none(p.get("gpu_memory_mb")))
            for p in new_points], ignore_conflicts=True)
        Checkpoint.objects.bulk_create([Checkpoint(job=job, step=s, path=p) for s, p in checkpoints],
                                       ignore_conflicts=True)
        if new_points:
            job.step = max(job.step, int(new_points[-1]["step"]))
        job.log_tail = log_tail
        if status is None:
            job.state_reason = f"Scheduler unreachable, state not updated: {unavailable}"
        else:
            gpus = int(job.config.get("resources", {}).get("gpus", 0) or 0)
            if status.elapsed_seconds is not None:
                job.gpu_seconds = status.elapsed_seconds * gpus
            job.state_reason = status.reason
            if status.state in (State.RUNNING, *TrainingJob.FINAL_STATES) and job.started_at is None \
                    and status.state != State.LOST:
                job.started_at = now - timedelta(seconds=status.elapsed_seconds or 0)
            if status.exit_code is not None:
                job.exit_code = status.exit_code
            if status.state != job.state:
                job.state = status.state
                detail = status.reason or ""
                if status.exit_code is not None and status.state != State.COMPLETED:
                    detail = f"exit code {status.exit_code}" + (f"; {detail}" if detail else "")
                if status.state in TrainingJob.FINAL_STATES:
                    job.finished_at = now
                    newly_final = True
                JobStateChange.objects.create(job=job, state=status.state, detail=detail)
        job.save()
    if newly_final and job.kind == TrainingJob.Kind.GENERATE and job.state == State.COMPLETED:
        _register_generated_videos(job)
    return job


def _register_generated_videos(job: TrainingJob) -> None:
    """A completed generation job's videos (``<ModelName>/<index>.mp4``) become that model's videos for judging."""
    try:
        from judging import videos
    except ImportError:
        return
    model_name = job.config.get("model_name") or f"job{job.pk}"
    folder = Path(job.work_dir) / backends.OUTPUT_DIR / model_name
    try:
        from judging.models import ModelUnderTest

        model = ModelUnderTest.objects.filter(name=model_name).first() or videos.model_register(
            name=model_name, description=f"Generated by training job {job.pk} ({job.name})", user=job.created_by)
        report = videos.videos_register_folder(model=model, folder=folder)
        summary = f"registered as {model_name}'s videos: {_report_summary(report)}"
    except Exception as exc:  # noqa: BLE001 - the job finished; the registration's failure is shown, not raised
        logger.exception("registering the videos of job %s failed", job.pk)
        summary = f"registering the videos from {folder} failed: {exc}"
    JobStateChange.objects.create(job=job, state=job.state, detail=summary)
    config = {**job.config, "videos_registered": summary}
    TrainingJob.objects.filter(pk=job.pk).update(config=config)


def _report_summary(report) -> str:
    parts = []
    for key in ("registered", "updated", "unchanged", "missing", "unreadable"):
        value = getattr(report, key, None)
        if value is not None:
            parts.append(f"{len(value) if hasattr(value, '__len__') else value} {key}")
    return ", ".join(parts) or str(report)


def active_jobs():
    return TrainingJob.objects.exclude(state__in=[*TrainingJob.FINAL_STATES, State.DRAFT]).order_by("id")


def job_refresh_if_stale(*, job: TrainingJob, min_interval: float | None = None) -> TrainingJob:
    """job_refresh at most once per `min_interval` seconds per job, whoever asks (the poll view): one caller claims
    the refresh by moving updated_at; the others read the job as it is."""
    if job.is_final or not job.scheduler_id:
        return job
    interval = settings.TRAINING.get("PAGE_REFRESH_INTERVAL", 3.0) if min_interval is None else min_interval
    now = timezone.now()
    claimed = TrainingJob.objects.filter(pk=job.pk, updated_at__lte=now - timedelta(seconds=interval)).update(
        updated_at=now)
    if not claimed:
        job.refresh_from_db()
        return job
    try:
        return job_refresh(job=job)
    except Exception:  # noqa: BLE001 - a page view shows the job as stored rather than an error page
        logger.exception("refreshing job %s failed", job.pk)
        job.refresh_from_db()
        return job


# ------------------------------------------------------------------------------------------ cancel, resume, generate


def job_cancel(*, job: TrainingJob, user=None) -> TrainingJob:
    job.refresh_from_db()
    if job.is_final:
        return job
    who = f" by {user}" if user else ""
    if not job.scheduler_id:
        # Not on the cluster yet: the submit task sees the final state and submits nothing.
        return _set_state(job, State.CANCELLED, detail=f"cancelled{who} before submission", finished=True)
    backends.backend_for(job.backend).cancel(job)
    JobStateChange.objects.create(job=job, state=job.state, detail=f"cancel requested{who}")
    return job_refresh(job=job)


def last_checkpoint(job: TrainingJob) -> Checkpoint | None:
    return job.checkpoints.order_by("-step").first()


def job_resume(*, job: TrainingJob, user=None) -> TrainingJob:
    """A new fine-tuning job that continues `job` (failed, timed out, cancelled or lost) from its last checkpoint."""
    if job.kind != TrainingJob.Kind.FINETUNE:
        raise JobInvalid(["Only fine-tuning jobs can be resumed."])
    if job.state not in (State.FAILED, State.TIMEOUT, State.CANCELLED, State.LOST):
        raise JobInvalid([f"Only a failed, timed-out, cancelled or lost job can be resumed; this one is {job.state}."])
    checkpoint = last_checkpoint(job)
    if checkpoint is None:
        raise JobInvalid(["The job saved no checkpoint to resume from."])
    config = {k: v for k, v in job.config.items() if k in ("params", "resources")}
    resumed = job_create(kind=job.kind, base_model=job.base_model, snapshot_name=job.snapshot_name,
                         manifest_path=job.manifest_path, config=config, backend=job.backend, user=user,
                         name=f"{job.name} (resumed at step {checkpoint.step})"[:120], parent=job,
                         checkpoint_path=checkpoint.path)
    job_queue(job=resumed)
    return resumed


def job_generate_from(*, job: TrainingJob, checkpoint: Checkpoint | None, user=None, config: dict | None = None,
                      backend: str | None = None) -> TrainingJob:
    """A generation job: the benchmark's prompts, one video per task, from `checkpoint` of `job` (or, with no
    checkpoint, the job's base model); its videos register as a judging model's videos when it completes."""
    if checkpoint is not None and checkpoint.job_id != job.pk:
        raise JobInvalid(["That checkpoint belongs to another job."])
    config = dict(config or {})
    suffix = f"step{checkpoint.step}" if checkpoint else "base"
    config.setdefault("model_name", re.sub(r"[^\w.\-]+", "-", f"{job.base_model.name}-job{job.pk}-{suffix}"))
    config.setdefault("resources", {k: v for k, v in job.config.get("resources", {}).items()})
    generation = job_create(kind=TrainingJob.Kind.GENERATE, base_model=job.base_model, config=config,
                            backend=backend or job.backend, user=user, parent=job,
                            checkpoint_path=checkpoint.path if checkpoint else "",
                            name=f"Generate benchmark videos: {config['model_name']}")
    job_queue(job=generation)
    return generation
