"""A researcher launches a fine-tuning job from the dashboard in a real browser; it runs on a REAL single-node Slurm
cluster (the quick stand-in trainer, tests/training/quick_job.py, via the settings' trainer command) and the job page
shows its state change and its loss curve through htmx polling (the poll refreshes the job from Slurm; no beat)."""
import json

import pytest

from tests.training.slurm_cluster import slurm_cluster, slurm_settings  # noqa: F401  (fixtures)
from tests.training.test_jobs import fake_weights_dir, use_quick_job
from training_jobs import tasks
from training_jobs.models import BaseModelWeights, TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_researcher_launches_a_job_and_watches_it_complete_with_its_loss_curve(
        page_for, researcher, slurm_settings, tmp_path):  # noqa: F811
    BaseModelWeights.objects.create(name="Wan-test", path=str(fake_weights_dir(tmp_path / "wan")))
    (tmp_path / "snapshots" / "snap1").mkdir(parents=True)
    (tmp_path / "snapshots" / "snap1" / "manifest.json").write_text(
        json.dumps([{"id": "c1", "video": "c1.mp4", "prompt": "cells"}]))
    slurm_settings.TRAINING = {**slurm_settings.TRAINING, "SNAPSHOT_ROOT": str(tmp_path / "snapshots"),
                               "PAGE_REFRESH_INTERVAL": 0.5}
    use_quick_job(slurm_settings, "--sleep 0.4")

    page = page_for(researcher)
    page.goto("/jobs/")
    assert page.locator("#id_batch_size").input_value() == "8"
    assert page.locator("#id_max_steps").input_value() == "5000"
    assert page.locator("#id_learning_rate").input_value() == "1e-05"
    page.select_option("#id_mode", "lora")
    assert page.locator("#id_learning_rate").input_value() == "0.0001"  # the LoRA default follows the mode
    page.select_option("#id_mode", "full")
    page.select_option("#id_base_model", label="Wan-test")
    for field, value in (("snapshot_name", "snap1"), ("max_steps", "8"), ("save_every", "4"), ("height", "32"),
                         ("width", "32"), ("num_frames", "5"), ("gpus", "1"), ("cpus_per_task", "1"),
                         ("mem", "100M"), ("time_limit", "00:10:00"), ("partition", "h200")):
        page.fill(f"#id_{field}", value)
    page.select_option("#id_backend", "slurm")
    with page.expect_navigation():
        page.click("#launch-form button[type=submit]")
    job = TrainingJob.objects.get()
    assert page.url.endswith(f"/jobs/{job.pk}/")
    assert page.locator("#job-state").inner_text() == "submitting"

    # The gpu-queue task, run here (no worker needed for the browser's part).
    tasks.submit_job.apply(args=[job.pk])
    page.wait_for_function("document.getElementById('job-state').textContent.trim() === 'running'", timeout=60_000)
    page.wait_for_function("document.getElementById('job-state').textContent.trim() === 'completed'",
                           timeout=90_000)
    page.wait_for_function("document.getElementById('loss-chart').dataset.points === '8'", timeout=10_000)
    chart = page.evaluate("""(() => { const c = Chart.getChart('loss-chart');
        return {labels: c.data.labels, points: c.data.datasets[0].data.length}; })()""")
    assert chart == {"labels": [1, 2, 3, 4, 5, 6, 7, 8], "points": 8}
    assert "pending" in page.locator("#timeline").inner_text()
    assert page.locator("#checkpoints tbody tr").count() == 2
    assert '"step": 8' in page.locator("#log-tail").inner_text()
    assert page.locator("#cancel-job").count() == 0  # final: no cancel, and polling stopped (286)
    page.goto("/jobs/")
    assert "completed" in page.locator(f"#job-{job.pk} .job-state").inner_text()
