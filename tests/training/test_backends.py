"""The cluster backends against a REAL single-node Slurm cluster (tests.training.slurm_cluster) and real subprocesses.

No database: a job here is a plain object with the attributes the backends read."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.training.slurm_cluster import _free_port, slurm_cluster  # noqa: F401  (session fixture)
from training_jobs import backends

QUICK_JOB = Path(__file__).resolve().parent / "quick_job.py"
FINAL = {"completed", "failed", "cancelled", "timeout", "lost"}


def make_job(tmp_path: Path, *, pk: int = 1, gpus: int = 1, partition: str = "debug", kind: str = "finetune",
             **resources):
    work_dir = tmp_path / f"job-{pk}"
    (work_dir / "output").mkdir(parents=True)
    config = {"submit_token": f"t{time.monotonic_ns() % 10**8}",
              "resources": {"gpus": gpus, "gpu_type": "h200", "cpus_per_task": 1, "mem": "100M",
                            "time_limit": "00:05:00", "partition": partition, **resources}}
    return SimpleNamespace(pk=pk, kind=kind, config=config, work_dir=str(work_dir), scheduler_id="",
                           checkpoint_path="")


def training_settings(command: str, **extra) -> dict:
    return {"PYTHON": sys.executable, "GPU_TYPE": "h200",
            "COMMANDS": {"finetune": command, "generate": command}, **extra}


def write_script(job, command: str) -> Path:
    path = Path(job.work_dir) / backends.SCRIPT_FILE
    path.write_text(backends.render_script(job, training_settings(command), Path(__file__).resolve().parents[2]))
    Path(job.work_dir, backends.CONFIG_FILE).write_text(
        '{"output_dir": "%s", "max_steps": 4, "save_every": 2}' % (Path(job.work_dir) / "output"))
    return path


def wait_final(backend, job, timeout: float = 60.0, states=FINAL) -> backends.JobStatus:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = backend.status(job)
        if status.state in states:
            return status
        time.sleep(0.3)
    raise AssertionError(f"job {job.scheduler_id} did not reach {states} in {timeout} s; last: {status}")


# ------------------------------------------------------------------------------------------------ plain parsing


def test_it_parses_slurm_durations_and_exit_codes():
    assert backends.parse_slurm_duration("00:00:05") == 5
    assert backends.parse_slurm_duration("1-02:03:04") == 86400 + 7384
    assert backends.parse_slurm_duration("03:04") == 184
    assert backends.parse_slurm_duration("UNLIMITED") is None
    assert backends.parse_exit_code("3:0") == (3, 0)
    assert backends.parse_exit_code("0:15") == (0, 15)
    assert backends.parse_exit_code("") == (None, None)


def test_it_counts_gpus_of_a_type_in_gres_strings():
    assert backends.count_gpus("gpu:h200:1", "h200") == 1
    assert backends.count_gpus("gpu:h200:8(S:0-1),gpu:a100:2", "h200") == 8
    assert backends.count_gpus("gpu:a100:2", "h200") == 0
    assert backends.count_gpus("gpu:4", "h200") == 4
    assert backends.count_gpus("(null)", "h200") == 0


def test_it_renders_the_sbatch_script_from_the_job(tmp_path):
    job = make_job(tmp_path, gpus=4, partition="h200", cpus_per_task=16, mem="128G", time_limit="2-00:00:00")
    job.config["submit_token"] = "abc123"
    script = backends.render_script(job, training_settings("{python} -m training_jobs.train --config {config}"),
                                    Path("/srv/microverse"))
    work = job.work_dir
    for line in ("#!/bin/bash", "#SBATCH --job-name=microverse-1-abc123", "#SBATCH --gres=gpu:h200:4",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --mem=128G", "#SBATCH --time=2-00:00:00",
                 "#SBATCH --partition=h200", f"#SBATCH --output={work}/job.out", f"#SBATCH --error={work}/job.err",
                 f"#SBATCH --chdir={work}", "cd /srv/microverse",
                 f"exec {sys.executable} -m training_jobs.train --config {work}/config.json"):
        assert line in script.splitlines(), (line, script)
    job.checkpoint_path = "/somewhere/checkpoint-000010"
    assert script.replace("config.json", "config.json --resume") == backends.render_script(
        job, training_settings("{python} -m training_jobs.train --config {config}"), Path("/srv/microverse"))


# ------------------------------------------------------------------------------------------------ Slurm, for real


@pytest.fixture
def slurm(slurm_cluster):  # noqa: F811
    return backends.SlurmBackend(slurm_conf=str(slurm_cluster.conf), timeout=30)


def test_slurm_runs_a_job_to_completed_on_the_fake_h200(slurm, tmp_path):
    job = make_job(tmp_path)
    script = write_script(job, f"{{python}} {QUICK_JOB} --config {{config}}")
    job.scheduler_id = slurm.submit(job, script)
    assert job.scheduler_id.isdigit()
    assert slurm.find(job) == job.scheduler_id  # by its unique name: a re-delivered submit finds it
    status = wait_final(slurm, job)
    assert (status.state, status.exit_code) == ("completed", 0), status
    assert status.elapsed_seconds is not None
    out = Path(job.work_dir, backends.OUTPUT_FILE).read_text()
    assert '"step": 4' in out
    assert len(Path(job.work_dir, "output", "metrics.jsonl").read_text().splitlines()) == 4


def test_slurm_reports_failed_with_the_exit_code(slurm, tmp_path):
    job = make_job(tmp_path)
    script = write_script(job, f"{{python}} {QUICK_JOB} --config {{config}} --exit-code 3")
    job.scheduler_id = slurm.submit(job, script)
    status = wait_final(slurm, job)
    assert (status.state, status.exit_code) == ("failed", 3), status
    assert "exiting with 3" in Path(job.work_dir, backends.ERROR_FILE).read_text()


def test_slurm_cancels_a_running_job(slurm, tmp_path):
    job = make_job(tmp_path)
    script = write_script(job, f"{{python}} {QUICK_JOB} --config {{config}} --steps 200 --sleep 0.5")
    job.scheduler_id = slurm.submit(job, script)
    wait_final(slurm, job, states={"running"})
    slurm.cancel(job)
    status = wait_final(slurm, job)
    assert status.state == "cancelled", status


def test_an_unknown_slurm_job_id_is_lost(slurm, tmp_path):
    job = make_job(tmp_path)
    job.scheduler_id = "987654"
    status = slurm.status(job)
    assert status.state == "lost"
    assert "987654" in status.reason


def test_slurm_refuses_more_gpus_than_the_node_has(slurm, tmp_path):
    assert slurm.partition_gpus("h200", "h200") == 1
    assert slurm.partition_gpus("debug", "h200") == 1
    assert slurm.partition_gpus("a100", "h200") is None
    job = make_job(tmp_path, gpus=2)
    script = write_script(job, "true")
    with pytest.raises(backends.SubmitRefused, match="node configuration is not available"):
        slurm.submit(job, script)


def test_a_lost_controller_is_an_error_not_a_state(slurm_cluster, tmp_path):  # noqa: F811
    # The same cluster's configuration, but nothing listens on the controller's port any more.
    dead = tmp_path / "slurm.conf"
    dead.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={_free_port()}", slurm_cluster.conf.read_text())
                    + "MessageTimeout=1\n")
    backend = backends.SlurmBackend(slurm_conf=str(dead), timeout=30)
    job = make_job(tmp_path)
    job.scheduler_id = "1"
    with pytest.raises(backends.BackendUnavailable, match="controller unreachable"):
        backend.status(job)
    with pytest.raises(backends.BackendUnavailable, match="controller unreachable"):
        backend.submit(job, write_script(job, "true"))
    with pytest.raises(backends.BackendUnavailable):
        backend.partition_gpus("h200", "h200")


def test_missing_slurm_clients_are_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, ... on this PATH
    job = make_job(tmp_path)
    job.scheduler_id = "1"
    with pytest.raises(backends.BackendUnavailable, match="not installed"):
        backends.SlurmBackend().status(job)


# ------------------------------------------------------------------------------------------------ local subprocess


def test_local_backend_runs_completes_and_fails(tmp_path):
    local = backends.LocalBackend()
    ok, bad = make_job(tmp_path, pk=1), make_job(tmp_path, pk=2)
    ok.scheduler_id = local.submit(ok, write_script(ok, f"{{python}} {QUICK_JOB} --config {{config}}"))
    bad.scheduler_id = local.submit(bad, write_script(bad, f"{{python}} {QUICK_JOB} --config {{config}} --exit-code 3"))
    status = wait_final(local, ok)
    assert (status.state, status.exit_code) == ("completed", 0)
    assert status.elapsed_seconds > 0
    assert local.find(ok) == ok.scheduler_id
    status = wait_final(local, bad)
    assert (status.state, status.exit_code) == ("failed", 3)
    assert '"step": 4' in Path(ok.work_dir, backends.OUTPUT_FILE).read_text()


def test_local_backend_cancel_kills_the_process_group(tmp_path):
    local = backends.LocalBackend()
    job = make_job(tmp_path)
    job.scheduler_id = local.submit(job, write_script(
        job, f"{{python}} {QUICK_JOB} --config {{config}} --steps 500 --sleep 0.2"))
    wait_final(local, job, states={"running"})
    deadline = time.monotonic() + 20
    out = Path(job.work_dir, backends.OUTPUT_FILE)
    while not (out.exists() and '"step": 1' in out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    local.cancel(job)
    status = wait_final(local, job)
    assert status.state == "cancelled"
    # The trainer (a grandchild of the wrapper) is gone too: the output stops growing.
    size = Path(job.work_dir, backends.OUTPUT_FILE).stat().st_size
    time.sleep(0.6)
    assert Path(job.work_dir, backends.OUTPUT_FILE).stat().st_size == size


def test_a_local_job_whose_process_vanished_is_lost(tmp_path):
    job = make_job(tmp_path)
    job.scheduler_id = "999999999"  # no such process, and no exit code file
    Path(job.work_dir, backends.PID_FILE).write_text("999999999")
    assert backends.LocalBackend().status(job).state == "lost"


def test_a_live_local_job_read_while_its_pid_file_is_written_is_not_lost(tmp_path):
    # The wrapper once truncated the pid file before writing it; a status read in between called the live job lost.
    job = make_job(tmp_path)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        job.scheduler_id = str(sleeper.pid)
        Path(job.work_dir, backends.PID_FILE).write_text("")
        assert backends.LocalBackend().status(job).state == "pending"
        Path(job.work_dir, backends.PID_FILE).write_text(str(sleeper.pid + 1))  # someone else's process
        assert backends.LocalBackend().status(job).state == "lost"
    finally:
        sleeper.kill()
        sleeper.wait()
