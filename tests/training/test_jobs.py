"""Training jobs through the services, the pages and the API, on a REAL single-node Slurm cluster (and the local
subprocess backend). The job scripts run tests/training/quick_job.py in place of the trainer (settings override of
the trainer command); the real tiny trainer runs in test_real_tiny_training_through_slurm."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from django.urls import reverse

from tests.training.slurm_cluster import slurm_cluster, slurm_settings  # noqa: F401  (fixtures)
from training_jobs import services, tasks
from training_jobs.models import BaseModelWeights, Checkpoint, JobStateChange, MetricPoint, TrainingJob

QUICK_JOB = Path(__file__).resolve().parent / "quick_job.py"
State = TrainingJob.State


def fake_weights_dir(path: Path) -> Path:
    """The diffusers layout the weights check looks for (the quick job never loads it)."""
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        (path / sub).mkdir()
    return path


@pytest.fixture
def weights(db, tmp_path):
    return BaseModelWeights.objects.create(name="Wan-test", path=str(fake_weights_dir(tmp_path / "wan")))


@pytest.fixture
def snapshot(tmp_path, settings):
    root = tmp_path / "snapshots"
    (root / "snap1").mkdir(parents=True)
    (root / "snap1" / "manifest.json").write_text(json.dumps([{"id": "c1", "video": "c1.mp4", "prompt": "cells"}]))
    settings.TRAINING = {**settings.TRAINING, "SNAPSHOT_ROOT": str(root)}
    return "snap1"


def use_quick_job(settings, *args: str) -> None:
    command = f"{{python}} {QUICK_JOB} --config {{config}} " + " ".join(args)
    settings.TRAINING = {**settings.TRAINING, "PYTHON": sys.executable,
                         "COMMANDS": {"finetune": command, "generate": command}}


def small_config(**params) -> dict:
    return {"params": {"max_steps": 6, "save_every": 3, "height": 32, "width": 32, "num_frames": 5, **params},
            "resources": {"gpus": 1, "partition": "h200", "cpus_per_task": 1, "mem": "100M",
                          "time_limit": "00:10:00"}}


def launch(weights, snapshot, *, backend="slurm", user=None, **params) -> TrainingJob:
    config = small_config(**params)
    if backend == "local":
        config["resources"]["gpus"] = 0
    job = services.job_create(kind="finetune", base_model=weights, snapshot_name=snapshot, config=config,
                              backend=backend, user=user)
    return services.job_submit(job=job)


def refresh_until_final(job: TrainingJob, timeout: float = 90.0) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = services.job_refresh(job=job)
        if job.is_final:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job.pk} still {job.state} after {timeout} s:\n{job.log_tail}")


def refresh_until(job: TrainingJob, predicate, timeout: float = 60.0) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = services.job_refresh(job=job)
        if predicate(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job.pk}: condition not met in {timeout} s (state {job.state})")


# --------------------------------------------------------------------------------------------- Slurm end to end


def test_a_slurm_job_completes_with_its_metrics_loss_curve_and_checkpoints(
        slurm_settings, weights, snapshot, researcher, client):  # noqa: F811
    use_quick_job(slurm_settings, "--sleep 0.05")
    job = launch(weights, snapshot, user=researcher)
    assert job.state == State.PENDING and job.scheduler_id.isdigit()
    script = (Path(job.work_dir) / "job.sh").read_text()
    assert "#SBATCH --gres=gpu:h200:1" in script and "#SBATCH --partition=h200" in script
    config = json.loads((Path(job.work_dir) / "config.json").read_text())
    assert config["max_steps"] == 6 and config["weights"] == weights.path and config["manifest"].endswith(
        "snap1/manifest.json")

    job = refresh_until_final(job)
    assert (job.state, job.exit_code) == (State.COMPLETED, 0)
    assert (job.step, job.total_steps) == (6, 6)
    losses = list(job.metrics.order_by("step").values_list("loss", flat=True))
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert list(job.checkpoints.values_list("step", flat=True)) == [3, 6]
    assert '"step": 6' in job.log_tail
    assert job.started_at and job.finished_at and job.gpu_seconds >= 0
    states = list(job.state_changes.values_list("state", flat=True))
    assert states[:3] == ["draft", "submitting", "pending"] and states[-1] == "completed"

    # Refreshing a finished job changes nothing (idempotent).
    services.job_refresh(job=job)
    assert job.state_changes.count() == len(states) and job.metrics.count() == 6

    client.force_login(researcher)
    page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert "completed" in page and 'id="loss-chart"' in page
    loss_data = page.split('id="loss-data" type="application/json">')[1].split("</script>")[0]
    assert json.loads(loss_data) == {"steps": [1, 2, 3, 4, 5, 6], "loss": losses}
    assert "checkpoint-000006" in page
    live = client.get(reverse("job-live", args=[job.pk]), HTTP_HX_REQUEST="true")
    assert live.status_code == 286  # htmx stops polling at a final state
    dashboard = client.get(reverse("job-dashboard")).content.decode()
    assert f"#{job.pk} " in dashboard and "6 / 6" in dashboard


def test_a_slurm_job_that_exits_3_is_failed_with_exit_code_3_and_can_resume(
        slurm_settings, weights, snapshot, researcher, client):  # noqa: F811
    use_quick_job(slurm_settings, "--exit-code 3")
    job = refresh_until_final(launch(weights, snapshot, user=researcher))
    assert (job.state, job.exit_code) == (State.FAILED, 3)
    assert "exit code 3" in job.state_changes.last().detail
    assert "exiting with 3" in job.log_tail  # stderr is in the log tail
    client.force_login(researcher)
    page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert "exit code 3" in page and 'id="resume-job"' in page

    # Resume from the last checkpoint (step 6): a new job whose trainer gets --resume and that checkpoint.
    use_quick_job(slurm_settings, "--steps 9")
    response = client.post(reverse("job-resume", args=[job.pk]))
    resumed = TrainingJob.objects.exclude(pk=job.pk).get()
    assert response.status_code == 302 and response.url == reverse("job-detail", args=[resumed.pk])
    assert resumed.parent == job and resumed.checkpoint_path.endswith("checkpoint-000006")
    resumed = services.job_submit(job=resumed)
    assert "--resume" in (Path(resumed.work_dir) / "job.sh").read_text()
    resumed = refresh_until_final(resumed)
    assert resumed.state == State.COMPLETED
    assert list(resumed.metrics.values_list("step", flat=True)) == [7, 8, 9]
    assert "resuming after step 6" in resumed.log_tail


def test_a_cancelled_slurm_job_is_cancelled(slurm_settings, weights, snapshot, researcher, client):  # noqa: F811
    use_quick_job(slurm_settings, "--steps 300 --sleep 0.3")
    job = launch(weights, snapshot, user=researcher, max_steps=300)
    job = refresh_until(job, lambda j: j.state == State.RUNNING and j.step >= 1)
    client.force_login(researcher)
    assert client.post(reverse("job-cancel", args=[job.pk])).status_code == 302
    job = refresh_until_final(job)
    assert job.state == State.CANCELLED
    assert job.step < 300
    assert job.state_changes.filter(detail__startswith="cancel requested by researcher").exists()


def test_an_unknown_slurm_job_id_is_lost_not_guessed(slurm_settings, weights, snapshot):  # noqa: F811
    job = services.job_create(kind="finetune", base_model=weights, snapshot_name=snapshot, config=small_config(),
                              backend="slurm")
    TrainingJob.objects.filter(pk=job.pk).update(state=State.PENDING, scheduler_id="876543",
                                                 work_dir=str(services.job_work_dir(job)))
    job = services.job_refresh(job=job)
    assert job.state == State.LOST
    assert "876543" in job.state_reason
    assert job.state_changes.last().state == State.LOST


def test_a_lost_controller_keeps_the_state_and_says_why(slurm_settings, slurm_cluster, weights, snapshot,  # noqa: F811
                                                       tmp_path):
    use_quick_job(slurm_settings, "--steps 300 --sleep 0.3")
    job = launch(weights, snapshot, max_steps=300)
    from tests.training.slurm_cluster import _free_port

    dead = tmp_path / "dead.conf"
    dead.write_text(slurm_cluster.conf.read_text().replace(f"SlurmctldPort={slurm_cluster.ctld_port}",
                                                           f"SlurmctldPort={_free_port()}") + "MessageTimeout=1\n")
    live_conf = slurm_settings.TRAINING["SLURM_CONF"]
    slurm_settings.TRAINING = {**slurm_settings.TRAINING, "SLURM_CONF": str(dead)}
    refreshed = services.job_refresh(job=job)
    assert refreshed.state == State.PENDING  # not guessed
    assert "unreachable" in refreshed.state_reason
    assert refreshed.state_changes.last().state == State.PENDING
    slurm_settings.TRAINING = {**slurm_settings.TRAINING, "SLURM_CONF": live_conf}
    services.job_cancel(job=refreshed)
    assert refresh_until_final(refreshed).state == State.CANCELLED


def test_the_periodic_task_refreshes_active_jobs_idempotently(slurm_settings, weights, snapshot):  # noqa: F811
    use_quick_job(slurm_settings)
    job = launch(weights, snapshot)
    deadline = time.monotonic() + 60
    while not TrainingJob.objects.get(pk=job.pk).is_final and time.monotonic() < deadline:
        tasks.refresh_active_jobs()
        time.sleep(0.3)
    job.refresh_from_db()
    assert job.state == State.COMPLETED
    changes = job.state_changes.count()
    assert tasks.refresh_active_jobs() == 0  # nothing left to follow
    tasks.submit_job(job.pk)  # a re-delivered submit task does not submit again
    job.refresh_from_db()
    assert job.state_changes.count() == changes and job.state == State.COMPLETED


# --------------------------------------------------------------------------------------------- local backend


def test_the_local_backend_runs_a_job_end_to_end(settings, weights, snapshot, tmp_path):
    settings.TRAINING = {**settings.TRAINING, "WORK_ROOT": str(tmp_path / "jobs")}
    use_quick_job(settings)
    job = launch(weights, snapshot, backend="local")
    assert job.backend == "local" and job.scheduler_id.isdigit()
    job = refresh_until_final(job)
    assert (job.state, job.exit_code) == (State.COMPLETED, 0)
    assert job.metrics.count() == 6 and job.checkpoints.count() == 2

    use_quick_job(settings, "--exit-code 3")
    failed = refresh_until_final(launch(weights, snapshot, backend="local"))
    assert (failed.state, failed.exit_code) == (State.FAILED, 3)

    use_quick_job(settings, "--steps 500 --sleep 0.2")
    running = refresh_until(launch(weights, snapshot, backend="local", max_steps=500),
                            lambda j: j.state == State.RUNNING)
    assert services.job_cancel(job=running).state == State.CANCELLED


# --------------------------------------------------------------------------------------------- validation


def test_the_form_refuses_what_cannot_run_with_the_reasons(slurm_settings, weights, snapshot, researcher,  # noqa: F811
                                                           client):
    client.force_login(researcher)
    form = {"base_model": weights.pk, "mode": "full", "lora_rank": 32, "lora_target_modules": "to_q, to_k",
            "snapshot_name": "no-such-snapshot", "batch_size": 8, "max_steps": 10, "learning_rate": -1,
            "mixed_precision": "bf16", "cfg_drop_rate": 0.1, "height": 470, "width": 832, "num_frames": 80,
            "weight_decay": 0.01, "gradient_checkpointing": "on", "save_every": 5, "gpus": 2, "cpus_per_task": 1,
            "mem": "1G", "time_limit": "01:00:00", "partition": "h200", "backend": "slurm"}
    response = client.post(reverse("job-dashboard"), form)
    assert response.status_code == 400
    page = response.content.decode()
    for reason in ("num_frames 80 is not of the form 4k+1", "height 470 is not a multiple of 16",
                   "Unknown snapshot &#x27;no-such-snapshot&#x27;", "learning rate must be positive",
                   "2 GPUs requested, but partition &#x27;h200&#x27; has at most 1"):
        assert reason in page, reason
    assert not TrainingJob.objects.exists()

    # An unknown weights path and an unknown partition, through the service.
    BaseModelWeights.objects.filter(pk=weights.pk).update(path="/nonexistent/wan")
    weights.refresh_from_db()
    with pytest.raises(services.JobInvalid) as error:
        services.job_create(kind="finetune", base_model=weights, manifest_path="/nonexistent/manifest.json",
                            config={"resources": {"partition": "a100"}}, backend="slurm")
    text = " ".join(error.value.errors)
    assert "does not exist" in text and "/nonexistent/manifest.json" in text and "Unknown partition 'a100'" in text
    assert not TrainingJob.objects.exists()

    # The paper's defaults are what the empty form shows.
    page = client.get(reverse("job-dashboard")).content.decode()
    for field, value in (("batch_size", "8"), ("max_steps", "5000"), ("learning_rate", "1e-05"),
                         ("cfg_drop_rate", "0.1"), ("height", "480"), ("width", "832"), ("num_frames", "81"),
                         ("weight_decay", "0.01")):
        assert f'name="{field}" value="{value}"' in page, field


def test_a_valid_form_creates_and_queues_the_job(slurm_settings, weights, snapshot, researcher, client):  # noqa: F811
    client.force_login(researcher)
    form = {"base_model": weights.pk, "mode": "lora", "lora_rank": 8, "lora_target_modules": "to_q, to_v",
            "snapshot_name": snapshot, "batch_size": 2, "max_steps": 10, "learning_rate": "",
            "mixed_precision": "bf16", "cfg_drop_rate": 0.1, "height": 32, "width": 32, "num_frames": 5,
            "weight_decay": 0.01, "save_every": 5, "gpus": 1, "cpus_per_task": 1, "mem": "1G",
            "time_limit": "01:00:00", "partition": "h200", "backend": "slurm"}
    response = client.post(reverse("job-dashboard"), form)
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response.url == reverse("job-detail", args=[job.pk])
    assert job.state == State.SUBMITTING and job.created_by == researcher
    params = job.config["params"]
    assert params["mode"] == "lora" and params["learning_rate"] == 1e-4 and params["lora_target_modules"] == [
        "to_q", "to_v"] and params["gradient_checkpointing"] is False


# --------------------------------------------------------------------------------------------- permissions


@pytest.fixture
def some_job(weights, snapshot, settings, tmp_path):
    settings.TRAINING = {**settings.TRAINING, "DEFAULT_PARTITION": "h200"}
    job = TrainingJob.objects.create(kind="finetune", name="j", backend="slurm", base_model=weights,
                                     state=State.FAILED, config=small_config())
    checkpoint = tmp_path / "checkpoints" / "checkpoint-000003"
    checkpoint.mkdir(parents=True)
    Checkpoint.objects.create(job=job, step=3, path=str(checkpoint))
    return job


def test_experts_get_403_on_every_jobs_page_and_endpoint(client, some_job, expert, weights):
    client.force_login(expert)
    pk = some_job.pk
    for method, name, args in [("get", "job-dashboard", []), ("post", "job-dashboard", []),
                               ("get", "job-detail", [pk]), ("get", "job-live", [pk]),
                               ("post", "job-cancel", [pk]), ("post", "job-resume", [pk]),
                               ("post", "job-generate", [pk]), ("get", "job-weights", []),
                               ("post", "job-weights", []), ("get", "api-job-list", []),
                               ("post", "api-job-list", []), ("get", "api-job-detail", [pk]),
                               ("post", "api-job-cancel", [pk])]:
        response = getattr(client, method)(reverse(name, args=args), {"base_model": weights.name})
        assert response.status_code == 403, (method, name)
    assert TrainingJob.objects.count() == 1 and some_job.state_changes.count() == 0
    client.logout()
    assert client.get(reverse("job-dashboard")).status_code == 302  # anonymous: to the login page


def test_researchers_and_admins_use_the_pages_and_only_admins_register_weights(client, some_job, researcher,
                                                                               admin_user, tmp_path):
    for user in (researcher, admin_user):
        client.force_login(user)
        assert client.get(reverse("job-dashboard")).status_code == 200
        assert client.get(reverse("job-detail", args=[some_job.pk])).status_code == 200
        assert client.get(reverse("api-job-list")).json()[0]["id"] == some_job.pk
    client.force_login(researcher)
    assert client.get(reverse("job-weights")).status_code == 403
    client.force_login(admin_user)
    path = fake_weights_dir(tmp_path / "wan-14b")
    response = client.post(reverse("job-weights"), {"name": "Wan2.1-T2V-14B", "path": str(path)})
    assert response.status_code == 302 and BaseModelWeights.objects.filter(name="Wan2.1-T2V-14B").exists()
    response = client.post(reverse("job-weights"), {"name": "Bad", "path": str(tmp_path / "nothing")})
    assert response.status_code == 400 and "does not exist" in response.content.decode()


def test_the_api_creates_validates_and_cancels(slurm_settings, weights, snapshot, researcher, client):  # noqa: F811
    client.force_login(researcher)
    bad = client.post(reverse("api-job-list"), {"base_model": weights.name, "snapshot_name": snapshot,
                                                "params": {"num_frames": 8}}, content_type="application/json")
    assert bad.status_code == 400 and "4k+1" in " ".join(bad.json()["errors"])
    good = client.post(reverse("api-job-list"), {"base_model": weights.name, "snapshot_name": snapshot,
                                                 **{k: v for k, v in small_config().items()}},
                       content_type="application/json")
    assert good.status_code == 201, good.content
    job_id = good.json()["id"]
    assert good.json()["state"] == "submitting"
    cancelled = client.post(reverse("api-job-cancel", args=[job_id]))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.get(reverse("api-job-detail", args=[job_id])).json()["state"] == "cancelled"
    # The submit task sees the cancellation and submits nothing.
    tasks.submit_job(job_id)
    assert TrainingJob.objects.get(pk=job_id).scheduler_id == ""


def test_generation_from_a_checkpoint_makes_a_generation_job(some_job, researcher, client, settings):
    settings.TRAINING = {**settings.TRAINING, "DEFAULT_BACKEND": "local"}
    client.force_login(researcher)
    checkpoint = some_job.checkpoints.get()
    some_job.config["resources"]["gpus"] = 0
    some_job.backend = "local"
    some_job.save()
    response = client.post(reverse("job-generate", args=[some_job.pk]), {"checkpoint": checkpoint.pk})
    generation = TrainingJob.objects.get(kind="generate")
    assert response.status_code == 302 and response.url == reverse("job-detail", args=[generation.pk])
    assert generation.parent == some_job and generation.checkpoint_path == checkpoint.path
    assert generation.config["model_name"] == f"Wan-test-job{some_job.pk}-step3"
    assert generation.config["params"]["steps"] == 50 and generation.config["params"]["guidance"] == 5.0


def test_metric_points_are_unique_per_step(weights):
    job = TrainingJob.objects.create(kind="finetune", name="j", backend="slurm", base_model=weights)
    MetricPoint.objects.bulk_create([MetricPoint(job=job, step=1, loss=1.0)])
    MetricPoint.objects.bulk_create([MetricPoint(job=job, step=1, loss=2.0), MetricPoint(job=job, step=2, loss=1.5)],
                                    ignore_conflicts=True)
    assert list(job.metrics.values_list("step", "loss")) == [(1, 1.0), (2, 1.5)]
    assert JobStateChange.objects.count() == 0


# --------------------------------------------------------------------------------------------- the real trainer


@pytest.mark.slow
def test_real_tiny_training_through_slurm(slurm_settings, tmp_path, researcher, client, monkeypatch):  # noqa: F811
    """The tiny random Wan (training_jobs.wan.tiny) fine-tuned by the real trainer (python -m training_jobs.train)
    as a Slurm job with --gres=gpu:h200:1 (on CPU), followed to COMPLETED; its loss curve is in the site and falls.
    Then a generation job from its last checkpoint, whose videos register as a model's videos for judging."""
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    from datasets.video_io import make_test_video
    from rubrics.models import BenchmarkTask
    from training_jobs.wan.tiny import build_tiny_wan

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # sbatch passes the environment on to the job
    weights = BaseModelWeights.objects.create(name="Wan-tiny", path=str(build_tiny_wan(tmp_path / "wan", seed=0)))
    entries = []
    for k, prompt in enumerate(("bacteria dividing under a microscope", "cells moving in a petri dish")):
        def draw(i, w, h, k=k):
            import numpy as np

            frame = np.zeros((h, w, 3), np.uint8)
            frame[:] = (40 + 90 * k, 90, 200 - 80 * k)
            frame[8:16, (3 * i + 7 * k) % (w - 8):(3 * i + 7 * k) % (w - 8) + 8] = 255
            return frame
        make_test_video(tmp_path / "snap" / f"clip{k}.mp4", frames=9, size=(32, 32), fps=8, draw=draw)
        entries.append({"id": f"clip{k}", "video": f"clip{k}.mp4", "prompt": prompt})
    manifest = tmp_path / "snap" / "manifest.json"
    manifest.write_text(json.dumps(entries))

    config = {"params": {"max_steps": 30, "learning_rate": 1e-3, "batch_size": 1, "save_every": 10,
                         "num_frames": 5, "height": 32, "width": 32, "mixed_precision": "no",
                         "max_sequence_length": 16, "seed": 0},
              "resources": {"gpus": 1, "partition": "h200", "cpus_per_task": 1, "mem": "900M",
                            "time_limit": "00:20:00"}}
    job = services.job_create(kind="finetune", base_model=weights, manifest_path=str(manifest), config=config,
                              backend="slurm", user=researcher)
    job = services.job_submit(job=job)
    assert "#SBATCH --gres=gpu:h200:1" in (Path(job.work_dir) / "job.sh").read_text()
    job = refresh_until_final(job, timeout=400)
    assert (job.state, job.exit_code) == (State.COMPLETED, 0), job.log_tail
    losses = list(job.metrics.order_by("step").values_list("loss", flat=True))
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    assert list(job.checkpoints.values_list("step", flat=True)) == [10, 20, 30]
    client.force_login(researcher)
    page = client.get(reverse("job-detail", args=[job.pk])).content.decode()
    loss_data = json.loads(page.split('id="loss-data" type="application/json">')[1].split("</script>")[0])
    assert loss_data["steps"] == list(range(1, 31)) and loss_data["loss"] == losses

    # Benchmark videos from the last checkpoint, registered for judging.
    for index in (1, 2):
        BenchmarkTask.objects.create(index=index, prompt=entries[index - 1]["prompt"], requirement="r",
                                     level="Cellular-level")
    generation = services.job_generate_from(
        job=job, checkpoint=job.checkpoints.last(), user=researcher,
        config={"params": {"steps": 2, "num_frames": 5, "height": 32, "width": 32, "mixed_precision": "no",
                           "max_sequence_length": 16}})
    generation = refresh_until_final(services.job_submit(job=generation), timeout=300)
    assert generation.state == State.COMPLETED, generation.log_tail
    from judging.models import GeneratedVideo

    model_name = generation.config["model_name"]
    videos = GeneratedVideo.objects.filter(model__name=model_name)
    assert videos.count() == 2 and all(v.status == "ok" for v in videos), list(videos.values("status", "reason"))
