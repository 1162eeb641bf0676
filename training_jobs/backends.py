"""Where a training or generation job runs: a Slurm cluster (sbatch) or a local subprocess on the worker machine.

Both backends run the same job script (rendered from the job's settings; the ``#SBATCH`` lines are comments to bash)
in the job's work folder, which the site reads back: the output and error files, ``output/metrics.jsonl`` and the
checkpoints. They report what the scheduler says and nothing else:

* :class:`BackendUnavailable` when the scheduler cannot be asked (a lost controller, a missing client binary, a
  command that times out): the caller keeps the job's state as it was and shows the reason;
* a :class:`JobStatus` with state ``lost`` when the scheduler answers but does not know the job;
* :class:`SubmitRefused` when the scheduler refuses a job (too many GPUs for the partition, an unknown partition).

Plain Python apart from :func:`backend_for` and :func:`render_script`, which read the job and the settings.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

OUTPUT_FILE = "job.out"
ERROR_FILE = "job.err"
SCRIPT_FILE = "job.sh"
CONFIG_FILE = "config.json"
OUTPUT_DIR = "output"


class BackendError(Exception):
    """Base class of the backends' errors."""


class BackendUnavailable(BackendError):
    """The scheduler could not be asked (controller down, client missing, timeout). Nothing is known about the job."""


class SubmitRefused(BackendError):
    """The scheduler answered and refused the job (the reason is the message)."""


@dataclass
class JobStatus:
    state: str  # one of TrainingJob.State's values
    exit_code: int | None = None
    elapsed_seconds: float | None = None
    reason: str = ""
    raw_state: str = ""


# ----------------------------------------------------------------------------------------------------- job script


def job_name(job) -> str:
    token = (job.config or {}).get("submit_token", "")
    return f"microverse-{job.pk}-{token}" if token else f"microverse-{job.pk}"


def job_command(job, settings_training: dict) -> str:
    """The trainer (or generator) command line of `job`, from the settings' command templates."""
    template = settings_training["COMMANDS"][job.kind]
    config_path = Path(job.work_dir) / CONFIG_FILE
    command = template.format(python=shlex.quote(settings_training["PYTHON"]), config=shlex.quote(str(config_path)))
    if job.kind == "finetune" and job.checkpoint_path:
        command += " --resume"  # the parent's checkpoint is linked into this job's output/checkpoints/
    return command


def render_script(job, settings_training: dict, project_dir: Path) -> str:
    """The sbatch script of `job`: resources as #SBATCH lines, then the trainer command in the project folder (so
    that ``python -m training_jobs.train`` imports this project's code)."""
    resources = (job.config or {}).get("resources", {})
    work_dir = Path(job.work_dir)
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name(job)}"]
    gpus = int(resources.get("gpus", 0) or 0)
    if gpus > 0:
        lines.append(f"#SBATCH --gres=gpu:{resources.get('gpu_type') or settings_training['GPU_TYPE']}:{gpus}")
    if resources.get("cpus_per_task"):
        lines.append(f"#SBATCH --cpus-per-task={int(resources['cpus_per_task'])}")
    if resources.get("mem"):
        lines.append(f"#SBATCH --mem={resources['mem']}")
    if resources.get("time_limit"):
        lines.append(f"#SBATCH --time={resources['time_limit']}")
    if resources.get("partition"):
        lines.append(f"#SBATCH --partition={resources['partition']}")
    lines += [
        f"#SBATCH --output={work_dir / OUTPUT_FILE}",
        f"#SBATCH --error={work_dir / ERROR_FILE}",
        f"#SBATCH --chdir={work_dir}",
        "",
        "set -euo pipefail",
        f"cd {shlex.quote(str(project_dir))}",
        "export PYTHONUNBUFFERED=1",
        f"exec {job_command(job, settings_training)}",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- Slurm

# Slurm job states (squeue %T / scontrol JobState / sacct State) -> TrainingJob.State values.
SLURM_STATES = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending", "RESV_DEL_HOLD": "pending",
    "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running", "STOPPED": "running",
    "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "COMPLETED": "completed",
    "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "OUT_OF_MEMORY": "failed", "PREEMPTED": "failed",
    "CANCELLED": "cancelled", "REVOKED": "cancelled",
    "TIMEOUT": "timeout", "DEADLINE": "timeout",
}
_UNREACHABLE = ("unable to contact slurm controller", "connect failure", "connection refused", "socket timed out",
                "zero bytes were transmitted", "communication connection failure", "slurm_receive_msg",
                "unable to establish", "munge", "authentication failure")
_UNKNOWN_JOB = ("invalid job id",)


def parse_slurm_duration(text: str) -> float | None:
    """'1-02:03:04', '02:03:04', '03:04', '04' -> seconds."""
    text = (text or "").strip()
    if not text or text in ("UNLIMITED", "INVALID", "N/A", "NONE"):
        return None
    days = 0
    if "-" in text:
        day_part, text = text.split("-", 1)
        days = int(day_part)
    parts = [float(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    hours, minutes, seconds = parts[-3:]
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """'3:0' -> (3, 0); '0:15' -> (0, 15)."""
    match = re.match(r"^\s*(\d+):(\d+)", text or "")
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2))


def parse_scontrol(text: str) -> dict[str, str]:
    """`scontrol show job` output -> {key: value} (values up to the next space; good for the fields we read)."""
    fields = {}
    for token in re.findall(r"(\w[\w/:]*)=(\S*)", text):
        fields.setdefault(token[0], token[1])
    return fields


def _state_word(raw: str) -> str:
    # "CANCELLED by 0" (sacct), "COMPLETED+" -> the state word
    return re.split(r"[\s+]", (raw or "").strip(), maxsplit=1)[0].upper()


class SlurmBackend:
    name = "slurm"

    def __init__(self, *, slurm_conf: str = "", timeout: float = 30.0):
        self.slurm_conf = slurm_conf
        self.timeout = timeout

    # The one place Slurm client commands run.
    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        try:
            return subprocess.run(args, env=env, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"{args[0]} is not installed on this machine (slurm-client)") from exc
        except subprocess.TimeoutExpired as exc:
            raise BackendUnavailable(f"{' '.join(args[:2])} did not answer within {self.timeout:.0f} s") from exc

    @staticmethod
    def _unreachable(result: subprocess.CompletedProcess) -> bool:
        text = (result.stderr or "").lower()
        return any(marker in text for marker in _UNREACHABLE)

    @staticmethod
    def _unknown_job(result: subprocess.CompletedProcess) -> bool:
        return any(marker in (result.stderr or "").lower() for marker in _UNKNOWN_JOB)

    def _fail(self, result: subprocess.CompletedProcess, what: str):
        message = (result.stderr or result.stdout or "").strip() or f"exit status {result.returncode}"
        if self._unreachable(result):
            raise BackendUnavailable(f"Slurm controller unreachable ({what}): {message}")
        raise BackendUnavailable(f"{what} failed: {message}")

    # -- submit ---------------------------------------------------------------------------------------------------

    def submit(self, job, script_path: Path) -> str:
        result = self._run(["sbatch", "--parsable", str(script_path)])
        if result.returncode != 0:
            if self._unreachable(result):
                self._fail(result, "sbatch")
            raise SubmitRefused((result.stderr or result.stdout).strip() or f"sbatch exited {result.returncode}")
        job_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip()
        if not job_id.isdigit():
            raise BackendUnavailable(f"sbatch answered {result.stdout!r}, not a job id")
        return job_id

    def find(self, job) -> str | None:
        """The id of a job the controller already holds under this job's name (a re-delivered submit task)."""
        result = self._run(["squeue", "-h", "-t", "all", "-n", job_name(job), "-o", "%i"])
        if result.returncode != 0:
            self._fail(result, "squeue")
        ids = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        return ids[0] if ids else None

    # -- state ----------------------------------------------------------------------------------------------------

    def status(self, job) -> JobStatus:
        job_id = job.scheduler_id
        if not job_id:
            return JobStatus(state="lost", reason="the job has no scheduler id")
        # 1. squeue: the live state of a queued or running job.
        queue = self._run(["squeue", "-h", "-j", job_id, "-o", "%T"])
        if queue.returncode != 0 and not self._unknown_job(queue):
            self._fail(queue, "squeue")
        queue_state = _state_word(queue.stdout) if queue.returncode == 0 else ""
        # 2. scontrol show job: state, exit code and run time, also for finished jobs (kept for MinJobAge).
        show = self._run(["scontrol", "show", "job", job_id])
        if show.returncode == 0 and show.stdout.strip():
            fields = parse_scontrol(show.stdout)
            raw = _state_word(fields.get("JobState", "")) or queue_state
            code, sig = parse_exit_code(fields.get("ExitCode", ""))
            reason = fields.get("Reason", "")
            return self._status(raw, code, sig, parse_slurm_duration(fields.get("RunTime", "")),
                                "" if reason in ("None", "(null)") else reason)
        if show.returncode != 0 and not self._unknown_job(show):
            self._fail(show, "scontrol show job")
        # 3. sacct, where accounting is configured (it outlives MinJobAge).
        acct = self._sacct(job_id)
        if acct is not None:
            return acct
        if queue_state:
            return self._status(queue_state, None, None, None, "")
        return JobStatus(state="lost", reason=f"Slurm does not know job {job_id} (squeue, scontrol and sacct)")

    def _sacct(self, job_id: str) -> JobStatus | None:
        try:
            result = self._run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,ElapsedRaw"])
        except BackendUnavailable:
            return None  # no sacct here: not an error, scontrol is the authority
        if result.returncode != 0 or not result.stdout.strip():
            return None  # "Slurm accounting storage is disabled", or no such job in the database
        state, exit_code, elapsed = (result.stdout.strip().splitlines()[0].split("|") + ["", "", ""])[:3]
        code, sig = parse_exit_code(exit_code)
        return self._status(_state_word(state), code, sig, float(elapsed) if elapsed.isdigit() else None, "")

    @staticmethod
    def _status(raw: str, code, sig, elapsed, reason: str) -> JobStatus:
        state = SLURM_STATES.get(raw)
        if state is None:
            return JobStatus(state="lost", raw_state=raw, reason=f"unrecognised Slurm state {raw!r}")
        if sig and state in ("failed", "cancelled", "timeout"):
            reason = f"{reason}; signal {sig}".strip("; ")
        if raw != state.upper() and state in ("failed", "timeout", "cancelled"):
            reason = f"Slurm state {raw}" + (f"; {reason}" if reason else "")
        final = state in ("completed", "failed", "cancelled", "timeout")
        return JobStatus(state=state, exit_code=code if final else None, elapsed_seconds=elapsed, reason=reason,
                         raw_state=raw)

    # -- cancel and resources -------------------------------------------------------------------------------------

    def cancel(self, job) -> None:
        if not job.scheduler_id:
            return
        result = self._run(["scancel", job.scheduler_id])
        if result.returncode != 0 and not self._unknown_job(result):
            self._fail(result, "scancel")

    def partition_gpus(self, partition: str, gpu_type: str) -> int | None:
        """The most GPUs of `gpu_type` one node of `partition` has (--gres is per node); None: no such partition."""
        result = self._run(["sinfo", "-h", "-N", "-p", partition, "-o", "%P|%G"])
        if result.returncode != 0:
            self._fail(result, "sinfo")
        best = None
        for line in result.stdout.splitlines():
            if "|" not in line:
                continue
            part, gres = line.split("|", 1)
            if part.rstrip("*") != partition:
                continue
            best = max(best or 0, count_gpus(gres, gpu_type))
        return best


def count_gpus(gres: str, gpu_type: str) -> int:
    """'gpu:h200:4(S:0-1),gpu:a100:2' -> 4 for h200; an untyped 'gpu:4' counts for any type."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres or ""):
        parts = re.sub(r"\(.*\)", "", item).strip().split(":")
        if not parts or parts[0] != "gpu":
            continue
        if len(parts) == 3 and parts[1] == gpu_type and parts[2].isdigit():
            total += int(parts[2])
        elif len(parts) == 2 and parts[1].isdigit():
            total += int(parts[1])
    return total


# ---------------------------------------------------------------------------------------------------------- local

PID_FILE = "local.pid"
EXIT_FILE = "local.exit"
CANCEL_FILE = "local.cancelled"
STARTED_FILE = "local.started"
FINISHED_FILE = "local.finished"

# The wrapper: its own process group (setsid), records pid, start and end times and the exit code of the job script.
_WRAPPER = """\
echo $$ > {pid}.tmp && mv {pid}.tmp {pid}
date +%s.%N > {started}
bash {script} > {out} 2> {err}
code=$?
date +%s.%N > {finished}
echo $code > {exit}.tmp && mv {exit}.tmp {exit}
"""


class LocalBackend:
    """A subprocess on this (the worker's) machine: a workstation with a GPU, or development."""

    name = "local"

    def submit(self, job, script_path: Path) -> str:
        work_dir = Path(job.work_dir)
        q = {k: shlex.quote(str(work_dir / v)) for k, v in {
            "pid": PID_FILE, "started": STARTED_FILE, "finished": FINISHED_FILE, "exit": EXIT_FILE,
            "out": OUTPUT_FILE, "err": ERROR_FILE}.items()}
        wrapper = _WRAPPER.format(script=shlex.quote(str(script_path)), **q)
        try:
            process = subprocess.Popen(["bash", "-c", wrapper], cwd=work_dir, start_new_session=True,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise SubmitRefused(f"could not start the job: {exc}") from exc
        # Reap it when it ends (the worker lives on); status() reads the files, not this object.
        threading.Thread(target=process.wait, daemon=True).start()
        return str(process.pid)

    def find(self, job) -> str | None:
        if not job.work_dir:
            return None
        pid_file = Path(job.work_dir) / PID_FILE
        return pid_file.read_text().strip() or None if pid_file.exists() else None

    def status(self, job) -> JobStatus:
        work_dir = Path(job.work_dir or "/nonexistent")
        if not job.scheduler_id or not work_dir.is_dir():
            return JobStatus(state="lost", reason=f"no work folder {work_dir} for the local job")
        started = _read_float(work_dir / STARTED_FILE)
        finished = _read_float(work_dir / FINISHED_FILE)
        elapsed = None
        if started is not None:
            elapsed = max(0.0, (finished or time.time()) - started)
        # Liveness first, then the exit file: the wrapper writes the file before it exits, so a process seen gone
        # here has already left its exit code (reading in the other order races with a job ending in between).
        pid = int(job.scheduler_id) if job.scheduler_id.isdigit() else None
        alive = pid is not None and process_alive(pid) and _pid_file_matches(work_dir, pid)
        cancelled = (work_dir / CANCEL_FILE).exists()
        exit_text = _read_text(work_dir / EXIT_FILE)
        if exit_text is not None and exit_text.strip().lstrip("-").isdigit():
            code = int(exit_text)
            if cancelled:
                return JobStatus(state="cancelled", exit_code=code, elapsed_seconds=elapsed, reason="cancelled")
            return JobStatus(state="completed" if code == 0 else "failed", exit_code=code, elapsed_seconds=elapsed)
        if alive:
            return JobStatus(state="running" if started is not None else "pending", elapsed_seconds=elapsed)
        if cancelled:
            return JobStatus(state="cancelled", elapsed_seconds=elapsed, reason="cancelled (process group killed)")
        if pid is not None and not (work_dir / PID_FILE).exists() and time.time() - _mtime(work_dir) < 10:
            return JobStatus(state="pending", reason="starting")
        return JobStatus(state="lost", elapsed_seconds=elapsed,
                         reason=f"process {job.scheduler_id} is gone and left no exit code (killed, or the machine "
                                "restarted)")

    def cancel(self, job, grace: float = 5.0) -> None:
        if not job.scheduler_id.isdigit():
            return
        work_dir = Path(job.work_dir)
        (work_dir / CANCEL_FILE).write_text(str(time.time()))
        pid = int(job.scheduler_id)
        if not _pid_file_matches(work_dir, pid):
            return
        _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(pid):
            _killpg(pid, signal.SIGKILL)

    def partition_gpus(self, partition: str, gpu_type: str) -> int | None:
        return local_gpu_count()


@lru_cache(maxsize=1)
def local_gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not count); the tests' Slurm fixture uses it for the daemons too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _pid_file_matches(work_dir: Path, pid: int) -> bool:
    # The wrapper renames a whole file into place; an empty one (written by an older wrapper) is not yet a mismatch.
    text = (_read_text(work_dir / PID_FILE) or "").strip()
    return not text or text == str(pid)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_float(path: Path) -> float | None:
    text = _read_text(path)
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# ------------------------------------------------------------------------------------------------------- choosing


def backend_for(name: str):
    from django.conf import settings

    training = settings.TRAINING
    if name == "slurm":
        return SlurmBackend(slurm_conf=training.get("SLURM_CONF", ""), timeout=training.get("COMMAND_TIMEOUT", 30.0))
    if name == "local":
        return LocalBackend()
    raise ValueError(f"unknown backend {name!r}")
